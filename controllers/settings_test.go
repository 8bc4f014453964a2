package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// startShards runs one real cacheserver process per shard with the token
// of the DiskCache's Secret, and creates ready Pods standing for them (envtest
// has no kubelet), so the reconciler talks to real servers. Each server is
// shard i (--shard-index) with the DiskCache's admin token and no topology
// until the operator announces one, as a pod whose ConfigMap is not mounted
// yet.
// startShardsWithSizeLimit starts the shards and waits until the operator
// has applied spec.sizeLimit (bytes) to every one of them.
func startShardsWithSizeLimit(t *testing.T, ns, name string, shards int, token string, sizeLimit int64) []*testserver.Server {
	t.Helper()
	servers := startShards(t, ns, name, shards, token)
	eventually(t, "size limit applied", func() error {
		for _, s := range servers {
			if got := serverSettings(t, s)["size_limit"]; got != float64(sizeLimit) {
				return fmt.Errorf("%s: size_limit %v", s.URL, got)
			}
		}
		return nil
	})
	return servers
}

func startShards(t *testing.T, ns, name string, shards int, token string) []*testserver.Server {
	t.Helper()
	adminFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(adminFile, []byte(waitAdminToken(t, ns, name)), 0o600); err != nil {
		t.Fatal(err)
	}
	var servers []*testserver.Server
	for i := 0; i < shards; i++ {
		pod := fmt.Sprintf("%s-%d", name, i)
		srv := testserver.Start(t, testserver.Options{Token: token,
			Args: []string{"--shard-index", strconv.Itoa(i), "--admin-token-file", adminFile}})
		servers = append(servers, srv)
		podAddrs.Store(ns+"/"+pod, srv.URL)
		t.Cleanup(func() { podAddrs.Delete(ns + "/" + pod) })
		createPod(t, ns, name, pod, true)
	}
	// Data a test writes before a server's first topology would be
	// discarded by it as not its own: wait for the announcement.
	for _, srv := range servers {
		eventually(t, "topology announced to "+srv.URL, func() error {
			topo, err := shardClient(t, srv.URL, token).Topology(bg)
			if err != nil {
				return err
			}
			return want(topo.Epoch > 0, "no topology yet")
		})
	}
	return servers
}

func createPod(t *testing.T, ns, dcName, name string, ready bool) *corev1.Pod {
	t.Helper()
	dc := &cachev1alpha1.DiskCache{ObjectMeta: metav1.ObjectMeta{Name: dcName, Namespace: ns}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels(dc, ComponentServer)},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: ContainerName, Image: testImage}}},
	}
	if err := k8s.Create(bg, pod); err != nil {
		t.Fatal(err)
	}
	// Gone with the test, so the operator stops calling its address.
	t.Cleanup(func() { _ = k8s.Delete(bg, pod.DeepCopy(), client.GracePeriodSeconds(0)) })
	setPodReady(t, pod, ready)
	return pod
}

func setPodReady(t *testing.T, pod *corev1.Pod, ready bool) {
	t.Helper()
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	eventually(t, "set pod status", func() error {
		if err := k8s.Get(bg, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		pod.Status.Phase = corev1.PodRunning
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}}
		return k8s.Status().Update(bg, pod)
	})
}

// shardClient talks to one shard about itself, as the operator does: no
// routing to other shards, no fan-out (the servers of startShards form one
// topology once the operator has announced it).
func shardClient(t *testing.T, url, token string) *cacheclient.Client {
	t.Helper()
	c, err := cacheclient.New(url, cacheclient.Options{Token: token, DirectOnly: true,
		HTTPClient: (&DiskCacheReconciler{}).httpClient(nil)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func serverSettings(t *testing.T, srv *testserver.Server) map[string]any {
	t.Helper()
	c := shardClient(t, srv.URL, srv.Token)
	s, err := c.Cache("").Settings(bg)
	if err != nil {
		t.Fatalf("settings of %s: %v", srv.URL, err)
	}
	// As JSON decodes them: the checks below compare wire values.
	var m map[string]any
	if b, err := json.Marshal(s); err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("settings of %s: %v", srv.URL, err)
	}
	return m
}

func waitAdminToken(t *testing.T, ns, name string) string {
	t.Helper()
	var tok string
	eventually(t, "admin token Secret", func() error {
		var s corev1.Secret
		if err := k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: name + "-admin-token"}, &s); err != nil {
			return err
		}
		tok = string(s.Data["token"])
		return nil
	})
	return tok
}

