//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
)

const (
	operatorNamespace  = "diskcache-system"
	operatorDeployment = "diskcache-operator-controller-manager"
	toolboxImage       = "localhost/diskcache-toolbox:v1"
	cachePort          = 8080
	cacheContainer     = "cacheserver"
)

var (
	k8s        ctrlclient.WithWatch
	kubeconfig string
	repoRoot   string
	scheme     = runtime.NewScheme()
)

func init() {
	_, file, _, _ := goruntime.Caller(0)
	repoRoot = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if err := cachev1alpha1.AddToScheme(scheme); err != nil {
		panic(err)
	}
}

// phases logs how long each phase of a test took.
type phases struct {
	t     *testing.T
	start time.Time
	name  string
	all   time.Time
}

func newPhases(t *testing.T) *phases {
	now := time.Now()
	return &phases{t: t, start: now, all: now}
}

// next ends the current phase (logging its duration) and starts another.
func (p *phases) next(name string) {
	p.t.Helper()
	now := time.Now()
	if p.name != "" {
		p.t.Logf("TIMING %s / %s: %s", p.t.Name(), p.name, now.Sub(p.start).Round(time.Millisecond))
	}
	p.name, p.start = name, now
}

// done ends the last phase; defer it (deferred calls run before the
// namespace cleanup, which logs its own timing).
func (p *phases) done() {
	p.next("")
	p.t.Logf("TIMING %s total: %s", p.t.Name(), time.Since(p.all).Round(time.Millisecond))
}

// eventually polls cond every interval until it returns true or the deadline
// passes; then the test fails with the last message.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		ok, msg := cond(ctx)
		if ok {
			return
		}
		last = msg
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, last)
		case <-tick.C:
		}
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func randSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newNamespace creates a namespace (restricted pod security) deleted, and
// waited for, when the test ends.
func newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	name := "e2e-" + prefix + "-" + randSuffix()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
		"diskcache-e2e":                      "true",
	}}}
	if err := k8s.Create(ctxT(t, 30*time.Second), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpNamespace(t, name)
		}
		if os.Getenv("E2E_KEEP") == "1" {
			t.Logf("E2E_KEEP=1: keeping namespace %s", name)
			return
		}
		start := time.Now()
		ctx := context.Background()
		if err := k8s.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", name, err)
			return
		}
		// Wait so the next test finds the PersistentVolumes free again.
		eventually(t, 3*time.Minute, "namespace "+name+" gone", func(ctx context.Context) (bool, string) {
			err := k8s.Get(ctx, ctrlclient.ObjectKey{Name: name}, &corev1.Namespace{})
			return apierrors.IsNotFound(err), fmt.Sprintf("get: %v", err)
		})
		t.Logf("TIMING %s / namespace cleanup: %s", t.Name(), time.Since(start).Round(time.Millisecond))
	})
	return name
}

// dumpNamespace logs what a failed test leaves behind.
func dumpNamespace(t *testing.T, ns string) {
	t.Helper()
	for _, args := range [][]string{
		{"-n", ns, "get", "diskcache,statefulset,pods,pvc,svc,configmap,secret,pdb", "-o", "wide"},
		{"-n", ns, "get", "diskcache", "-o", "yaml"},
		{"-n", ns, "get", "events", "--sort-by=.lastTimestamp"},
		{"-n", operatorNamespace, "logs", "deployment/" + operatorDeployment, "--tail=20"},
		// The cache servers' own account (what they dropped, refused,
		// moved) of what the test saw.
		{"-n", ns, "logs", "-l", "app.kubernetes.io/component=cacheserver", "--prefix", "--tail=40", "--max-log-requests=16"},
	} {
		out, _ := kubectl(t, args...)
		var lines []string
		for _, l := range strings.Split(out, "\n") {
			if len(l) > 400 {
				l = l[:400] + "…"
			}
			lines = append(lines, l)
		}
		out = strings.Join(lines, "\n")
		t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
}

// kubectl runs kubectl against the test cluster and returns its standard
// output, with its standard error after it when it fails. On success the
// standard error is only logged: kubectl writes warnings there (for example
// "Unknown stream id 1, discarding message" from exec) that are not the
// output a test compares.
func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		return out.String() + errOut.String(), err
	}
	if errOut.Len() > 0 {
		t.Logf("kubectl's standard error (its arguments may carry a token): %s", errOut.String())
	}
	return out.String(), nil
}

