//go:build e2e

// The end-to-end tests of the operator on the real local
// cluster of hack/local-cluster (`make e2e`). They are behind the build tag
// e2e, so `go test ./...` skips them.
//
// The cluster must be up and the images imported (`make cluster-up images`);
// TestMain installs (or updates) the CRD and the operator from config/default
// through test/e2e/install-operator.sh unless E2E_SKIP_INSTALL=1 (E2E_INSTALL=helm
// installs it with the Helm chart instead).
// KUBECONFIG defaults to .cache/local-cluster/kubeconfig. E2E_KEEP=1 keeps
// the test namespaces.

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/tools/clientcmd"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	kubeconfig = os.Getenv("KUBECONFIG")
	if kubeconfig == "" {
		dir := os.Getenv("LOCAL_CLUSTER_DIR")
		if dir == "" {
			dir = filepath.Join(repoRoot, ".cache", "local-cluster")
		}
		kubeconfig = filepath.Join(dir, "kubeconfig")
	}
	if _, err := os.Stat(kubeconfig); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: no kubeconfig at %s: start the local cluster with `make cluster-up images` (or run `make e2e`)\n", kubeconfig)
		return 1
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: kubeconfig %s: %v\n", kubeconfig, err)
		return 1
	}
	cfg.QPS, cfg.Burst = 50, 100
	k8s, err = ctrlclient.NewWithWatch(cfg, ctrlclient.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: client: %v\n", err)
		return 1
	}
	start := time.Now()
	if os.Getenv("E2E_SKIP_INSTALL") != "1" {
		cmd := exec.Command("bash", filepath.Join(repoRoot, "test", "e2e", "install-operator.sh"))
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: installing the operator: %v\n", err)
			return 1
		}
	}
	// Whether installed now or before: the operator must be ready.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for {
		var d appsv1.Deployment
		err := k8s.Get(ctx, ctrlclient.ObjectKey{Namespace: operatorNamespace, Name: operatorDeployment}, &d)
		if err == nil && d.Status.ObservedGeneration == d.Generation && d.Status.ReadyReplicas >= 1 &&
			d.Status.UpdatedReplicas == d.Status.Replicas {
			break
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "e2e: operator deployment %s/%s not ready: %v %+v\n", operatorNamespace, operatorDeployment, err, d.Status)
			return 1
		case <-time.After(500 * time.Millisecond):
		}
	}
	fmt.Fprintf(os.Stderr, "e2e: TIMING install/check operator: %s\n", time.Since(start).Round(time.Millisecond))
	return m.Run()
}
