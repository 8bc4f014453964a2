package controllers

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// announced reads the topology the operator announces (<name>-topology)
// and checks its shape: epoch, shards and a null previous.
func announced(t *testing.T, ns, name string) topology.Announcement {
	t.Helper()
	cm := get(t, ns, name+"-topology", &corev1.ConfigMap{})
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(cm.Data["topology.json"]), &raw); err != nil {
		t.Fatalf("topology.json: %v\n%s", err, cm.Data["topology.json"])
	}
	if len(raw) != 3 || string(raw["previous"]) != "null" {
		t.Errorf("topology.json has %d fields, previous %s: want epoch, shards and previous null", len(raw), raw["previous"])
	}
	var topo topology.Announcement
	if err := json.Unmarshal([]byte(cm.Data["topology.json"]), &topo); err != nil {
		t.Fatal(err)
	}
	return topo
}

func waitAnnounced(t *testing.T, ns, name string, epoch int64, shards int) topology.Announcement {
	t.Helper()
	var topo topology.Announcement
	eventually(t, fmt.Sprintf("topology epoch %d with %d shards", epoch, shards), func() error {
		topo = announced(t, ns, name)
		return want(topo.Epoch == epoch && len(topo.Shards) == shards, "announced %+v", topo)
	})
	return topo
}

func shardURLs(ns, name string, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, fmt.Sprintf("http://%s-%d.%s-peers.%s.svc.cluster.local:8080", name, i, name, ns))
	}
	return out
}

// TestTopologyEpochs: the announced topology lists spec.shards URLs in
// ordinal order, a scale-up grows the StatefulSet first and announces
// nothing while shards cannot be told, and none of it touches the pod
// template (pods never roll for a topology). The admin token is generated
// once and never rewritten. (The moves themselves: rebalance_test.go.)
func TestTopologyEpochs(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "topo", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 3 })
	c := waitChildren(t, ns, "topo")
	if topo := waitAnnounced(t, ns, "topo", 1, 3); !equality.Semantic.DeepEqual(topo.Shards, shardURLs(ns, "topo", 3)) {
		t.Errorf("shards %q, want %q", topo.Shards, shardURLs(ns, "topo", 3))
	}
	if c.topo.Labels[LabelComponent] != ComponentTopology {
		t.Errorf("topology ConfigMap labels %v", c.topo.Labels)
	}
	admin := c.admin.DeepCopy()
	if tok := string(admin.Data["token"]); len(tok) != 43 || tok == string(c.secret.Data["token"]) {
		t.Errorf("admin token of %d characters, equal to the data token: %v", len(tok), tok == string(c.secret.Data["token"]))
	}
	template := c.sts.Spec.Template.DeepCopy()
	sameTemplate := func(when string) {
		t.Helper()
		sts := get(t, ns, "topo", &appsv1.StatefulSet{})
		if !equality.Semantic.DeepEqual(&sts.Spec.Template, template) {
			t.Errorf("%s: the pod template changed (the pods would roll)", when)
		}
	}

	// Scale up: the StatefulSet grows at once, the new shards join the
	// topology only once their pods are ready and every shard can be told
	// (a move needs every shard's answer; these pods have no server, so the
	// topology stays at epoch 1).
	updateDiskCache(t, ns, "topo", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 4 })
	eventually(t, "replicas 4", func() error {
		sts := get(t, ns, "topo", &appsv1.StatefulSet{})
		return want(*sts.Spec.Replicas == 4, "replicas %d", *sts.Spec.Replicas)
	})
	for i := 0; i < 3; i++ {
		createPod(t, ns, "topo", fmt.Sprintf("topo-%d", i), true)
	}
	createPod(t, ns, "topo", "topo-3", true)
	eventually(t, "the operator saw the pods", func() error {
		dc := get(t, ns, "topo", &cachev1alpha1.DiskCache{})
		c := findCondition(dc, cachev1alpha1.ConditionTopologyAnnounced)
		return want(c != nil && strings.Contains(c.Message, "/4 ready shards"), "TopologyAnnounced %+v", c)
	})
	if topo := announced(t, ns, "topo"); topo.Epoch != 1 || len(topo.Shards) != 3 {
		t.Fatalf("announced %+v while no shard could be told", topo)
	}
	sameTemplate("scale to 4")

	// These pods have no server: the topology is not announced, and the
	// status says so without inventing a topology.
	eventually(t, "TopologyAnnounced false", func() error {
		dc := get(t, ns, "topo", &cachev1alpha1.DiskCache{})
		if dc.Status.Topology != nil {
			return fmt.Errorf("status.topology %+v while no server answered", dc.Status.Topology)
		}
		if err := conditionIs(dc, cachev1alpha1.ConditionTopologyAnnounced, metav1.ConditionFalse, cachev1alpha1.ReasonTopologyAnnouncing); err != nil {
			return err
		}
		c := findCondition(dc, cachev1alpha1.ConditionDegraded)
		return want(c != nil && c.Status == metav1.ConditionTrue && strings.Contains(c.Message, "topology epoch 1 not announced: pod topo-0:"),
			"Degraded %+v", c)
	})

	// The admin token was never rewritten, and a token the user puts in
	// its place stays.
	cur := get(t, ns, "topo-admin-token", &corev1.Secret{})
	if cur.ResourceVersion != admin.ResourceVersion {
		t.Errorf("admin token Secret rewritten: resourceVersion %s → %s", admin.ResourceVersion, cur.ResourceVersion)
	}
	cur.Data["token"] = []byte("rotated-by-hand")
	if err := k8s.Update(bg, cur); err != nil {
		t.Fatal(err)
	}
	// A reconcile after the edit: the one that grows the StatefulSet to 5.
	updateDiskCache(t, ns, "topo", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 5 })
	eventually(t, "replicas 5", func() error {
		sts := get(t, ns, "topo", &appsv1.StatefulSet{})
		return want(*sts.Spec.Replicas == 5, "replicas %d", *sts.Spec.Replicas)
	})
	if tok := string(get(t, ns, "topo-admin-token", &corev1.Secret{}).Data["token"]); tok != "rotated-by-hand" {
		t.Errorf("admin token %q after a reconcile, want the user's", tok)
	}
	for _, e := range eventsFor(t, ns, "topo") {
		if strings.Contains(e.Note, string(admin.Data["token"])) {
			t.Fatalf("event carries the admin token: %s", e.Note)
		}
	}
}

