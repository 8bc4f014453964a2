package controllers

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// The Helm chart (charts/diskcache-operator) must install what config/
// (dist/install.yaml) installs. These tests render it with the helm binary
// that `make helm` builds into bin/ from hack/tools/helm.

var chartDir = filepath.Join("..", "charts", "diskcache-operator")

func helmBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HELM"); p != "" {
		return p
	}
	if p, err := filepath.Abs(filepath.Join("..", "bin", "helm")); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if os.Getenv("DISKCACHE_REQUIRE_HELM") != "" {
		t.Fatal("no helm (make helm builds one into bin/) and DISKCACHE_REQUIRE_HELM is set")
	}
	t.Skip("no helm: make helm builds one into bin/")
	return ""
}

func runTool(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

// renderChart runs helm template for release diskcache-operator in
// namespace ns, CRDs included.
func renderChart(t *testing.T, ns string, args ...string) []byte {
	t.Helper()
	return runTool(t, helmBinary(t), append([]string{"template", "diskcache-operator", chartDir,
		"--namespace", ns, "--include-crds"}, args...)...)
}

func decodeObjects(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatal(err)
		}
		if len(m) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
}

func objectID(o *unstructured.Unstructured) string {
	return fmt.Sprintf("%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
}

// byID indexes objects by kind, namespace and name, without the label that
// says which tool installed them (kustomize or Helm).
func byID(t *testing.T, objs []*unstructured.Unstructured) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, o := range objs {
		labels := o.GetLabels()
		delete(labels, "app.kubernetes.io/managed-by")
		if len(labels) == 0 {
			labels = nil // no labels at all, as in config/rbac/role.yaml
		}
		o.SetLabels(labels)
		if _, dup := out[objectID(o)]; dup {
			t.Fatalf("%s rendered twice", objectID(o))
		}
		out[objectID(o)] = o.Object
	}
	return out
}

func TestHelmChartLint(t *testing.T) {
	helm := helmBinary(t)
	runTool(t, helm, "lint", "--strict", chartDir)
	runTool(t, helm, "lint", "--strict", chartDir, "--set", "watchNamespaces={team-a,team-b}",
		"--set", "leaderElection.enabled=false", "--set", "logLevel=debug", "--set", "namespace.create=true")
	// The values schema rejects what the operator would not take.
	for _, bad := range []string{"logLevel=verbose", "watchNamespaces={Team_A}", "imagee.tag=x",
		"replicas=2,leaderElection.enabled=false"} {
		if out, err := exec.Command(helm, "lint", "--strict", chartDir, "--set", bad).CombinedOutput(); err == nil {
			t.Errorf("helm lint accepted --set %s:\n%s", bad, out)
		}
	}
}

// TestHelmChartMatchesConfig renders the chart with its defaults (and the
// Namespace that `helm install --create-namespace` would make) and
// config/default with kustomize: every object must be the same, field for
// field, apart from the managed-by label.
func TestHelmChartMatchesConfig(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		if os.Getenv("DISKCACHE_REQUIRE_KUBECTL") != "" {
			t.Fatal("kubectl is not on PATH and DISKCACHE_REQUIRE_KUBECTL is set")
		}
		t.Skip("kubectl (for kustomize) is not on PATH")
	}
	// The chart's copies of config/ files are up to date.
	for src, dst := range map[string]string{
		"crd/bases/cache.diskcache.dev_diskcaches.yaml": "crds/cache.diskcache.dev_diskcaches.yaml",
		"rbac/role.yaml":                  "files/role.yaml",
		"rbac/leader_election_role.yaml":  "files/leader_election_role.yaml",
		"rbac/diskcache_admin_role.yaml":  "files/diskcache_admin_role.yaml",
		"rbac/diskcache_editor_role.yaml": "files/diskcache_editor_role.yaml",
		"rbac/diskcache_viewer_role.yaml": "files/diskcache_viewer_role.yaml",
	} {
		if !bytes.Equal(readFile(t, filepath.Join("..", "config", src)), readFile(t, filepath.Join(chartDir, dst))) {
			t.Errorf("%s/%s differs from config/%s: run make manifests (it copies config/ into the chart)", chartDir, dst, src)
		}
	}

	want := byID(t, decodeObjects(t, runTool(t, kubectl, "kustomize", filepath.Join("..", "config", "default"))))
	got := byID(t, decodeObjects(t, renderChart(t, "diskcache-system", "--set", "namespace.create=true")))
	var ids []string
	for id := range want {
		ids = append(ids, id)
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		w, inConfig := want[id]
		g, inChart := got[id]
		switch {
		case !inChart:
			t.Errorf("%s: in config/default, not in the chart", id)
		case !inConfig:
			t.Errorf("%s: in the chart, not in config/default", id)
		case !reflect.DeepEqual(w, g):
			wy, _ := yaml.Marshal(w)
			gy, _ := yaml.Marshal(g)
			t.Errorf("%s differs.\nconfig/default:\n%s\nchart:\n%s", id, wy, gy)
		}
	}
	if len(want) < 10 {
		t.Errorf("only %d objects in config/default", len(want))
	}
}

