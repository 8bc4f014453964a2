package controllers

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/yaml"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// operatorIdentity creates a ServiceAccount bound to the operator's
// generated ClusterRole (config/rbac/role.yaml) and, in ns, to its leader
// election Role (config/rbac/leader_election_role.yaml) — the RBAC the
// installer ships — and returns the user name to impersonate.
func operatorIdentity(t *testing.T, ns string) string {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "operator"}}
	if err := k8s.Create(bg, sa); err != nil {
		t.Fatal(err)
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: ns}}

	var cr rbacv1.ClusterRole
	readYAML(t, filepath.Join("..", "config", "rbac", "role.yaml"), &cr)
	cr.Name = "operator-" + ns
	if err := k8s.Create(bg, &cr); err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: cr.Name}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name}}
	if err := k8s.Create(bg, crb); err != nil {
		t.Fatal(err)
	}
	var role rbacv1.Role
	readYAML(t, filepath.Join("..", "config", "rbac", "leader_election_role.yaml"), &role)
	role.Namespace = ns
	if err := k8s.Create(bg, &role); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: role.Name}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}}
	if err := k8s.Create(bg, rb); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("system:serviceaccount:%s:%s", ns, sa.Name)
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestShippedRBACIsSufficient runs the reconciler as a ServiceAccount that
// has only the shipped RBAC: its cache must sync for every watched kind
// (list and watch allowed) and a full reconcile — creating every child,
// growing a claim, writing status — must pass without a Forbidden error.
func TestShippedRBACIsSufficient(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	user := operatorIdentity(t, ns)
	cfg := rest.CopyConfig(restCfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}

	opts := CacheOptions()
	opts.Scheme = testScheme
	opts.DefaultNamespaces = map[string]cache.Config{ns: {}}
	c, err := cache.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	for _, obj := range []client.Object{&cachev1alpha1.DiskCache{}, &appsv1.StatefulSet{}, &corev1.Service{}, &corev1.ConfigMap{},
		&corev1.Secret{}, &policyv1.PodDisruptionBudget{}, &corev1.Pod{}, &corev1.PersistentVolumeClaim{}} {
		if _, err := c.GetInformer(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	go func() { _ = c.Start(ctx) }()
	syncCtx, syncCancel := context.WithTimeout(ctx, 30*time.Second)
	defer syncCancel()
	if !c.WaitForCacheSync(syncCtx) {
		t.Fatal("the operator's cache did not sync: list/watch forbidden for some kind")
	}
	cl, err := client.New(cfg, client.Options{Scheme: testScheme, Cache: &client.CacheOptions{Reader: c}})
	if err != nil {
		t.Fatal(err)
	}
	reader, err := client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		t.Fatal(err)
	}
	r := &DiskCacheReconciler{Client: cl, APIReader: reader, Scheme: testScheme, DefaultImage: testImage, DefaultImagePullSecrets: testImagePullSecrets, PodAddress: testPodAddress}

	dc := newDiskCache(t, ns, "rbac", func(dc *cachev1alpha1.DiskCache) {
		dc.Labels = map[string]string{otherManagerLabel: "rbac"} // only r reconciles it
		dc.Spec.Auth.SecretName = "user-token"                   // read through the API reader
	})
	if err := k8s.Create(bg, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "user-token"}, StringData: map[string]string{"token": "t"}}); err != nil {
		t.Fatal(err)
	}
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(dc)}
	// The manager's own reconciler works on the same object; retry only
	// on write conflicts, never on Forbidden.
	rbacDenied := func(msg string) bool { return strings.Contains(msg, `User "`+user+`" cannot`) }
	reconcileAs := func(what string) {
		t.Helper()
		eventually(t, what, func() error {
			_, err := r.Reconcile(bg, req)
			if err != nil && rbacDenied(err.Error()) {
				t.Fatalf("%s: %v", what, err)
			}
			if err != nil {
				return err
			}
			got := get(t, ns, "rbac", &cachev1alpha1.DiskCache{})
			if cond := findCondition(got, cachev1alpha1.ConditionDegraded); cond != nil && rbacDenied(cond.Message) {
				t.Fatalf("%s: %s", what, cond.Message)
			}
			return nil
		})
	}
	// A reconcile of a DiskCache its cache has not seen yet does nothing.
	eventually(t, "cache sees the DiskCache", func() error {
		return c.Get(bg, req.NamespacedName, &cachev1alpha1.DiskCache{})
	})
	reconcileAs("reconcile")

	// Claims are patched; the generated Secret is created.
	sts := get(t, ns, "rbac", &appsv1.StatefulSet{})
	vct := sts.Spec.VolumeClaimTemplates[0]
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "data-rbac-0", Labels: vct.Labels}, Spec: vct.Spec}
	if err := k8s.Create(bg, pvc); err != nil {
		t.Fatal(err)
	}
	pvc.Status.Phase = corev1.ClaimBound
	if err := k8s.Status().Update(bg, pvc); err != nil {
		t.Fatal(err)
	}
	// Without an expandable storage class the resize is refused by
	// admission, not by RBAC: that surfaces as a Degraded condition.
	updateDiskCache(t, ns, "rbac", func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Storage.Size = ptrTo(*dc.Spec.Storage.Size)
		dc.Spec.Storage.Size.Add(dc.Spec.Storage.Size.DeepCopy())
		dc.Spec.Auth.SecretName = ""
	})
	eventually(t, "cache sees the update", func() error {
		var got cachev1alpha1.DiskCache
		if err := c.Get(bg, req.NamespacedName, &got); err != nil {
			return err
		}
		return want(got.Spec.Auth.SecretName == "", "stale")
	})
	reconcileAs("reconcile after growth")
	eventually(t, "claim patched", func() error {
		got := get(t, ns, "data-rbac-0", &corev1.PersistentVolumeClaim{})
		if got.Spec.Resources.Requests.Storage().Cmp(*vct.Spec.Resources.Requests.Storage()) > 0 {
			return nil
		}
		// Admission refuses to grow a claim whose class cannot expand;
		// that must be the only reason it did not grow.
		dc := get(t, ns, "rbac", &cachev1alpha1.DiskCache{})
		cond := findCondition(dc, cachev1alpha1.ConditionDegraded)
		if cond != nil && cond.Reason == cachev1alpha1.ReasonVolumeResizeFailed && !rbacDenied(cond.Message) {
			return nil
		}
		return fmt.Errorf("claim not grown, Degraded %+v", cond)
	})
	get(t, ns, "rbac-token", &corev1.Secret{})

	// Events: create in any namespace (events.k8s.io).
	icl, err := client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		t.Fatal(err)
	}
	ev := &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"}, EventTime: metav1.NowMicro(),
		Regarding: corev1.ObjectReference{Kind: "DiskCache", Namespace: ns, Name: "rbac"}, Type: "Normal", Reason: "Probe", Action: "Probe",
		ReportingController: ManagerName, ReportingInstance: ManagerName + "-test"}
	if err := icl.Create(bg, ev); err != nil {
		t.Errorf("create event as the operator: %v", err)
	}
	// And nothing more than needed: no deleting, no cluster-wide secret writes.
	if err := icl.Delete(bg, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "rbac-config"}}); !apierrors.IsForbidden(err) {
		t.Errorf("deleting a ConfigMap as the operator: %v; want Forbidden (least privilege)", err)
	}
}

