package controllers

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// kubectlEnv returns kubectl and a kubeconfig for the envtest API server.
func kubectlEnv(t *testing.T) (string, string) {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		if os.Getenv("DISKCACHE_REQUIRE_KUBECTL") != "" {
			t.Fatal("kubectl is not on PATH and DISKCACHE_REQUIRE_KUBECTL is set (make kubectl builds one into bin/)")
		}
		t.Skip("kubectl is not on PATH (make kubectl builds one into bin/)")
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, testEnv.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	return kubectl, kc
}

func runKubectl(t *testing.T, kubectl, kubeconfig string, args ...string) string {
	t.Helper()
	cmd := exec.Command(kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestSamplesPassServerDryRun(t *testing.T) {
	needEnv(t)
	kubectl, kc := kubectlEnv(t)
	ns := newNamespace(t)
	out := runKubectl(t, kubectl, kc, "apply", "--dry-run=server", "-n", ns, "-k", filepath.Join("..", "config", "samples"))
	if !strings.Contains(out, "diskcache.cache.diskcache.dev/web-cache created (server dry run)") {
		t.Errorf("unexpected output:\n%s", out)
	}
}

func TestInstallerPassesServerDryRun(t *testing.T) {
	needEnv(t)
	kubectl, kc := kubectlEnv(t)
	// dist/install.yaml from `make build-installer`, or the same build of
	// config/default when it has not been made.
	installer := filepath.Join("..", "dist", "install.yaml")
	if _, err := os.Stat(installer); err != nil {
		installer = filepath.Join(t.TempDir(), "install.yaml")
		if err := os.WriteFile(installer, []byte(runKubectl(t, kubectl, kc, "kustomize", filepath.Join("..", "config", "default"))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A dry run creates nothing, so the namespaced objects need their
	// namespace to exist for real.
	err := k8s.Create(bg, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "diskcache-system"}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	out := runKubectl(t, kubectl, kc, "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", installer)
	for _, want := range []string{
		"customresourcedefinition.apiextensions.k8s.io/diskcaches.cache.diskcache.dev serverside-applied (server dry run)",
		"clusterrole.rbac.authorization.k8s.io/diskcache-operator-manager-role serverside-applied (server dry run)",
		"clusterrolebinding.rbac.authorization.k8s.io/diskcache-operator-manager-rolebinding serverside-applied (server dry run)",
		"role.rbac.authorization.k8s.io/diskcache-operator-leader-election-role serverside-applied (server dry run)",
		"serviceaccount/diskcache-operator-controller-manager serverside-applied (server dry run)",
		"deployment.apps/diskcache-operator-controller-manager serverside-applied (server dry run)",
		"service/diskcache-operator-controller-manager-metrics serverside-applied (server dry run)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

// TestPrinterColumnsShowDegraded: `kubectl get dcache` says a cache is
// Degraded even when all its shards are ready, and -o wide says why.
func TestPrinterColumnsShowDegraded(t *testing.T) {
	needEnv(t)
	kubectl, kc := kubectlEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "cols", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Auth.SecretName = "absent" })
	eventually(t, "Degraded", func() error {
		dc := get(t, ns, "cols", &cachev1alpha1.DiskCache{})
		return conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionTrue, cachev1alpha1.ReasonAuthSecretInvalid)
	})
	out := runKubectl(t, kubectl, kc, "get", "dcache", "cols", "-n", ns, "-o", "wide")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("kubectl get:\n%s", out)
	}
	header, row := strings.Fields(lines[0]), strings.Fields(lines[1])
	column := func(name string) string {
		for i, h := range header {
			if h == name && i < len(row) {
				return row[i]
			}
		}
		return ""
	}
	if column("DEGRADED") != "True" || column("PROBLEM") != cachev1alpha1.ReasonAuthSecretInvalid {
		t.Errorf("kubectl get -o wide:\n%s", out)
	}
}