func waitToken(t *testing.T, ns, name string) string {
	t.Helper()
	var tok string
	eventually(t, "token Secret", func() error {
		var s corev1.Secret
		if err := k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: name + "-token"}, &s); err != nil {
			return err
		}
		tok = string(s.Data["token"])
		return nil
	})
	return tok
}

func TestLiveSettingsReachRunningServers(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "live", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 2 })
	tok := waitToken(t, ns, "live")
	servers := startShards(t, ns, "live", 2, tok)
	// A third pod that is not ready must not be called.
	createPod(t, ns, "live", "live-2", false)
	c := waitChildren(t, ns, "live")
	hash0 := c.sts.Spec.Template.Annotations[ConfigHashAnno]

	updateDiskCache(t, ns, "live", func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.SizeLimit = ptrTo(resource.MustParse("256Mi"))
		dc.Spec.EvictionPolicy = cachev1alpha1.EvictionLeastFrequentlyUsed
		dc.Spec.CullLimit = ptrTo[int32](3)
		dc.Spec.Statistics = true
		dc.Spec.TagIndex = true
	})
	wantSettings := map[string]any{"size_limit": float64(256 << 20), "eviction_policy": "least-frequently-used",
		"cull_limit": float64(3), "statistics": true, "tag_index": true}
	for _, srv := range servers {
		eventually(t, "settings applied to "+srv.URL, func() error {
			got := serverSettings(t, srv)
			for k, v := range wantSettings {
				if got[k] != v {
					return fmt.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
			return nil
		})
	}
	// The ConfigMap keeps them for restarts; the pods do not roll.
	cm := get(t, ns, "live-config", &corev1.ConfigMap{})
	for _, line := range []string{"size-limit = 268435456", "eviction-policy = least-frequently-used", "cull-limit = 3", "statistics = true", "tag-index = true"} {
		if !strings.Contains(cm.Data[ConfigKey], "\n"+line+"\n") {
			t.Errorf("ConfigMap lacks %q", line)
		}
	}
	if h := get(t, ns, "live", &appsv1.StatefulSet{}).Spec.Template.Annotations[ConfigHashAnno]; h != hash0 {
		t.Errorf("live settings changed the pod template hash (%s → %s): pods would roll", hash0, h)
	}
	if n, ok := settingsCalls.Load(ns + "/live-2"); ok && n.(*atomic.Int64).Load() > 0 {
		t.Errorf("the operator called a pod that is not ready")
	}
	eventually(t, "SettingsApplied events", func() error {
		var pods []string
		for _, e := range eventsFor(t, ns, "live") {
			if e.Reason == "SettingsApplied" {
				pods = append(pods, e.Note)
				if strings.Contains(e.Note, tok) {
					t.Fatal("event carries the token")
				}
			}
		}
		sort.Strings(pods)
		joined := strings.Join(pods, "\n")
		for _, p := range []string{"live-0", "live-1"} {
			if !strings.Contains(joined, "pod "+p+": applied cull_limit, eviction_policy, size_limit, statistics, tag_index") {
				return fmt.Errorf("no SettingsApplied event for %s in %q", p, joined)
			}
		}
		return nil
	})

	// A server whose settings drifted (e.g. restarted with an old config) is
	// corrected when its pod turns ready again.
	cl := shardClient(t, servers[1].URL, tok)
	if _, err := cl.Cache("").UpdateSettings(bg, settings.Settings{CullLimit: settings.Ptr[int64](99)}); err != nil {
		t.Fatal(err)
	}
	pod1 := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "live-1"}}
	setPodReady(t, pod1, false)
	setPodReady(t, pod1, true)
	eventually(t, "drift corrected", func() error {
		return want(serverSettings(t, servers[1])["cull_limit"] == float64(3), "cull_limit %v", serverSettings(t, servers[1])["cull_limit"])
	})

	// A pod that is ready but unreachable makes the DiskCache Degraded.
	createPod(t, ns, "live", "live-3", true)
	eventually(t, "Degraded: settings not applied", func() error {
		dc := get(t, ns, "live", &cachev1alpha1.DiskCache{})
		if err := conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionTrue, cachev1alpha1.ReasonSettingsNotApplied); err != nil {
			return err
		}
		c := findCondition(dc, cachev1alpha1.ConditionDegraded)
		return want(strings.Contains(c.Message, "pod live-3"), "message %q", c.Message)
	})
}