func kinds(objs []*unstructured.Unstructured) map[string]int {
	n := map[string]int{}
	for _, o := range objs {
		n[o.GetKind()]++
	}
	return n
}

func managerArgs(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			c := c.(map[string]any)
			if c["name"] == "manager" {
				args, _, _ := unstructured.NestedStringSlice(c, "args")
				return args
			}
		}
	}
	t.Fatal("no manager container in the rendered chart")
	return nil
}

// TestHelmChartPassesServerDryRun applies the rendered chart, with its
// defaults and with the values users change, to the envtest API server as a
// server-side dry run.
func TestHelmChartPassesServerDryRun(t *testing.T) {
	needEnv(t)
	// A dry run creates nothing, so namespaced objects need their namespace
	// to exist for real.
	if err := k8s.Create(bg, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "diskcache-system"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	watchA, watchB := newNamespace(t), newNamespace(t)
	release := newNamespace(t)
	cases := []struct {
		name, ns string
		args     []string
		check    func(objs []*unstructured.Unstructured) error
	}{
		{"defaults", "diskcache-system", nil, func(objs []*unstructured.Unstructured) error {
			k := kinds(objs)
			// manager, metrics auth and reader, 3 user roles.
			if k["ClusterRole"] != 6 || k["ClusterRoleBinding"] != 2 || k["Role"] != 1 || k["Namespace"] != 0 {
				return fmt.Errorf("kinds %v", k)
			}
			args := strings.Join(managerArgs(t, objs), " ")
			return want(strings.Contains(args, "--metrics-bind-address=:8443") && !strings.Contains(args, "--metrics-secure"), "args %s", args)
		}},
		{"plain metrics", release, []string{"--set", "metrics.secure=false"}, func(objs []*unstructured.Unstructured) error {
			k := kinds(objs)
			if k["ClusterRole"] != 4 || k["ClusterRoleBinding"] != 1 {
				return fmt.Errorf("kinds %v (no metrics auth roles)", k)
			}
			args := strings.Join(managerArgs(t, objs), " ")
			return want(strings.Contains(args, "--metrics-bind-address=:8080 --metrics-secure=false"), "args %s", args)
		}},
		{"namespaced with secure metrics", release, []string{"--set", "watchNamespaces={" + watchA + "}", "--set", "metrics.secure=true"}, func(objs []*unstructured.Unstructured) error {
			// Asked for: token reviews are cluster-wide.
			k := kinds(objs)
			if k["ClusterRole"] != 5 || k["ClusterRoleBinding"] != 1 {
				return fmt.Errorf("kinds %v", k)
			}
			return nil
		}},
		{"namespaced", release, []string{"--set", "watchNamespaces={" + watchA + "," + watchB + "}"}, func(objs []*unstructured.Unstructured) error {
			k := kinds(objs)
			// The user roles stay ClusterRoles (aggregated); the operator's
			// own permissions are Roles: one per watched namespace plus
			// leader election.
			// No ClusterRole to review scrapers' tokens either: plain
			// metrics unless metrics.secure says otherwise.
			if k["ClusterRole"] != 3 || k["ClusterRoleBinding"] != 0 || k["Role"] != 3 || k["RoleBinding"] != 3 {
				return fmt.Errorf("kinds %v", k)
			}
			args := strings.Join(managerArgs(t, objs), " ")
			return want(strings.Contains(args, "--watch-namespaces="+watchA+","+watchB) && strings.Contains(args, "--metrics-secure=false"), "args %s", args)
		}},
		{"pull secrets", release, []string{"--set", "imagePullSecrets[0].name=reg", "--set", "imagePullSecrets[1].name=reg2"}, func(objs []*unstructured.Unstructured) error {
			// The cache pods pull the operator's image with its Secrets.
			args := strings.Join(managerArgs(t, objs), " ")
			return want(strings.Contains(args, "--cacheserver-image-pull-secrets=reg,reg2"), "args %s", args)
		}},
		{"cache pods' own pull secrets", release, []string{"--set", "imagePullSecrets[0].name=reg", "--set", "cacheserverImagePullSecrets[0].name=team"}, func(objs []*unstructured.Unstructured) error {
			args := strings.Join(managerArgs(t, objs), " ")
			return want(strings.Contains(args, "--cacheserver-image-pull-secrets=team ") || strings.HasSuffix(args, "--cacheserver-image-pull-secrets=team"), "args %s", args)
		}},
		{"customized", release, []string{"--set", "image.repository=registry.example/op", "--set", "image.tag=v9",
			"--set", "image.pullPolicy=Always", "--set", "leaderElection.enabled=false", "--set", "logLevel=debug",
			"--set", "resources.limits.memory=1Gi", "--set", "cacheserverImage=registry.example/cs:v9", "--set", "replicas=0",
			"--set", "nodeSelector.disk=ssd", "--set", "namespace.create=true"}, func(objs []*unstructured.Unstructured) error {
			k := kinds(objs)
			if k["Role"] != 0 || k["Namespace"] != 1 {
				return fmt.Errorf("kinds %v (no leader election Role when it is off)", k)
			}
			args := strings.Join(managerArgs(t, objs), " ")
			if strings.Contains(args, "--leader-elect") || !strings.Contains(args, "--zap-log-level=debug") {
				return fmt.Errorf("args %s", args)
			}
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs := decodeObjects(t, renderChart(t, tc.ns, tc.args...))
			if err := tc.check(objs); err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				err := k8s.Apply(bg, client.ApplyConfigurationFromUnstructured(o), client.DryRunAll,
					client.ForceOwnership, client.FieldOwner("chart-test"))
				if err != nil {
					t.Errorf("server-side dry run of %s: %v", objectID(o), err)
				}
			}
		})
	}
}

