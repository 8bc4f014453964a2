package controllers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	klabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// shardSet plays the kubelet and the StatefulSet controller for one
// DiskCache: shard i is a real cacheserver process (--shard-index i, the
// DiskCache's tokens) and a Pod whose readiness the test sets.
type shardSet struct {
	t                          *testing.T
	ns, name, token, adminFile string
	srv                        map[int]*testserver.Server
	pods                       map[int]*corev1.Pod
	ready                      map[int]bool
}

func newShardSet(t *testing.T, ns, name string) *shardSet {
	t.Helper()
	s := &shardSet{t: t, ns: ns, name: name, token: waitToken(t, ns, name),
		adminFile: filepath.Join(t.TempDir(), "admin-token"),
		srv:       map[int]*testserver.Server{}, pods: map[int]*corev1.Pod{}, ready: map[int]bool{}}
	if err := os.WriteFile(s.adminFile, []byte(waitAdminToken(t, ns, name)), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// start runs shard i (again, on its address and data, if it ran before)
// and makes its pod ready.
func (s *shardSet) start(i int) {
	s.t.Helper()
	pod := fmt.Sprintf("%s-%d", s.name, i)
	if srv := s.srv[i]; srv != nil {
		srv.Restart(s.t)
	} else {
		srv = testserver.Start(s.t, testserver.Options{Token: s.token,
			Args: []string{"--shard-index", strconv.Itoa(i), "--admin-token-file", s.adminFile}})
		s.srv[i] = srv
		// The address stays the shard's for the whole test, like its DNS
		// name: the topology's URLs are made from it.
		podAddrs.Store(s.ns+"/"+pod, srv.URL)
		s.t.Cleanup(func() { podAddrs.Delete(s.ns + "/" + pod) })
	}
	if p := s.pods[i]; p != nil {
		setPodReady(s.t, p, true)
	} else {
		s.pods[i] = createPod(s.t, s.ns, s.name, pod, true)
	}
	s.ready[i] = true
	s.syncSTS()
}

// stop kills shard i and makes its pod not ready: a pod that is down.
func (s *shardSet) stop(i int) {
	s.t.Helper()
	s.srv[i].Kill()
	setPodReady(s.t, s.pods[i], false)
	s.ready[i] = false
	s.syncSTS()
}

// remove kills shard i and deletes its pod, as the StatefulSet controller
// does after a scale-down.
func (s *shardSet) remove(i int) {
	s.t.Helper()
	s.srv[i].Kill()
	if err := k8s.Delete(bg, s.pods[i], client.GracePeriodSeconds(0)); err != nil {
		s.t.Fatal(err)
	}
	delete(s.pods, i)
	delete(s.ready, i)
	s.syncSTS()
}

// syncSTS sets the StatefulSet's status from the pods, as its controller
// would.
func (s *shardSet) syncSTS() {
	s.t.Helper()
	n, ready := int32(len(s.pods)), int32(0)
	for _, r := range s.ready {
		if r {
			ready++
		}
	}
	setSTSStatus(s.t, s.ns, s.name, func(sts *appsv1.StatefulSet) {
		sts.Status = appsv1.StatefulSetStatus{ObservedGeneration: sts.Generation, Replicas: n, ReadyReplicas: ready, AvailableReplicas: ready,
			UpdatedReplicas: n, CurrentReplicas: n, CurrentRevision: "r1", UpdateRevision: "r1"}
	})
}

func (s *shardSet) client(i int) *cacheclient.Client {
	return shardClient(s.t, s.srv[i].URL, s.token)
}

// waitEpoch waits until the first n shards report epoch with their n URLs
// and no move in force.
func (s *shardSet) waitEpoch(epoch int64, n int) {
	s.t.Helper()
	eventually(s.t, fmt.Sprintf("shards 0-%d on epoch %d", n-1, epoch), func() error {
		return s.onEpoch(epoch, n)
	})
}

func (s *shardSet) onEpoch(epoch int64, n int) error {
	var urls []string
	for i := 0; i < n; i++ {
		urls = append(urls, s.srv[i].URL)
	}
	for i := 0; i < n; i++ {
		got, err := s.client(i).Topology(bg)
		if err != nil {
			return err
		}
		if got.Epoch != epoch || !slices.Equal(got.Shards, urls) || got.Previous != nil {
			return fmt.Errorf("shard %d has epoch %d, shards %q, previous %v; want epoch %d, %q", i, got.Epoch, got.Shards, got.Previous, epoch, urls)
		}
	}
	return nil
}

// settle waits until the first n shards agree on a topology of their n
// URLs without a move, and returns its epoch. (The operator announces the
// shards' DNS names first and the test's addresses once their processes
// run, which takes a varying number of epochs.)
func (s *shardSet) settle(n int) int64 {
	s.t.Helper()
	var epoch int64
	eventually(s.t, fmt.Sprintf("shards 0-%d agree", n-1), func() error {
		got, err := s.client(0).Topology(bg)
		if err != nil {
			return err
		}
		epoch = got.Epoch
		return s.onEpoch(epoch, n)
	})
	return epoch
}

// writeKeys writes n keys through shard 0 (which forwards each to its
// owner) and returns them with their values.
func (s *shardSet) writeKeys(n int) map[string]int64 {
	s.t.Helper()
	c, err := cacheclient.New(s.srv[0].URL, cacheclient.Options{Token: s.token, DirectOnly: true})
	if err != nil {
		s.t.Fatal(err)
	}
	keys := map[string]int64{}
	for i := range n {
		k := fmt.Sprintf("key-%d", i)
		if err := c.Cache("").Set(bg, kv.TextKey(k), kv.Int(int64(i)), kv.SetOptions{}); err != nil {
			s.t.Fatal(err)
		}
		keys[k] = int64(i)
	}
	return keys
}

// checkKeys reads every key back through shard 0, and checks that each of
// the n shards holds exactly the keys it owns: the keys moved, they are not
// only found by a fallback read.
func (s *shardSet) checkKeys(keys map[string]int64, n int) {
	s.t.Helper()
	c, err := cacheclient.New(s.srv[0].URL, cacheclient.Options{Token: s.token, DirectOnly: true})
	if err != nil {
		s.t.Fatal(err)
	}
	lost := 0
	owned := make([]int64, n)
	for k, v := range keys {
		owned[topology.Owner([]byte(k), n)]++
		it, ok, err := c.Cache("").Get(bg, kv.TextKey(k))
		if err != nil {
			s.t.Fatalf("get %s: %v", k, err)
		}
		if !ok || !it.Value.Equal(kv.Int(v)) {
			lost++
		}
	}
	if lost > 0 {
		s.t.Errorf("%d of %d keys lost or changed on %d shards", lost, len(keys), n)
	}
	for i := 0; i < n; i++ {
		in, err := s.client(i).Cache("").Info(bg)
		if err != nil {
			s.t.Fatal(err)
		}
		if in.Count != owned[i] {
			s.t.Errorf("shard %d of %d holds %d keys, owns %d", i, n, in.Count, owned[i])
		}
	}
}

// announcement reads the <name>-topology ConfigMap as it is.
func announcement(t *testing.T, ns, name string) topology.Announcement {
	t.Helper()
	a := parseAnnouncement(get(t, ns, name+"-topology", &corev1.ConfigMap{}).Data[TopologyKey])
	if a == nil {
		t.Fatal("no valid topology in the ConfigMap")
	}
	return *a
}

func replicas(t *testing.T, ns, name string) int32 {
	t.Helper()
	return *get(t, ns, name, &appsv1.StatefulSet{}).Spec.Replicas
}

func hasEvent(t *testing.T, ns, name, reason, note string) error {
	t.Helper()
	var seen []string
	for _, e := range eventsFor(t, ns, name) {
		if e.Reason == reason && strings.Contains(e.Note, note) {
			return nil
		}
		seen = append(seen, e.Reason+": "+e.Note)
	}
	return fmt.Errorf("no %s event with %q among %q", reason, note, seen)
}

// TestRebalanceGrowThenShrink changes the shard count of a cache with real
// servers as its shards: 2 → 3 grows the StatefulSet and announces the move
// only once the new shard is ready; 3 → 1 with a departing shard down
// announces the move, keeps every pod, reports Degraded, and ends the move
// and shrinks the StatefulSet only once that shard is back and has handed
// its keys off. Every key is read back after each change, and each shard
// holds exactly the keys it owns.
func TestRebalanceGrowThenShrink(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "mv", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 2 })
	set := newShardSet(t, ns, "mv")
	set.start(0)
	set.start(1)
	e := set.settle(2)
	keys := set.writeKeys(120)
	set.checkKeys(keys, 2)

	// Grow 2 → 3: the StatefulSet first; nothing is announced while the
	// new shard is not ready.
	updateDiskCache(t, ns, "mv", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 3 })
	// (The reconcile that grows the StatefulSet has written the
	// announcement before.)
	eventually(t, "grown, waiting for the new shard", func() error {
		dc := get(t, ns, "mv", &cachev1alpha1.DiskCache{})
		return errors.Join(
			want(replicas(t, ns, "mv") == 3, "replicas %d", replicas(t, ns, "mv")),
			conditionIs(dc, cachev1alpha1.ConditionProgressing, metav1.ConditionTrue, cachev1alpha1.ReasonScaling))
	})
	if a := announcement(t, ns, "mv"); a.Epoch != e || len(a.Shards) != 2 || a.Previous != nil {
		t.Fatalf("announced %+v before the new shard was ready", a)
	}
	set.start(2)
	set.waitEpoch(e+2, 3) // e+1 moved the keys, e+2 ended the move
	set.checkKeys(keys, 3)
	eventually(t, "move events", func() error {
		return errors.Join(hasEvent(t, ns, "mv", "RebalanceStarted", "from 2 to 3 shards"),
			hasEvent(t, ns, "mv", "RebalanceFinished", "2 to 3 shards"))
	})
	for _, e := range eventsFor(t, ns, "mv") {
		if e.Reason == "RebalanceFinished" && strings.Contains(e.Note, "(0 items") {
			t.Errorf("the end of a move that moved keys reports none: %s", e.Note)
		}
	}

	// Shrink 3 → 1 with shard 2 down: the move is announced to the shards,
	// and the StatefulSet keeps all three while shard 2 cannot hand off.
	set.stop(2)
	updateDiskCache(t, ns, "mv", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 1 })
	eventually(t, "shrink blocked by shard 2", func() error {
		dc := get(t, ns, "mv", &cachev1alpha1.DiskCache{})
		ts := dc.Status.Topology
		if ts == nil || !ts.Rebalancing || ts.PreviousShards != 3 || ts.Shards != 1 || len(ts.Progress) != 3 {
			return fmt.Errorf("status.topology %+v", ts)
		}
		// Shards 0 and 1 have handed off all they can: only shard 2 is
		// left, and the reconcile that wrote this status kept the pods.
		if ts.Progress[0].Rebalancing || ts.Progress[1].Rebalancing || !ts.Progress[2].Rebalancing {
			return fmt.Errorf("progress %+v", ts.Progress)
		}
		if err := conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionTrue, cachev1alpha1.ReasonRebalanceBlocked); err != nil {
			return err
		}
		if c := findCondition(dc, cachev1alpha1.ConditionDegraded); !strings.Contains(c.Message, "shard 2 (pod mv-2 is not ready)") {
			return fmt.Errorf("Degraded message %q", c.Message)
		}
		return conditionIs(dc, cachev1alpha1.ConditionProgressing, metav1.ConditionTrue, cachev1alpha1.ReasonRebalancing)
	})
	if n := replicas(t, ns, "mv"); n != 3 {
		t.Fatalf("StatefulSet shrunk to %d while shard 2 still holds keys", n)
	}
	if a := announcement(t, ns, "mv"); a.Epoch != e+3 || len(a.Shards) != 1 || a.Previous == nil || len(a.Previous.Shards) != 3 {
		t.Fatalf("announced %+v, want epoch %d moving from 3 shards to 1", a, e+3)
	}
	if err := hasEvent(t, ns, "mv", cachev1alpha1.ReasonRebalanceBlocked, "shard 2"); err != nil {
		t.Error(err)
	}
	// The ConfigMap is lost in the middle of the move: the operator takes
	// the move back from what the shards report.
	lost := get(t, ns, "mv-topology", &corev1.ConfigMap{})
	if err := k8s.Delete(bg, lost); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the move taken back from the shards", func() error {
		cm := &corev1.ConfigMap{}
		if err := k8s.Get(bg, client.ObjectKeyFromObject(lost), cm); err != nil {
			return err
		}
		a := parseAnnouncement(cm.Data[TopologyKey])
		return want(cm.UID != lost.UID && a != nil && a.Epoch == e+3 && a.Previous != nil && len(a.Previous.Shards) == 3,
			"ConfigMap %s announces %+v", cm.UID, a)
	})
	if n := replicas(t, ns, "mv"); n != 3 {
		t.Fatalf("StatefulSet shrunk to %d after the ConfigMap was lost", n)
	}

	// Shard 2 comes back: it hands its keys off, the move ends, and only
	// then does the StatefulSet shrink.
	set.start(2)
	eventually(t, "move ended, StatefulSet shrunk", func() error {
		a := announcement(t, ns, "mv")
		n := replicas(t, ns, "mv")
		if n == 1 && (a.Epoch != e+4 || a.Previous != nil) {
			t.Fatalf("StatefulSet shrunk while the announcement is %+v", a)
		}
		return want(n == 1, "replicas %d, announced epoch %d", n, a.Epoch)
	})
	set.remove(1)
	set.remove(2)
	set.waitEpoch(e+4, 1)
	set.checkKeys(keys, 1)
	eventually(t, "available, up to date, not degraded, not rebalancing", func() error {
		dc := get(t, ns, "mv", &cachev1alpha1.DiskCache{})
		if ts := dc.Status.Topology; ts == nil || ts.Rebalancing || ts.Progress != nil || ts.Shards != 1 {
			return fmt.Errorf("status.topology %+v", ts)
		}
		return errors.Join(conditionIs(dc, cachev1alpha1.ConditionAvailable, metav1.ConditionTrue, ""),
			conditionIs(dc, cachev1alpha1.ConditionProgressing, metav1.ConditionFalse, cachev1alpha1.ReasonUpToDate),
			conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionFalse, ""))
	})
	m := reconciler.Metrics
	if s, f := testutil.ToFloat64(m.startedTotal.WithLabelValues(ns, "mv")), testutil.ToFloat64(m.finishedTotal.WithLabelValues(ns, "mv")); s != 2 || f != 2 {
		t.Errorf("metrics: %v moves started, %v finished; want 2 and 2", s, f)
	}
	var d dto.Metric
	if err := m.duration.WithLabelValues(ns, "mv").(prometheus.Histogram).Write(&d); err != nil || d.GetHistogram().GetSampleCount() != 2 {
		t.Errorf("metrics: %d move durations observed (%v), want 2", d.GetHistogram().GetSampleCount(), err)
	}
	if testutil.ToFloat64(m.rebalancing.WithLabelValues(ns, "mv")) != 0 {
		t.Errorf("metrics: %s is not 0 after the moves", MetricRebalancing)
	}
}