// TestTopologyReachesServers runs three real cacheservers as the shards of
// a DiskCache: the operator announces its topology to them (PUT with the
// admin token), after which they are one cache, and status.topology says
// what they report. A shard that comes back without a topology gets it
// again, a scale announces a new epoch, and an epoch the operator did not
// make is overtaken rather than fought.
func TestTopologyReachesServers(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "ring", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 3 })
	tok := waitToken(t, ns, "ring")
	servers := startShards(t, ns, "ring", 3, tok)
	urls := []string{servers[0].URL, servers[1].URL, servers[2].URL}

	// Every server has the announced topology: the processes' URLs, in order.
	onEpoch := func(what string, n int) topology.Announcement {
		t.Helper()
		var topo topology.Announcement
		eventually(t, what, func() error {
			topo = announcement(t, ns, "ring")
			if !equality.Semantic.DeepEqual(topo.Shards, urls[:n]) || topo.Previous != nil {
				return fmt.Errorf("announced %q (previous %v), want %q", topo.Shards, topo.Previous, urls[:n])
			}
			for i, srv := range servers {
				got, err := shardClient(t, srv.URL, tok).Topology(bg)
				if err != nil {
					return err
				}
				if got.Epoch != topo.Epoch || !equality.Semantic.DeepEqual(got.Shards, topo.Shards) || got.Self != i {
					return fmt.Errorf("server %d has %+v, want epoch %d %q", i, got, topo.Epoch, topo.Shards)
				}
			}
			dc := get(t, ns, "ring", &cachev1alpha1.DiskCache{})
			if st := dc.Status.Topology; st == nil || st.Epoch != topo.Epoch || st.Shards != int32(n) || st.ReadyShardsOnEpoch != 3 {
				return fmt.Errorf("status.topology %+v, want epoch %d, %d shards, 3 ready on it", st, topo.Epoch, n)
			}
			return conditionIs(dc, cachev1alpha1.ConditionTopologyAnnounced, metav1.ConditionTrue, cachev1alpha1.ReasonTopologyAnnounced)
		})
		return topo
	}
	first := onEpoch("topology on every server", 3)

	// They are one cache now: keys written through shard 0 spread over the
	// three and read back through shard 2.
	c0, err := cacheclient.New(urls[0], cacheclient.Options{Token: tok, DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := cacheclient.New(urls[2], cacheclient.Options{Token: tok, DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	const keys = 60
	for i := range keys {
		if err := c0.Cache("").Set(bg, kv.TextKey(fmt.Sprint("k", i)), kv.Int(int64(i)), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range keys {
		if _, ok, err := c2.Cache("").Get(bg, kv.TextKey(fmt.Sprint("k", i))); err != nil || !ok {
			t.Fatalf("k%d through shard 2: found %v, %v", i, ok, err)
		}
	}
	for i, srv := range servers {
		if in, err := shardClient(t, srv.URL, tok).Cache("").Info(bg); err != nil || in.Count == 0 || in.Count == keys {
			t.Errorf("shard %d holds %d of %d keys (%v): want a share", i, in.Count, keys, err)
		}
	}

	// Shard 1 comes back from a lost volume, without a topology: it is
	// given the announced one again.
	servers[1].Kill()
	servers[1] = testserver.Start(t, testserver.Options{Token: tok, Listen: servers[1].Addr, Args: servers[1].Args[len(servers[1].Args)-4:]})
	pod1 := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ring-1"}}
	setPodReady(t, pod1, false)
	setPodReady(t, pod1, true)
	onEpoch("topology given to the returning shard", 3)

	// Scale down: a move (epoch+1, with the previous layout), then its end
	// (epoch+2); the departing shard keeps running in this test (nobody
	// plays the StatefulSet controller) and has the last epoch too.
	updateDiskCache(t, ns, "ring", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 2 })
	second := onEpoch("epoch after the scale", 2)
	if second.Epoch != first.Epoch+2 {
		t.Errorf("epoch %d after the scale, want %d", second.Epoch, first.Epoch+2)
	}

	// Someone else announces a newer epoch of this cache's shards to shard
	// 0: the operator carries on from it, as from volumes kept from an
	// earlier DiskCache of this name, instead of being refused forever: a
	// move from its one shard (epoch+6), then the move's end (epoch+7).
	admin, err := cacheclient.New(urls[0], cacheclient.Options{Token: waitAdminToken(t, ns, "ring"), DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.PutTopology(bg, topology.Announcement{Layout: topology.Layout{Epoch: second.Epoch + 5, Shards: urls[:1]}}); err != nil {
		t.Fatal(err)
	}
	updateDiskCache(t, ns, "ring", func(dc *cachev1alpha1.DiskCache) { dc.Labels = map[string]string{"poke": "1"} })
	if third := onEpoch("epoch above the foreign one", 2); third.Epoch != second.Epoch+7 {
		t.Errorf("epoch %d, want %d (a move from the foreign %d, then its end)", third.Epoch, second.Epoch+7, second.Epoch+5)
	}
	if err := hasEvent(t, ns, "ring", "TopologyFromShards", fmt.Sprintf("the shards hold topology epoch %d (1 shards", second.Epoch+5)); err != nil {
		t.Error(err)
	}
	// An old announcement is refused with the server's topology.
	if _, err := admin.PutTopology(bg, topology.Announcement{Layout: topology.Layout{Epoch: 1, Shards: urls[:1]}}); !errors.Is(err, cacheclient.ErrTopologyConflict) {
		t.Errorf("PUT of epoch 1: %v, want a topology conflict", err)
	} else if cur, _ := cacheclient.IsTopologyConflict(err); cur.Epoch != second.Epoch+7 {
		t.Errorf("conflict carries epoch %d", cur.Epoch)
	}
}

// TestAboveServers: the epoch to announce never reuses a server's epoch for
// another list, and never goes below a server's.
func TestAboveServers(t *testing.T) {
	a, b := []string{"http://a"}, []string{"http://a", "http://b"}
	rep := func(epoch int64, shards []string) shardReport {
		return shardReport{topo: &topology.Topology{Announcement: topology.Announcement{Layout: topology.Layout{Epoch: epoch, Shards: shards}}}}
	}
	for _, tc := range []struct {
		name    string
		want    topology.Announcement
		reports []shardReport
		epoch   int64
	}{
		{"no answers", topology.Announcement{Layout: topology.Layout{Epoch: 3, Shards: b}}, []shardReport{{err: errors.New("down")}}, 3},
		{"servers behind", topology.Announcement{Layout: topology.Layout{Epoch: 3, Shards: b}}, []shardReport{rep(2, a), rep(0, nil)}, 3},
		{"servers on it", topology.Announcement{Layout: topology.Layout{Epoch: 3, Shards: b}}, []shardReport{rep(3, b)}, 3},
		{"same epoch, other list", topology.Announcement{Layout: topology.Layout{Epoch: 3, Shards: b}}, []shardReport{rep(3, a), rep(3, b)}, 4},
		{"newer epoch, same list", topology.Announcement{Layout: topology.Layout{Epoch: 3, Shards: b}}, []shardReport{rep(7, b), rep(2, a)}, 7},
		{"newer epoch, other list", topology.Announcement{Layout: topology.Layout{Epoch: 3, Shards: b}}, []shardReport{rep(7, a)}, 8},
		{"newer, same list, but another at it with another list", topology.Announcement{Layout: topology.Layout{Epoch: 1, Shards: b}},
			[]shardReport{rep(7, b), rep(7, a)}, 8},
		{"raised onto another server's epoch", topology.Announcement{Layout: topology.Layout{Epoch: 1, Shards: b}},
			[]shardReport{rep(4, a), rep(5, a)}, 6},
	} {
		if got := aboveServers(tc.want, tc.reports); got != tc.epoch {
			t.Errorf("%s: epoch %d, want %d", tc.name, got, tc.epoch)
		}
	}
}

// TestLayoutFromShardsAfterARecreate replays the reconciles of a DiskCache
// deleted with 2 shards on epoch 1 and created again with 3 on the kept
// claims, the new, empty pod ready first (seen on the cluster): the
// operator's own first layout, held by that pod, is never taken for the
// kept volumes' history, whichever reconcile sees it.
func TestLayoutFromShardsAfterARecreate(t *testing.T) {
	r := &DiskCacheReconciler{ClusterDomain: DefaultClusterDomain}
	dc := &cachev1alpha1.DiskCache{ObjectMeta: metav1.ObjectMeta{Name: "recreate", Namespace: "ns"}}
	layout := func(epoch int64, n int) *topology.Announcement {
		return &topology.Announcement{Layout: topology.Layout{Epoch: epoch, Shards: r.shardURLs(dc, n)}}
	}
	holds := func(shard int, a *topology.Announcement) shardReport {
		return shardReport{pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("recreate-%d", shard)}},
			topo: &topology.Topology{Announcement: *a, Self: shard}}
	}
	fresh, kept := layout(1, 3), layout(1, 2)
	for _, tc := range []struct {
		name        string
		configMap   *topology.Announcement
		reportedAll bool
		announced   []string
		reports     []shardReport
		want        *topology.Announcement
	}{
		{"the new pod alone holds the first layout", fresh, false, []string{"1:3"},
			[]shardReport{holds(2, fresh)}, fresh},
		{"a kept shard reports its layout", fresh, false, []string{"1:3"},
			[]shardReport{holds(0, kept), holds(2, fresh)}, kept},
		{"the kept layout in the ConfigMap, the new pod still on the first", kept, false, []string{"1:3", "1:2"},
			[]shardReport{holds(0, kept), holds(2, fresh)}, kept},
		{"the new pod reported first", kept, false, []string{"1:3", "1:2"},
			[]shardReport{holds(2, fresh), holds(0, kept)}, kept},
		{"every shard reported", kept, true, nil,
			[]shardReport{holds(0, kept), holds(1, kept), holds(2, fresh)}, kept},
		{"a newer epoch on a kept volume", fresh, false, []string{"1:3"},
			[]shardReport{holds(0, layout(4, 2)), holds(2, fresh)}, layout(4, 2)},
	} {
		got := r.layoutFromShards(dc, tc.configMap, tc.reports, tc.reportedAll, tc.announced)
		if got == nil || layoutID(*got) != layoutID(*tc.want) {
			t.Errorf("%s: carries on from %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestRememberLayout(t *testing.T) {
	var got []string
	for i := range maxAnnouncedLayouts + 5 {
		got = rememberLayout(got, fmt.Sprintf("%d:3", i+1))
		got = rememberLayout(got, fmt.Sprintf("%d:3", i+1)) // once only
	}
	if len(got) != maxAnnouncedLayouts || got[0] != "6:3" || got[len(got)-1] != fmt.Sprintf("%d:3", maxAnnouncedLayouts+5) {
		t.Errorf("kept %d: %v; want the newest %d", len(got), got, maxAnnouncedLayouts)
	}
}

// TestMoveStart: the start of a move comes from the ConfigMap's record;
// with the ConfigMap (or its record) lost, from status.topology when that
// showed the same move, so that a lost ConfigMap does not restart the
// move's clock; never from a record or a status of another move.
func TestMoveStart(t *testing.T) {
	urls := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("http://s%d", i)
		}
		return out
	}
	move := topology.Announcement{Layout: topology.Layout{Epoch: 4, Shards: urls(3)}, Previous: &topology.Layout{Epoch: 3, Shards: urls(2)}}
	other := topology.Announcement{Layout: topology.Layout{Epoch: 5, Shards: urls(4)}, Previous: &topology.Layout{Epoch: 4, Shards: urls(3)}}
	cmAt := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	stAt := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{RebalanceStartedAnno: cmAt.Format(time.RFC3339)}}}
	bare := &corev1.ConfigMap{}
	status := func(epoch int64, previous int32) *cachev1alpha1.TopologyStatus {
		return &cachev1alpha1.TopologyStatus{Epoch: epoch, Shards: 3, Rebalancing: true, PreviousShards: previous, RebalanceStartTime: &metav1.Time{Time: stAt}}
	}
	for _, tc := range []struct {
		name     string
		existing *corev1.ConfigMap
		current  *topology.Announcement
		want     topology.Announcement
		st       *cachev1alpha1.TopologyStatus
		start    *time.Time
	}{
		{"recorded on the ConfigMap", cm, &move, move, status(4, 2), &cmAt},
		{"ConfigMap lost, status of the same move", nil, &move, move, status(4, 2), &stAt},
		{"ConfigMap without its record, status of the same move", bare, &move, move, status(4, 2), &stAt},
		{"ConfigMap lost, status of another epoch", nil, &move, move, status(3, 2), nil},
		{"ConfigMap lost, status with other previous shards", nil, &move, move, status(4, 3), nil},
		{"ConfigMap lost, status not rebalancing", nil, &move, move, &cachev1alpha1.TopologyStatus{Epoch: 4, Shards: 3}, nil},
		{"recorded for the move before", cm, &move, other, status(5, 3), nil},
	} {
		got := moveStart(tc.existing, tc.current, tc.want, tc.st)
		if (got == nil) != (tc.start == nil) || got != nil && !got.Equal(*tc.start) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.start)
		}
	}
}