// TestHelmChartNamespacedInstall runs cmd/manager with exactly the RBAC and
// arguments of the chart's namespaced install (watchNamespaces, Roles, no
// ClusterRole): it must reconcile a DiskCache in the watched namespace
// without a Forbidden error, while the cluster stays out of its reach.
func TestHelmChartNamespacedInstall(t *testing.T) {
	needEnv(t)
	release, watched, other := newNamespace(t), newNamespace(t), newNamespace(t)
	objs := decodeObjects(t, renderChart(t, release, "--set", "watchNamespaces={"+watched+"}"))
	// Create the operator's identity and permissions for real.
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount", "Role", "RoleBinding":
			if err := k8s.Create(bg, o); err != nil {
				t.Fatalf("create %s: %v", objectID(o), err)
			}
		case "ClusterRoleBinding":
			t.Fatalf("the namespaced install binds a ClusterRole: %s", objectID(o))
		}
	}
	user := fmt.Sprintf("system:serviceaccount:%s:diskcache-operator-controller-manager", release)

	// Nothing outside the watched namespace, nothing cluster-wide.
	cfg := rest.CopyConfig(restCfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	as, err := client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := as.List(bg, &corev1.SecretList{}, client.InNamespace(watched)); err != nil {
		t.Errorf("list Secrets in the watched namespace: %v", err)
	}
	for _, ns := range []string{other, ""} {
		if err := as.List(bg, &corev1.SecretList{}, client.InNamespace(ns)); !apierrors.IsForbidden(err) {
			t.Errorf("list Secrets in namespace %q: %v; want Forbidden", ns, err)
		}
	}

	// The chart's own arguments, with the addresses and identity of a
	// process outside the cluster.
	var args []string
	for _, a := range managerArgs(t, objs) {
		if !strings.HasPrefix(a, "--metrics-bind-address=") && !strings.HasPrefix(a, "--health-probe-bind-address=") {
			args = append(args, a)
		}
	}
	args = append(args, "--leader-election-namespace", release, "--cacheserver-image", testImage)
	m := startManager(t, user, args...)
	m.waitLeader(t, release)
	newDiskCache(t, watched, "helm", func(dc *cachev1alpha1.DiskCache) {
		dc.Labels = map[string]string{otherManagerLabel: "helm"} // only the process reconciles it
	})
	waitChildren(t, watched, "helm")
	eventually(t, "status", func() error {
		dc := get(t, watched, "helm", &cachev1alpha1.DiskCache{})
		return want(dc.Status.ObservedGeneration == dc.Generation, "not observed")
	})
	if l := m.logs(); strings.Contains(l, "forbidden") || strings.Contains(l, "Reconciler error") {
		t.Errorf("manager errors:\n%s", l)
	}
}