func findCondition(dc *cachev1alpha1.DiskCache, typ string) *metav1.Condition {
	for i := range dc.Status.Conditions {
		if dc.Status.Conditions[i].Type == typ {
			return &dc.Status.Conditions[i]
		}
	}
	return nil
}

// countingClient counts the writes a reconciler sends.
type countingClient struct {
	client.Client
	mu     sync.Mutex
	writes []string
}

func (c *countingClient) note(verb string, obj client.Object) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, fmt.Sprintf("%s %T %s", verb, obj, obj.GetName()))
}

func (c *countingClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	c.note("create", obj)
	return c.Client.Create(ctx, obj, opts...)
}

func (c *countingClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	c.note("update", obj)
	return c.Client.Update(ctx, obj, opts...)
}

func (c *countingClient) Patch(ctx context.Context, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
	c.note("patch", obj)
	return c.Client.Patch(ctx, obj, p, opts...)
}

func (c *countingClient) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	c.mu.Lock()
	c.writes = append(c.writes, fmt.Sprintf("apply %T", obj))
	c.mu.Unlock()
	return c.Client.Apply(ctx, obj, opts...)
}

func (c *countingClient) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	c.note("delete", obj)
	return c.Client.Delete(ctx, obj, opts...)
}

func (c *countingClient) DeleteAllOf(ctx context.Context, obj client.Object, opts ...client.DeleteAllOfOption) error {
	c.note("deleteAllOf", obj)
	return c.Client.DeleteAllOf(ctx, obj, opts...)
}

func (c *countingClient) Status() client.SubResourceWriter {
	return &countingStatus{SubResourceWriter: c.Client.Status(), c: c}
}

func (c *countingClient) SubResource(sub string) client.SubResourceClient {
	c.mu.Lock()
	c.writes = append(c.writes, "subresource client "+sub)
	c.mu.Unlock()
	return c.Client.SubResource(sub)
}

func (c *countingClient) taken() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.writes
	c.writes = nil
	return out
}

type countingStatus struct {
	client.SubResourceWriter
	c *countingClient
}

func (s *countingStatus) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	s.c.note("status update", obj)
	return s.SubResourceWriter.Update(ctx, obj, opts...)
}

func (s *countingStatus) Patch(ctx context.Context, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
	s.c.note("status patch", obj)
	return s.SubResourceWriter.Patch(ctx, obj, p, opts...)
}

func (s *countingStatus) Create(ctx context.Context, obj client.Object, sub client.Object, opts ...client.SubResourceCreateOption) error {
	s.c.note("status create", obj)
	return s.SubResourceWriter.Create(ctx, obj, sub, opts...)
}

func (s *countingStatus) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.SubResourceApplyOption) error {
	s.c.mu.Lock()
	s.c.writes = append(s.c.writes, "status apply")
	s.c.mu.Unlock()
	return s.SubResourceWriter.Apply(ctx, obj, opts...)
}

// memRecorder keeps events in memory.
type memRecorder struct {
	mu    sync.Mutex
	notes []string
}

func (m *memRecorder) Eventf(_ runtime.Object, _ runtime.Object, _, reason, _, note string, args ...any) {
	m.mu.Lock()
	m.notes = append(m.notes, reason+": "+fmt.Sprintf(note, args...))
	m.mu.Unlock()
}

func (m *memRecorder) taken() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.notes
	m.notes = nil
	return out
}

