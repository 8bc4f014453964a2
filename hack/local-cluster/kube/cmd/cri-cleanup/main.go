// Command cri-cleanup stops and removes every pod sandbox (and so every
// container) a CRI runtime holds, through the CRI API, so that the runtime
// tears down pod networking (CNI DEL) and mounts the way the kubelet would.
// hack/local-cluster runs it after stopping the kubelet and before stopping
// containerd: no container outlives `down`, and nothing is killed by name.
//
// Usage: cri-cleanup [-timeout 60s] unix:///path/to/containerd.sock
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	timeout := flag.Duration("timeout", 60*time.Second, "overall time limit")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: cri-cleanup [-timeout 60s] unix:///path/to/cri.sock")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "cri-cleanup:", err)
		os.Exit(1)
	}
}

func run(endpoint string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)

	sandboxes, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("list pod sandboxes: %w", err)
	}
	var failed int
	for _, sb := range sandboxes.GetItems() {
		name := sb.GetMetadata().GetNamespace() + "/" + sb.GetMetadata().GetName()
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.GetId()}); err != nil {
			fmt.Fprintf(os.Stderr, "cri-cleanup: stop %s: %v\n", name, err)
			failed++
			continue
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.GetId()}); err != nil {
			fmt.Fprintf(os.Stderr, "cri-cleanup: remove %s: %v\n", name, err)
			failed++
			continue
		}
	}
	// Containers outside any listed sandbox (should be none) go too.
	containers, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, c := range containers.GetContainers() {
		_, _ = rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.GetId(), Timeout: 5})
		if _, err := rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.GetId()}); err != nil {
			fmt.Fprintf(os.Stderr, "cri-cleanup: remove container %s: %v\n", c.GetId(), err)
			failed++
		}
	}
	fmt.Printf("cri-cleanup: removed %d pod sandboxes\n", len(sandboxes.GetItems()))
	if failed > 0 {
		return fmt.Errorf("%d operations failed", failed)
	}
	return nil
}