// newDiskCache returns a small single-shard DiskCache; mutate adjusts it.
func newDiskCache(ns, name string, mutate func(*cachev1alpha1.DiskCache)) *cachev1alpha1.DiskCache {
	dc := &cachev1alpha1.DiskCache{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: cachev1alpha1.DiskCacheSpec{
			Shards:          1,
			SizeLimit:       ptr.To(resource.MustParse("512Mi")),
			ImagePullPolicy: corev1.PullIfNotPresent,
			Storage: cachev1alpha1.StorageSpec{
				Size: ptr.To(resource.MustParse("1Gi")),
			},
		},
	}
	if mutate != nil {
		mutate(dc)
	}
	return dc
}

func createDiskCache(t *testing.T, dc *cachev1alpha1.DiskCache) {
	t.Helper()
	if err := k8s.Create(ctxT(t, 30*time.Second), dc); err != nil {
		t.Fatalf("create DiskCache %s/%s: %v", dc.Namespace, dc.Name, err)
	}
}

func getDiskCache(t *testing.T, ns, name string) *cachev1alpha1.DiskCache {
	t.Helper()
	dc := &cachev1alpha1.DiskCache{}
	if err := k8s.Get(ctxT(t, 30*time.Second), ctrlclient.ObjectKey{Namespace: ns, Name: name}, dc); err != nil {
		t.Fatalf("get DiskCache %s/%s: %v", ns, name, err)
	}
	return dc
}

// updateDiskCache applies mutate to the latest DiskCache, retrying conflicts.
func updateDiskCache(t *testing.T, ns, name string, mutate func(*cachev1alpha1.DiskCache)) {
	t.Helper()
	eventually(t, time.Minute, "update of DiskCache "+name, func(ctx context.Context) (bool, string) {
		dc := &cachev1alpha1.DiskCache{}
		if err := k8s.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: name}, dc); err != nil {
			return false, err.Error()
		}
		mutate(dc)
		if err := k8s.Update(ctx, dc); err != nil {
			if apierrors.IsConflict(err) {
				return false, err.Error()
			}
			t.Fatalf("update DiskCache %s/%s: %v", ns, name, err)
		}
		return true, ""
	})
}

// waitAvailable waits until the operator has reconciled the current spec
// generation and the DiskCache is Available with every shard ready.
func waitAvailable(t *testing.T, ns, name string, timeout time.Duration) *cachev1alpha1.DiskCache {
	t.Helper()
	var dc cachev1alpha1.DiskCache
	eventually(t, timeout, "DiskCache "+ns+"/"+name+" Available", func(ctx context.Context) (bool, string) {
		if err := k8s.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: name}, &dc); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(dc.Status.Conditions, "Available")
		p := meta.FindStatusCondition(dc.Status.Conditions, "Progressing")
		ok := c != nil && c.Status == metav1.ConditionTrue &&
			dc.Status.ObservedGeneration == dc.Generation &&
			dc.Status.ReadyShards == dc.Spec.Shards && dc.Status.Shards == dc.Spec.Shards &&
			(p == nil || p.Status == metav1.ConditionFalse)
		return ok, fmt.Sprintf("generation %d observed %d shards %d ready %d conditions %+v",
			dc.Generation, dc.Status.ObservedGeneration, dc.Status.Shards, dc.Status.ReadyShards, dc.Status.Conditions)
	})
	return &dc
}