// runManager runs a manager of the test's own for the DiskCaches of ns
// labelled otherManagerLabel=label, and returns the function that stops
// it (the end of the test stops it too).
func runManager(t *testing.T, ns, label string) (stop func()) {
	t.Helper()
	opts := CacheOptions()
	opts.DefaultNamespaces = map[string]cache.Config{ns: {}}
	opts.ByObject[&cachev1alpha1.DiskCache{}] = cache.ByObject{Label: klabels.SelectorFromSet(klabels.Set{otherManagerLabel: label})}
	mgr, _, err := newTestManager(restCfg, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the test's manager: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestRebalanceResumesAfterOperatorRestart changes spec.shards to 3 in the
// middle of a move (2 → 1, blocked by shard 1 being down), stops the
// operator and brings shard 1 back: a new operator, with no memory of the
// first, ends the running move first, then starts the next one, and
// converges to 3 shards with every key in place.
func TestRebalanceResumesAfterOperatorRestart(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	const label = "rebalance-restart"
	newDiskCache(t, ns, "rs", func(dc *cachev1alpha1.DiskCache) {
		dc.Labels = map[string]string{otherManagerLabel: label}
		dc.Spec.Shards = 2
	})
	stop := runManager(t, ns, label)
	set := newShardSet(t, ns, "rs")
	set.start(0)
	set.start(1)
	e := set.settle(2)
	keys := set.writeKeys(120)

	set.stop(1)
	updateDiskCache(t, ns, "rs", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 1 })
	eventually(t, "move announced, blocked by shard 1", func() error {
		dc := get(t, ns, "rs", &cachev1alpha1.DiskCache{})
		return conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionTrue, cachev1alpha1.ReasonRebalanceBlocked)
	})
	updateDiskCache(t, ns, "rs", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 3 })
	eventually(t, "the next change waits", func() error {
		dc := get(t, ns, "rs", &cachev1alpha1.DiskCache{})
		c := findCondition(dc, cachev1alpha1.ConditionProgressing)
		return want(c != nil && c.Reason == cachev1alpha1.ReasonRebalancing && strings.Contains(c.Message, "spec.shards 3 comes next"),
			"Progressing %+v", c)
	})
	stop()
	if a := announcement(t, ns, "rs"); a.Epoch != e+1 || len(a.Shards) != 1 || a.Previous == nil {
		t.Fatalf("announced %+v, want epoch %d moving from 2 shards to 1", a, e+1)
	}

	// While no operator runs, shard 1 comes back (it missed the
	// announcement).
	set.start(1)
	runManager(t, ns, label)

	// The running move ends first (e+2, one shard), and the next one
	// waits for shard 2 with the StatefulSet grown to 3.
	eventually(t, "first move ended, StatefulSet grown for the next", func() error {
		a := announcement(t, ns, "rs")
		return want(a.Epoch == e+2 && len(a.Shards) == 1 && a.Previous == nil && replicas(t, ns, "rs") == 3,
			"announced %+v, replicas %d", a, replicas(t, ns, "rs"))
	})
	set.waitEpoch(e+2, 1)
	set.checkKeys(keys, 1)

	set.start(2)
	set.waitEpoch(e+4, 3)
	set.checkKeys(keys, 3)
	if n := replicas(t, ns, "rs"); n != 3 {
		t.Errorf("replicas %d", n)
	}
}