// TestManagerBinary runs cmd/manager as a process with the shipped RBAC
// (impersonated through its kubeconfig), leader election on and its health
// endpoint, and checks that it elects itself, reports ready and reconciles
// without errors.
func TestManagerBinary(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	user := operatorIdentity(t, ns)
	m := startManager(t, user, "--leader-elect", "--leader-election-namespace", ns,
		"--watch-namespaces", ns, "--cacheserver-image", testImage)
	m.waitLeader(t, ns)
	newDiskCache(t, ns, "bin", func(dc *cachev1alpha1.DiskCache) {
		dc.Labels = map[string]string{otherManagerLabel: "binary"} // only the process reconciles it
	})
	waitChildren(t, ns, "bin")
	eventually(t, "the process reconciled", func() error {
		return want(strings.Contains(m.logs(), `"controller":"diskcache"`) && strings.Contains(m.logs(), "Starting workers"), "no workers started:\n%s", m.logs())
	})
	eventually(t, "status", func() error {
		dc := get(t, ns, "bin", &cachev1alpha1.DiskCache{})
		return want(dc.Status.ObservedGeneration == dc.Generation, "not observed")
	})
	if l := m.logs(); strings.Contains(l, "forbidden") || strings.Contains(l, "Reconciler error") {
		t.Errorf("manager errors:\n%s", l)
	}
}

// managerProcess is cmd/manager running as a process (startManager).
type managerProcess struct {
	mu    sync.Mutex
	lines []string
}

// logs is everything the process wrote to stderr so far.
func (m *managerProcess) logs() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.lines, "\n")
}