// statefulSetSettled waits until the StatefulSet has rolled out its current
// revision to every replica and they are ready.
func waitStatefulSetSettled(t *testing.T, ns, name string, timeout time.Duration) *appsv1.StatefulSet {
	t.Helper()
	var sts appsv1.StatefulSet
	eventually(t, timeout, "StatefulSet "+ns+"/"+name+" rolled out", func(ctx context.Context) (bool, string) {
		if err := k8s.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: name}, &sts); err != nil {
			return false, err.Error()
		}
		want := ptr.Deref(sts.Spec.Replicas, 1)
		st := sts.Status
		ok := st.ObservedGeneration == sts.Generation && st.Replicas == want && st.ReadyReplicas == want &&
			st.UpdatedReplicas == want && st.CurrentRevision == st.UpdateRevision
		return ok, fmt.Sprintf("generation %d status %+v", sts.Generation, st)
	})
	return &sts
}

// cachePod returns pod <name>-<shard>.
func cachePod(t *testing.T, ns, name string, shard int) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{}
	if err := k8s.Get(ctxT(t, 30*time.Second), ctrlclient.ObjectKey{Namespace: ns, Name: fmt.Sprintf("%s-%d", name, shard)}, pod); err != nil {
		t.Fatalf("get pod: %v", err)
	}
	return pod
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func restartCount(pod *corev1.Pod) int32 {
	var n int32
	for _, cs := range pod.Status.ContainerStatuses {
		n += cs.RestartCount
	}
	return n
}

// token reads the bearer token from Secret <name>-token.
func token(t *testing.T, ns, name string) string {
	t.Helper()
	sec := &corev1.Secret{}
	if err := k8s.Get(ctxT(t, 30*time.Second), ctrlclient.ObjectKey{Namespace: ns, Name: name + "-token"}, sec); err != nil {
		t.Fatalf("get token Secret: %v", err)
	}
	tok := string(sec.Data[cachev1alpha1.TokenKey])
	if tok == "" {
		t.Fatalf("Secret %s-token has no %q key", name, cachev1alpha1.TokenKey)
	}
	return tok
}

// serviceURL is the client Service's ClusterIP URL (reachable from this machine).
func serviceURL(t *testing.T, ns, name string) string {
	t.Helper()
	return serviceURLTLS(t, ns, name, nil)
}

// serviceURLTLS is serviceURL over https, verified with tlsConfig, for a
// DiskCache with spec.tls; over http when tlsConfig is nil.
func serviceURLTLS(t *testing.T, ns, name string, tlsConfig *tls.Config) string {
	t.Helper()
	svc := &corev1.Service{}
	if err := k8s.Get(ctxT(t, 30*time.Second), ctrlclient.ObjectKey{Namespace: ns, Name: name}, svc); err != nil {
		t.Fatalf("get Service: %v", err)
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Fatalf("Service %s has no ClusterIP", name)
	}
	base := dataURL(svc.Spec.ClusterIP, tlsConfig)
	waitServiceAnswers(t, base, tlsConfig)
	return base
}

// dataURL is the URL of the data port at ip: https when tlsConfig is set.
func dataURL(ip string, tlsConfig *tls.Config) string {
	scheme := "http"
	if tlsConfig != nil {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s:%d", scheme, ip, cachePort)
}

// waitServiceAnswers waits until base answers /healthz on a few fresh
// connections in a row. A Service's ClusterIP starts to route only once
// kube-proxy has seen its ready endpoints, which can be a moment after the
// DiskCache is Available; until then connections to it are refused.
func waitServiceAnswers(t *testing.T, base string, tlsConfig *tls.Config) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true,
		TLSClientConfig: tlsConfig.Clone()}}
	const inARow = 3
	answered, failures, start := 0, 0, time.Now()
	eventually(t, 2*time.Minute, "the Service "+base+" to answer", func(ctx context.Context) (bool, string) {
		for answered < inARow {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			// A certificate this client does not take is no Service still
			// starting to route: waiting does not change it.
			if errors.As(err, new(*tls.CertificateVerificationError)) {
				t.Fatalf("the Service %s: %v", base, err)
			}
			if err != nil {
				answered = 0
				failures++
				return false, err.Error()
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				answered = 0
				failures++
				return false, resp.Status
			}
			answered++
		}
		return true, ""
	})
	if failures > 0 {
		t.Logf("the Service %s answered %s after it was first asked (%d failed tries)", base, time.Since(start).Round(time.Millisecond), failures)
	}
}

