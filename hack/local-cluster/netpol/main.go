// Command netpol enforces NetworkPolicy on the local cluster's node: the
// network policy controller of sigs.k8s.io/kube-network-policies (nftables
// rules that hand the first packet of each connection to or from a pod
// some policy selects to this process through an NFQUEUE, which accepts or
// drops it), started as a node daemon with the node's kubeconfig instead
// of as a DaemonSet pod. The bridge CNI plugin enforces nothing itself.
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the node")
	node := flag.String("hostname-override", "", "name of the Node (default: the hostname)")
	queue := flag.Int("nfqueue-id", 98, "NFQUEUE the rules send packets to")
	klog.InitFlags(nil)
	flag.Parse()

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Fatalf("kubeconfig: %v", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		klog.Fatalf("client: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

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
