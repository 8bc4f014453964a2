// Command netpol enforces NetworkPolicy on the local cluster's node: the
// network policy controller of sigs.k8s.io/kube-network-policies (nftables
// rules that hand the first packet of each connection to or from a pod
// some policy selects to this process through an NFQUEUE, which accepts or
// drops it), started as a node daemon with the node's kubeconfig instead
// of as a DaemonSet pod. The bridge CNI plugin enforces nothing itself.
package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
)

// childEnv marks the process that runs the controller.
const childEnv = "DISKCACHE_NETPOL_CHILD"

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the node")
	node := flag.String("hostname-override", "", "name of the Node (default: the hostname)")
	queue := flag.Int("nfqueue-id", 98, "NFQUEUE the rules send packets to")
	klog.InitFlags(nil)
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Getenv(childEnv) == "" {
		supervise(ctx)
		return
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Fatalf("kubeconfig: %v", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		klog.Fatalf("client: %v", err)
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	c, err := networkpolicy.NewController(client,
		factory.Networking().V1().NetworkPolicies(), factory.Core().V1().Namespaces(), factory.Core().V1().Pods(),
		nil, nil, nil, nil,
		networkpolicy.Config{QueueID: *queue, NodeName: *node, NetfilterBug1766Fix: true, NRIdisabled: true})
	if err != nil {
		klog.Fatalf("network policy controller: %v", err)
	}
	factory.Start(ctx.Done())
	// Run returns when ctx ends, after removing its nftables table (a
	// policy's pods are reachable again, as without an enforcer).
	if err := c.Run(ctx); err != nil {
		klog.Fatalf("network policy controller: %v", err)
	}
}

// supervise runs the controller in a child process and starts a new one
// whenever it dies, until ctx ends. kube-network-policies v0.8.0 panics on
// a packet from a pod IP its informer has not seen yet (with NRI off, which
// containerd 1.6 lacks, it dereferences the missing NRI plugin), and a
// pod's first connection can race its IP's publication: the next child
// knows the pod. Meanwhile the NFQUEUE rule's --queue-bypass lets packets
// through, as with no enforcer.
func supervise(ctx context.Context) {
	self, err := os.Executable()
	if err != nil {
		klog.Fatalf("netpol: %v", err)
	}
	for {
		cmd := exec.Command(self, os.Args[1:]...)
		cmd.Env = append(os.Environ(), childEnv+"=1")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			klog.Fatalf("netpol: starting the controller: %v", err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-done
			return
		case err := <-done:
			var exit *exec.ExitError
			if !errors.As(err, &exit) && err != nil {
				klog.Fatalf("netpol: the controller: %v", err)
			}
			klog.Errorf("netpol: the controller exited (%v); starting a new one", err)
		}
		select { // at most one restart a second
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