// waitLeader waits until the process holds the leader election Lease in ns.
func (m *managerProcess) waitLeader(t *testing.T, ns string) {
	t.Helper()
	eventually(t, "leader elected", func() error {
		var lease coordinationv1.Lease
		if err := k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: "diskcache-operator.cache.diskcache.dev"}, &lease); err != nil {
			return err
		}
		return want(lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "", "no holder")
	})
}

// startManager builds cmd/manager and runs it as user (impersonated through
// its kubeconfig) with args, metrics off and a free health address, and
// waits until it reports ready. The process is killed when the test ends;
// its log is shown if the test failed.
func startManager(t *testing.T, user string, args ...string) *managerProcess {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "manager")
	build := exec.Command("go", "build", "-o", bin, "../cmd/manager")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/manager: %v\n%s", err, out)
	}
	kc, err := clientcmd.Load(testEnv.KubeConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range kc.AuthInfos {
		ai.Impersonate = user
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	probeAddr := l.Addr().String()
	l.Close()

	cmd := exec.Command(bin, append([]string{"--kubeconfig", kubeconfig, "--metrics-bind-address", "0",
		"--health-probe-bind-address", probeAddr}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &managerProcess{}
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			m.mu.Lock()
			m.lines = append(m.lines, sc.Text())
			m.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-logsDone
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("manager log:\n%s", m.logs())
		}
	})
	eventually(t, "ready", func() error {
		resp, err := http.Get("http://" + probeAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return want(resp.StatusCode == http.StatusOK, "readyz %d", resp.StatusCode)
	})
	return m
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOperatorMetricsNeedAuthorization runs cmd/manager with the shipped
// RBAC and its default --metrics-secure: /metrics answers over HTTPS, 401
// without a token, 403 to a ServiceAccount without the shipped
// metrics-reader ClusterRole, and the metrics once it is bound.
func TestOperatorMetricsNeedAuthorization(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	user := operatorIdentity(t, ns)
	bindClusterRole(t, ns, "operator", filepath.Join("..", "config", "rbac", "metrics_auth_role.yaml"))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	startManager(t, user, "--watch-namespaces", ns, "--cacheserver-image", testImage, "--metrics-bind-address", addr)

	scraper := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "prometheus"}}
	if err := k8s.Create(bg, scraper); err != nil {
		t.Fatal(err)
	}
	tr := &authenticationv1.TokenRequest{}
	if err := k8s.SubResource("token").Create(bg, scraper, tr); err != nil {
		t.Fatalf("token of ServiceAccount prometheus: %v", err)
	}
	// The operator's certificate is self-signed: what is checked here is
	// who may read, not who serves.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	scrape := func(token string) (int, string, error) {
		req, err := http.NewRequestWithContext(bg, http.MethodGet, "https://"+addr+"/metrics", nil)
		if err != nil {
			return 0, "", err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	eventually(t, "metrics served", func() error {
		_, _, err := scrape("")
		return err
	})
	for _, c := range []struct {
		name, token string
		code        int
	}{{"no token", "", http.StatusUnauthorized},
		// controller-runtime's filter answers a token the API server
		// rejects with 500 "Authentication failed".
		{"a token that is not one", "not-a-token", http.StatusInternalServerError},
		{"prometheus without metrics-reader", tr.Status.Token, http.StatusForbidden}} {
		code, body, err := scrape(c.token)
		if err != nil || code != c.code {
			t.Errorf("%s: %d %v (%.200s); want %d", c.name, code, err, body, c.code)
		}
	}
	bindClusterRole(t, ns, scraper.Name, filepath.Join("..", "config", "rbac", "metrics_reader_role.yaml"))
	eventually(t, "prometheus reads /metrics", func() error {
		code, body, err := scrape(tr.Status.Token)
		if err != nil {
			return err
		}
		return want(code == http.StatusOK && strings.Contains(body, "controller_runtime_reconcile_total"), "%d: %.200s", code, body)
	})
}

// bindClusterRole creates the ClusterRole in path (named for ns) and binds
// it to ServiceAccount sa of ns.
func bindClusterRole(t *testing.T, ns, sa, path string) {
	t.Helper()
	var cr rbacv1.ClusterRole
	readYAML(t, path, &cr)
	cr.Name = cr.Name + "-" + ns
	if err := k8s.Create(bg, &cr); err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: cr.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name}}
	if err := k8s.Create(bg, crb); err != nil {
		t.Fatal(err)
	}
}