// keepClaim creates the data claim of shard i of DiskCache name, as the
// StatefulSet controller does from its volumeClaimTemplates (envtest runs
// none).
func keepClaim(t *testing.T, ns, name string, i int) {
	t.Helper()
	dc := get(t, ns, name, &cachev1alpha1.DiskCache{})
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("%s-%s-%d", DataVolume, name, i), Labels: labels(dc, ComponentServer)},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}
	if err := k8s.Create(bg, pvc); err != nil {
		t.Fatal(err)
	}
}

// TestRecreatedOnKeptVolumesCarriesOn: a DiskCache deleted with its claims
// kept (whenDeleted: Retain) and created again with another shard count
// finds its shards holding the old layout. The operator carries on from it
// and moves the keys to the new count, so none is lost; and a later change
// back brings no stale copy over what was written or deleted meanwhile.
func TestRecreatedOnKeptVolumesCarriesOn(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	const name = "kept"
	create := func(shards int32) types.UID {
		return newDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
			dc.Spec.Shards = shards
			dc.Spec.Storage.PVCRetentionPolicy.WhenDeleted = cachev1alpha1.RetainPVC
		}).UID
	}
	create(3)
	s := newShardSet(t, ns, name)
	for i := range 3 {
		s.start(i)
		keepClaim(t, ns, name, i) // as the StatefulSet controller makes them
	}
	s.settle(3)
	keys := s.writeKeys(300)

	// Deleted: the pods go, the claims (the servers' data directories)
	// stay. envtest has no garbage collector: the test deletes what it
	// would, all but the Secrets, so the servers keep their tokens; once
	// the operator has seen the DiskCache gone, or a reconcile of the old
	// one would write its ConfigMap again from its status.
	for i := range 3 {
		s.stop(i)
	}
	dc := get(t, ns, name, &cachev1alpha1.DiskCache{})
	if err := k8s.Delete(bg, dc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the DiskCache gone, for the operator too", func() error {
		err := k8s.Get(bg, client.ObjectKeyFromObject(dc), &cachev1alpha1.DiskCache{})
		cerr := mgrClient.Get(bg, client.ObjectKeyFromObject(dc), &cachev1alpha1.DiskCache{})
		return want(apierrors.IsNotFound(err) && apierrors.IsNotFound(cerr), "get: %v; the operator's cache: %v", err, cerr)
	})
	for _, o := range []client.Object{&appsv1.StatefulSet{}, &corev1.ConfigMap{}, &corev1.Pod{}} {
		if err := k8s.DeleteAllOf(bg, o, client.InNamespace(ns), client.MatchingLabels{LabelInstance: name}, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
	}
	s.pods = map[int]*corev1.Pod{}

	// Created again with 4 shards: its first reconcile announces a layout
	// of its own (epoch 1, 4 shards) before any pod runs.
	uid := create(4)
	eventually(t, "a ConfigMap of the new DiskCache", func() error {
		cm := &corev1.ConfigMap{}
		if err := k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: name + "-topology"}, cm); err != nil {
			return err
		}
		return want(len(cm.OwnerReferences) == 1 && cm.OwnerReferences[0].UID == uid, "owners %v", cm.OwnerReferences)
	})
	// No pod on a new claim until the shards on the kept ones have said
	// which layout they hold: a new shard would serve that layout.
	eventually(t, "a StatefulSet of the kept claims only", func() error {
		sts := &appsv1.StatefulSet{}
		if err := k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: name}, sts); err != nil {
			return err
		}
		return want(len(sts.OwnerReferences) == 1 && sts.OwnerReferences[0].UID == uid && *sts.Spec.Replicas == 3,
			"owners %v, replicas %d", sts.OwnerReferences, *sts.Spec.Replicas)
	})
	for i := range 3 {
		s.start(i)
	}
	eventually(t, "the StatefulSet grown for the move", func() error { return want(replicas(t, ns, name) == 4, "replicas %d", replicas(t, ns, name)) })
	s.start(3)
	s.settle(4)
	s.checkKeys(keys, 4)
	if err := hasEvent(t, ns, name, "TopologyFromShards", "carrying on from it"); err != nil {
		t.Error(err)
	}

	// Writes and deletes, then back to 3 shards: none comes back stale.
	c, err := cacheclient.New(s.srv[0].URL, cacheclient.Options{Token: s.token, DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		k := fmt.Sprintf("key-%d", i)
		if i%2 == 0 {
			if _, err := c.Cache("").Delete(bg, kv.TextKey(k)); err != nil {
				t.Fatal(err)
			}
			delete(keys, k)
			continue
		}
		if err := c.Cache("").Set(bg, kv.TextKey(k), kv.Int(int64(1000+i)), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		keys[k] = int64(1000 + i)
	}
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 3 })
	eventually(t, "shrunk", func() error { return want(replicas(t, ns, name) == 3, "replicas %d", replicas(t, ns, name)) })
	s.remove(3)
	s.settle(3)
	s.checkKeys(keys, 3) // each shard holds exactly its keys: no deleted one is back
}