func podURL(pod *corev1.Pod) string {
	return dataURL(pod.Status.PodIP, nil)
}

// serviceClient is a Go client of the DiskCache's Service, with retries.
func serviceClient(t *testing.T, ns, name, tok string) *cacheclient.Cache {
	t.Helper()
	return serviceClientTLS(t, ns, name, tok, nil)
}

// serviceClientTLS is serviceClient over https, verified with tlsConfig
// (spec.tls); over http when tlsConfig is nil.
func serviceClientTLS(t *testing.T, ns, name, tok string, tlsConfig *tls.Config) *cacheclient.Cache {
	t.Helper()
	c, err := cacheclient.New(serviceURLTLS(t, ns, name, tlsConfig),
		cacheclient.Options{Token: tok, Retries: 3, DirectOnly: true, TLSConfig: tlsConfig})
	if err != nil {
		t.Fatal(err)
	}
	return c.Cache("")
}

func newCacheClient(t *testing.T, url, tok string) *cacheclient.Cache {
	t.Helper()
	c, err := cacheclient.New(url, cacheclient.Options{Token: tok, Retries: 3})
	if err != nil {
		t.Fatal(err)
	}
	return c.Cache("")
}

// startToolbox runs a toolbox pod in ns and waits until it is Ready.
func startToolbox(t *testing.T, ns string) string {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "toolbox", Namespace: ns},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			SecurityContext:               restrictedPod(),
			Containers: []corev1.Container{{
				Name:            "toolbox",
				Image:           toolboxImage,
				ImagePullPolicy: corev1.PullIfNotPresent,
				SecurityContext: restrictedContainer(),
			}},
		},
	}
	if err := k8s.Create(ctxT(t, 30*time.Second), pod); err != nil {
		t.Fatalf("create toolbox pod: %v", err)
	}
	eventually(t, 2*time.Minute, "toolbox pod Ready", func(ctx context.Context) (bool, string) {
		p := &corev1.Pod{}
		if err := k8s.Get(ctx, ctrlclient.ObjectKeyFromObject(pod), p); err != nil {
			return false, err.Error()
		}
		return podReady(p), fmt.Sprintf("phase %s conditions %+v", p.Status.Phase, p.Status.Conditions)
	})
	return pod.Name
}

// waitTopologyAnnounced waits until every one of the shards runs the
// topology the operator announced.
func waitTopologyAnnounced(t *testing.T, ns, name string, shards int32) {
	t.Helper()
	eventually(t, 2*time.Minute, "TopologyAnnounced", func(context.Context) (bool, string) {
		dc := getDiskCache(t, ns, name)
		c := meta.FindStatusCondition(dc.Status.Conditions, cachev1alpha1.ConditionTopologyAnnounced)
		st := dc.Status.Topology
		return c != nil && c.Status == metav1.ConditionTrue && st != nil && st.Shards == shards && st.ReadyShardsOnEpoch == shards,
			fmt.Sprintf("condition %+v topology %+v", c, st)
	})
}

// restrictedPod and restrictedContainer are the "restricted" Pod Security
// Standard that test pods (toolbox, django) run under: non-root, no
// privilege escalation, no capabilities, a read-only root filesystem.
func restrictedPod() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		RunAsUser:      ptr.To[int64](65532),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func restrictedContainer() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// The helpers below reach the local cluster's node from this process,
// which runs on it as root (make e2e): the pods' processes and kube-proxy's
// rules are this machine's.

// cacheProcess returns the host pid of the cacheserver of pod: the one
// process whose cgroup path names the container's ID (with cgroup v1 or v2,
// cgroupfs or systemd paths alike).
func cacheProcess(t *testing.T, pod *corev1.Pod) int {
	t.Helper()
	var id string
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == cacheContainer {
			_, id, _ = strings.Cut(cs.ContainerID, "://")
		}
	}
	if id == "" {
		t.Fatalf("pod %s has no running %s container: %+v", pod.Name, cacheContainer, pod.Status.ContainerStatuses)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// A process that ended meanwhile has no cgroup file left.
		if cg, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup")); err == nil && bytes.Contains(cg, []byte(id)) {
			pids = append(pids, pid)
		}
	}
	if len(pids) != 1 {
		t.Fatalf("pod %s: processes %v in container %s, want its cacheserver alone (is this the cluster's node?)", pod.Name, pids, id)
	}
	return pids[0]
}