// TestSteadyStateMakesNoWrites runs the reconciler on a DiskCache whose
// children, status and running servers already match its spec: it must send
// no write to the API server, no settings change to the servers and record
// no event. It also counts every API request of such a reconcile.
func TestSteadyStateMakesNoWrites(t *testing.T) {
	needEnv(t)
	for _, tc := range []struct {
		name   string
		mutate func(*cachev1alpha1.DiskCache)
	}{
		{"defaults", nil},
		{"everything", func(dc *cachev1alpha1.DiskCache) {
			dc.Spec.Shards = 2
			dc.Spec.SizeLimit = ptrTo(resource.MustParse("300Mi"))
			dc.Spec.EvictionPolicy = cachev1alpha1.EvictionLeastRecentlyUsed
			dc.Spec.Statistics = true
			dc.Spec.MaxKeyBytes = ptrTo(resource.MustParse("2Ki"))
			dc.Spec.Storage.StorageClassName = ptrTo("standard")
			dc.Spec.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
				Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}
			dc.Spec.NodeSelector = map[string]string{"a": "b"}
			dc.Spec.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptrTo[int64](30)}}
			dc.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a", "b"}}}}}}}}
			dc.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "zone", WhenUnsatisfiable: corev1.DoNotSchedule}}
			dc.Spec.PodAnnotations = map[string]string{"x": "y"}
			dc.Spec.PodLabels = map[string]string{"team": "a"}
			dc.Spec.ImagePullPolicy = corev1.PullIfNotPresent
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNamespace(t)
			dc := newDiskCache(t, ns, "steady", tc.mutate)
			tok := waitToken(t, ns, "steady")
			startShards(t, ns, "steady", int(max(dc.Spec.Shards, 1)), tok)
			waitChildren(t, ns, "steady")
			setSTSStatus(t, ns, "steady", func(s *appsv1.StatefulSet) {
				n := *s.Spec.Replicas
				s.Status = appsv1.StatefulSetStatus{ObservedGeneration: s.Generation, Replicas: n, ReadyReplicas: n, AvailableReplicas: n,
					UpdatedReplicas: n, CurrentReplicas: n, CurrentRevision: "r1", UpdateRevision: "r1"}
			})
			eventually(t, "available", func() error {
				got := get(t, ns, "steady", &cachev1alpha1.DiskCache{})
				return conditionIs(got, cachev1alpha1.ConditionAvailable, metav1.ConditionTrue, "")
			})

			// A reconciler of its own, reading through the manager's cache
			// and writing through a counted transport and a counting client.
			cfg, transport := countingConfig()
			direct, err := client.New(cfg, client.Options{Scheme: testScheme, Cache: &client.CacheOptions{Reader: mgrCache}})
			if err != nil {
				t.Fatal(err)
			}
			apiReader, err := client.New(cfg, client.Options{Scheme: testScheme})
			if err != nil {
				t.Fatal(err)
			}
			cc := &countingClient{Client: direct}
			rec := &memRecorder{}
			r := &DiskCacheReconciler{Client: cc, APIReader: apiReader, Scheme: testScheme, Recorder: rec,
				DefaultImage: testImage, DefaultImagePullSecrets: testImagePullSecrets, PodAddress: testPodAddress, ShardURL: testShardURL, SettingsTimeout: 5 * time.Second}
			req := reconcile.Request{NamespacedName: client.ObjectKey{Namespace: ns, Name: "steady"}}

			// The manager's own reconciles may still be settling (and its
			// cache catching up with their writes): wait for a quiet run.
			eventually(t, "a reconcile without writes", func() error {
				if _, err := r.Reconcile(bg, req); err != nil {
					return err
				}
				w := cc.taken()
				rec.taken()
				return want(len(w) == 0, "writes: %v", w)
			})
			transport.reset()
			const runs = 5
			for i := 0; i < runs; i++ {
				start := time.Now()
				if _, err := r.Reconcile(bg, req); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					t.Logf("steady-state reconcile took %v", time.Since(start).Round(time.Microsecond))
				}
			}
			if w := cc.taken(); len(w) > 0 {
				t.Errorf("steady-state reconciles wrote: %v", w)
			}
			if ev := rec.taken(); len(ev) > 0 {
				t.Errorf("steady-state reconciles recorded events: %v", ev)
			}
			calls, log := transport.snapshot()
			total := 0
			for m, n := range calls {
				total += n
				if m != "GET" {
					t.Errorf("%d %s requests to the API server in steady state: %v", n, m, log)
				}
			}
			t.Logf("API requests per steady-state reconcile: %.1f (%v over %d runs: %v)", float64(total)/runs, calls, runs, log)
		})
	}
}

// TestReconcileLatency reports how long a DiskCache takes from create to all
// six children present, with a warm operator (behaviour is asserted
// elsewhere; this only measures).
func TestReconcileLatency(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	var d []time.Duration
	for i := 0; i < 5; i++ {
		name := fmt.Sprintf("lat-%d", i)
		start := time.Now()
		newDiskCache(t, ns, name, nil)
		waitChildren(t, ns, name)
		d = append(d, time.Since(start))
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	t.Logf("create → all children present over %d DiskCaches: min %v, median %v, max %v", len(d),
		d[0].Round(time.Millisecond), d[len(d)/2].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
}