// processState is the state letter of /proc/PID/stat ('T': stopped).
func processState(pid int) (byte, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	return b[i+2], nil
}

// stillFrozen checks that pid is stopped and that nothing asked it to end
// meanwhile: the kubelet's SIGTERM (a failed liveness probe) waits, pending,
// for the process to run again.
func stillFrozen(pid int) error {
	st, err := processState(pid)
	if err != nil {
		return err
	}
	if st != 'T' {
		return fmt.Errorf("pid %d is in state %c, not stopped", pid, st)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, val, ok := strings.Cut(line, ":"); ok && (name == "SigPnd" || name == "ShdPnd") {
			mask, err := strconv.ParseUint(strings.TrimSpace(val), 16, 64)
			if err != nil {
				return fmt.Errorf("/proc/%d/status: %q: %w", pid, line, err)
			}
			if mask&(1<<(syscall.SIGTERM-1)) != 0 {
				return fmt.Errorf("pid %d has a SIGTERM pending: the kubelet is restarting its container", pid)
			}
		}
	}
	return nil
}

// freezeProcess stops pid (SIGSTOP) as a stalled node would: its sockets
// still take connections, it answers nothing. It returns once the process
// is stopped; thaw (SIGCONT, also run at cleanup) returns once it runs.
func freezeProcess(t *testing.T, pid int) (thaw func()) {
	t.Helper()
	signal := func(sig syscall.Signal) {
		t.Helper()
		if err := syscall.Kill(pid, sig); err != nil {
			t.Fatalf("%v to pid %d: %v", sig, pid, err)
		}
		eventually(t, 30*time.Second, fmt.Sprintf("pid %d to take %v", pid, sig), func(context.Context) (bool, string) {
			st, err := processState(pid)
			if err != nil {
				t.Fatal(err)
			}
			return (st == 'T') == (sig == syscall.SIGSTOP), fmt.Sprintf("state %c", st)
		})
	}
	signal(syscall.SIGSTOP)
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	return func() { signal(syscall.SIGCONT) }
}

// serviceRoutes are the pod IPs that kube-proxy's rules (iptables mode, as
// the local cluster runs it) send the data port of Service ns/name to:
// what a new connection to its ClusterIP may reach, which the
// EndpointSlice says only before kube-proxy has applied it.
func serviceRoutes(ctx context.Context, ns, name string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "iptables-save", "-t", "nat").Output()
	if err != nil {
		return nil, fmt.Errorf("iptables-save -t nat: %w", err)
	}
	// -A KUBE-SVC-… -m comment --comment "ns/name:http -> 10.88.0.7:8080" … -j KUBE-SEP-…
	re := regexp.MustCompile(`^-A KUBE-SVC-\S+ .*--comment "` + regexp.QuoteMeta(ns+"/"+name+":") +
		`\S+ -> (\S+):` + strconv.Itoa(cachePort) + `"`)
	var ips []string
	for _, line := range strings.Split(string(out), "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			ips = append(ips, m[1])
		}
	}
	slices.Sort(ips)
	return ips, nil
}

// waitServiceRoutes waits until the Service's rules send its data port to
// exactly the pods of the given shards.
func waitServiceRoutes(t *testing.T, ns, name string, shards ...int) {
	t.Helper()
	var want []string
	for _, i := range shards {
		want = append(want, cachePod(t, ns, name, i).Status.PodIP)
	}
	slices.Sort(want)
	eventually(t, 2*time.Minute, fmt.Sprintf("the Service %s to route to shards %v (%v)", name, shards, want), func(ctx context.Context) (bool, string) {
		ips, err := serviceRoutes(ctx, ns, name)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Equal(ips, want), fmt.Sprintf("kube-proxy routes to %v", ips)
	})
}
