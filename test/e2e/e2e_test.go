//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// 1. A DiskCache comes up: pod Ready, PVC Bound, Services in cluster DNS,
// status Available with the printer columns filled.
func TestDiskCacheAvailable(t *testing.T) {
	p := newPhases(t)
	defer p.done()
	p.next("create")
	ns := newNamespace(t, "avail")
	const name = "avail"
	createDiskCache(t, newDiskCache(ns, name, nil))

	p.next("wait Available")
	dc := waitAvailable(t, ns, name, 4*time.Minute)
	if dc.Status.Shards != 1 || dc.Status.ReadyShards != 1 {
		t.Errorf("status shards %d ready %d, want 1/1", dc.Status.Shards, dc.Status.ReadyShards)
	}
	if want := fmt.Sprintf("http://%s.%s.svc:8080", name, ns); dc.Status.Endpoint != want {
		t.Errorf("status.endpoint %q, want %q", dc.Status.Endpoint, want)
	}
	pod := cachePod(t, ns, name, 0)
	if !podReady(pod) {
		t.Errorf("pod %s not Ready", pod.Name)
	}
	pvc := &corev1.PersistentVolumeClaim{}
	if err := k8s.Get(ctxT(t, 30*time.Second), ctrlclient.ObjectKey{Namespace: ns, Name: "data-" + name + "-0"}, pvc); err != nil {
		t.Fatalf("get PVC: %v", err)
	}
	if pvc.Status.Phase != corev1.ClaimBound {
		t.Errorf("PVC %s is %s, want Bound", pvc.Name, pvc.Status.Phase)
	}

	p.next("printer columns")
	out, err := kubectl(t, "-n", ns, "get", "dcache", name, "-o", "wide", "--no-headers")
	if err != nil {
		t.Fatalf("kubectl get dcache: %v\n%s", err, out)
	}
	t.Logf("kubectl get dcache -o wide: %s", strings.TrimSpace(out))
	hdr, _ := kubectl(t, "-n", ns, "get", "dcache", name, "-o", "wide")
	t.Logf("with headers:\n%s", hdr)
	// Read by header: SIZE LIMIT and LAST MAINTENANCE are two words each.
	lines := strings.Split(strings.TrimSpace(hdr), "\n")
	header := strings.Fields(strings.NewReplacer("SIZE LIMIT", "SIZE-LIMIT", "LAST MAINTENANCE", "LAST-MAINTENANCE", "ROUTED SHARDS", "ROUTED-SHARDS", "TOKEN ROTATION", "TOKEN-ROTATION").Replace(lines[0]))
	fields := strings.Fields(out)
	column := map[string]string{}
	for i, h := range header {
		if i < len(fields) {
			column[h] = fields[i]
		}
	}
	if column["NAME"] != name || column["SHARDS"] != "1" || column["READY"] != "1" || column["DEGRADED"] != "False" ||
		column["SIZE-LIMIT"] != "512Mi" || column["POLICY"] != string(cachev1alpha1.EvictionLeastRecentlyStored) {
		t.Errorf("printer columns %v, want %s, 1 shard, 1 ready, not degraded, 512Mi, %s", column, name, cachev1alpha1.EvictionLeastRecentlyStored)
	}

	p.next("toolbox pod")
	tb := startToolbox(t, ns)
	svc := &corev1.Service{}
	if err := k8s.Get(ctxT(t, 30*time.Second), ctrlclient.ObjectKey{Namespace: ns, Name: name}, svc); err != nil {
		t.Fatal(err)
	}

	p.next("cluster DNS")
	lookup := func(host, want string) {
		eventually(t, time.Minute, "DNS "+host+" -> "+want, func(context.Context) (bool, string) {
			out, err := kubectl(t, "-n", ns, "exec", tb, "--", "/toolbox", "lookup", host)
			return err == nil && strings.TrimSpace(out) == want, fmt.Sprintf("%v: %s", err, out)
		})
	}
	lookup(fmt.Sprintf("%s.%s.svc.cluster.local", name, ns), svc.Spec.ClusterIP)
	lookup(fmt.Sprintf("%s-0.%s-peers.%s.svc.cluster.local", name, name, ns), pod.Status.PodIP)

	p.next("set/get from a pod via DNS")
	tok := token(t, ns, name)
	url := fmt.Sprintf("http://%s.%s.svc.cluster.local:8080/v1/keys/from-pod", name, ns)
	out, err = kubectl(t, "-n", ns, "exec", tb, "--", "/toolbox", "http", "-f", "-X", "PUT",
		"-H", "Authorization: Bearer "+tok, "-H", "Diskcache-Value-Type: text", "-d", "hello e2e", url,
		"--", "-f", "-H", "Authorization: Bearer "+tok, url)
	if err != nil || !strings.HasSuffix(strings.TrimSpace(out), "hello e2e") {
		t.Errorf("set/get through %s from a pod: %v\n%s", url, err, out)
	}
	out, err = kubectl(t, "-n", ns, "exec", tb, "--", "/toolbox", "http", "-code", url)
	if err != nil || strings.TrimSpace(out) != "401" {
		t.Errorf("in-cluster request without the token: %v %q, want 401", err, out)
	}
}

// item i of the data test: mixed sizes (every 25th ≥ 32 KiB, so
// file-backed), bytes or text values, text or integer keys, tagged by i%7
// (every 10th untagged).
func dataItem(i int) cacheclient.SetItem {
	r := rand.New(rand.NewPCG(uint64(i), 42))
	var n int
	switch {
	case i%25 == 0:
		n = 32*1024 + r.IntN(32*1024)
	case i%5 == 0:
		n = 1024 + r.IntN(8*1024)
	default:
		n = 1 + r.IntN(300)
	}
	it := cacheclient.SetItem{Key: kv.TextKey(fmt.Sprintf("key-%05d", i))}
	if i%3 == 0 {
		b := make([]byte, n)
		for j := range b {
			b[j] = 'a' + byte(r.IntN(26))
		}
		it.Value = kv.Text(string(b))
	} else {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		it.Value = kv.Bytes(b)
	}
	if i%10 != 0 {
		it.Opts.Tag = kv.TextKey("tag-" + strconv.Itoa(i%7))
	}
	if i%2 == 0 {
		it.Key = kv.IntKey(int64(1_000_000 + i))
	}
	return it
}

func writeItems(t *testing.T, c *cacheclient.Cache, from, to, batch int) {
	t.Helper()
	ctx := ctxT(t, 5*time.Minute)
	for lo := from; lo < to; lo += batch {
		hi := min(lo+batch, to)
		items := make([]cacheclient.SetItem, 0, hi-lo)
		for i := lo; i < hi; i++ {
			items = append(items, dataItem(i))
		}
		res, err := c.SetMany(ctx, items)
		if err != nil {
			t.Fatalf("SetMany [%d,%d): %v", lo, hi, err)
		}
		if res.Stored != len(items) || len(res.Failed) != 0 {
			t.Fatalf("SetMany [%d,%d): stored %d of %d, failed %+v", lo, hi, res.Stored, len(items), res.Failed)
		}
	}
}

// checkItems reads items [from,to) back and compares values and tags.
func checkItems(t *testing.T, c *cacheclient.Cache, from, to, batch int) {
	t.Helper()
	ctx := ctxT(t, 5*time.Minute)
	bad := 0
	for lo := from; lo < to; lo += batch {
		hi := min(lo+batch, to)
		keys := make([]kv.Key, 0, hi-lo)
		for i := lo; i < hi; i++ {
			keys = append(keys, dataItem(i).Key)
		}
		res, err := c.GetMany(ctx, keys)
		if err != nil {
			t.Fatalf("GetMany [%d,%d): %v", lo, hi, err)
		}
		for j, r := range res {
			want := dataItem(lo + j)
			switch {
			case !r.Found:
				t.Errorf("key %v: missing", want.Key)
			case r.Value.Type != want.Value.Type || !bytes.Equal(r.Value.Data, want.Value.Data):
				t.Errorf("key %v: value %s/%d bytes, want %s/%d bytes", want.Key, r.Value.Type, len(r.Value.Data), want.Value.Type, len(want.Value.Data))
			case r.Tag != want.Opts.Tag:
				t.Errorf("key %v: tag %v, want %v", want.Key, r.Tag, want.Opts.Tag)
			default:
				continue
			}
			if bad++; bad > 20 {
				t.Fatalf("too many bad keys")
			}
		}
	}
}

// 2. 10,000 keys survive the cache pod being deleted and recreated on the
// same PVC.
func TestDataSurvivesPodDeletion(t *testing.T) {
	const n = 10000
	p := newPhases(t)
	defer p.done()
	p.next("create + Available")
	ns := newNamespace(t, "data")
	const name = "data"
	createDiskCache(t, newDiskCache(ns, name, nil))
	waitAvailable(t, ns, name, 4*time.Minute)
	c := newCacheClient(t, serviceURL(t, ns, name), token(t, ns, name))

	p.next(fmt.Sprintf("write %d keys (SetMany)", n))
	writeItems(t, c, 0, n, 500)
	info, err := c.Info(ctxT(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after writing: count %d volume %d bytes", info.Count, info.Volume)
	if info.Count != n {
		t.Errorf("info count %d, want %d", info.Count, n)
	}

	p.next("delete pod, wait for the new one")
	old := cachePod(t, ns, name, 0)
	claim := ""
	for _, v := range old.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			claim = v.PersistentVolumeClaim.ClaimName
		}
	}
	pvc := &corev1.PersistentVolumeClaim{}
	if err := k8s.Get(ctxT(t, 30*time.Second), ctrlclient.ObjectKey{Namespace: ns, Name: claim}, pvc); err != nil {
		t.Fatalf("get PVC %q: %v", claim, err)
	}
	if err := k8s.Delete(ctxT(t, 30*time.Second), old); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, "a new Ready pod "+old.Name, func(ctx context.Context) (bool, string) {
		pod := &corev1.Pod{}
		if err := k8s.Get(ctx, ctrlclient.ObjectKeyFromObject(old), pod); err != nil {
			return false, err.Error()
		}
		return pod.UID != old.UID && podReady(pod), fmt.Sprintf("uid %s phase %s", pod.UID, pod.Status.Phase)
	})
	waitAvailable(t, ns, name, 2*time.Minute)
	pod := cachePod(t, ns, name, 0)
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName != claim {
			t.Errorf("new pod uses claim %s, want %s", v.PersistentVolumeClaim.ClaimName, claim)
		}
	}
	pvc2 := &corev1.PersistentVolumeClaim{}
	if err := k8s.Get(ctxT(t, 30*time.Second), ctrlclient.ObjectKey{Namespace: ns, Name: claim}, pvc2); err != nil {
		t.Fatal(err)
	}
	if pvc2.UID != pvc.UID || pvc2.Spec.VolumeName != pvc.Spec.VolumeName {
		t.Errorf("PVC changed: uid %s→%s volume %s→%s", pvc.UID, pvc2.UID, pvc.Spec.VolumeName, pvc2.Spec.VolumeName)
	}

	p.next(fmt.Sprintf("read %d keys back (GetMany)", n))
	// The Service may still route to the old endpoint for a moment: read
	// through a fresh client once the Service answers.
	c = newCacheClient(t, serviceURL(t, ns, name), token(t, ns, name))
	checkItems(t, c, 0, n, 1000)
}

// settings returns GET /v1/settings of a pod (by its IP).
func podSettings(ctx context.Context, t *testing.T, pod *corev1.Pod, tok string) (settings.Settings, error) {
	c, err := cacheclient.New(podURL(pod), cacheclient.Options{Token: tok, Retries: -1})
	if err != nil {
		return settings.Settings{}, err
	}
	return c.Cache("").Settings(ctx)
}

// podConfig reads a pod's start-up configuration (GET /v1/config).
func podConfig(ctx context.Context, pod *corev1.Pod, tok string) (map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, podURL(pod)+"/v1/config", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/config: %s", resp.Status)
	}
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("GET /v1/config: %w", err)
	}
	return out, nil
}

// 3. Live settings apply without a restart; a non-live one rolls the pod
// and keeps the data.
func TestSettings(t *testing.T) {
	p := newPhases(t)
	defer p.done()
	p.next("create + Available")
	ns := newNamespace(t, "settings")
	const name = "settings"
	createDiskCache(t, newDiskCache(ns, name, nil))
	waitAvailable(t, ns, name, 4*time.Minute)
	tok := token(t, ns, name)
	c := newCacheClient(t, serviceURL(t, ns, name), tok)
	writeItems(t, c, 0, 500, 500)
	before := cachePod(t, ns, name, 0)
	st, err := podSettings(ctxT(t, 30*time.Second), t, before, tok)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("settings before: %v", st)
	cfg, err := podConfig(ctxT(t, 30*time.Second), before, tok)
	if err != nil {
		t.Fatal(err)
	}
	if cfg["database_timeout_seconds"] != 1.0 {
		t.Fatalf("before: database_timeout_seconds %v, want the default 1", cfg["database_timeout_seconds"])
	}
	// The server re-executed itself in the pod with the runtime setting
	// that keeps sysmon from sleeping deeply (cmd/cacheserver/sysmon.go).
	if gd, _ := cfg["go_debug"].(string); !strings.Contains(gd, "schedtrace=2147483647") {
		t.Fatalf("the shard runs with GODEBUG %q, want schedtrace=2147483647 in it", gd)
	}
	if cfg["page_size"] != 2048.0 || !allEqual(cfg["database_page_sizes"], 2048.0) {
		t.Fatalf("before: page_size %v, database_page_sizes %v; want 2048, the default", cfg["page_size"], cfg["database_page_sizes"])
	}

	p.next("live change (evictionPolicy, sizeLimit)")
	newLimit := resource.MustParse("256Mi")
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.EvictionPolicy = cachev1alpha1.EvictionLeastRecentlyUsed
		dc.Spec.SizeLimit = &newLimit
	})
	eventually(t, 2*time.Minute, "settings applied on the pod", func(ctx context.Context) (bool, string) {
		st, err := podSettings(ctx, t, before, tok)
		if err != nil {
			return false, err.Error()
		}
		want := settings.Settings{EvictionPolicy: settings.Ptr(settings.PolicyLeastRecentlyUsed), SizeLimit: settings.Ptr(newLimit.Value())}
		return want.Diff(st).IsZero(), st.String()
	})
	waitAvailable(t, ns, name, time.Minute)
	after := cachePod(t, ns, name, 0)
	if after.UID != before.UID || restartCount(after) != restartCount(before) {
		t.Errorf("live change restarted the pod: uid %s→%s restarts %d→%d", before.UID, after.UID, restartCount(before), restartCount(after))
	}
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctxT(t, 30*time.Second), ctrlclient.ObjectKey{Namespace: ns, Name: name + "-config"}, cm); err != nil {
		t.Fatal(err)
	}
	t.Logf("ConfigMap after the live change:\n%s", cm.Data["cacheserver.conf"])

	p.next("non-live change (databaseTimeout, pageSize): rolling restart")
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.DatabaseTimeout = &metav1.Duration{Duration: 3 * time.Second}
		dc.Spec.PageSize = ptr.To[int32](4096)
	})
	eventually(t, 3*time.Minute, "pod replaced", func(ctx context.Context) (bool, string) {
		pod := &corev1.Pod{}
		if err := k8s.Get(ctx, ctrlclient.ObjectKeyFromObject(before), pod); err != nil {
			return false, err.Error()
		}
		return pod.UID != before.UID && podReady(pod), fmt.Sprintf("uid %s ready %v", pod.UID, podReady(pod))
	})
	waitStatefulSetSettled(t, ns, name, 3*time.Minute)
	waitAvailable(t, ns, name, 2*time.Minute)

	p.next("no key lost, live settings kept")
	rolled := cachePod(t, ns, name, 0)
	c = newCacheClient(t, serviceURL(t, ns, name), tok)
	checkItems(t, c, 0, 500, 500)
	st, err = podSettings(ctxT(t, 30*time.Second), t, rolled, tok)
	if err != nil {
		t.Fatal(err)
	}
	if want := (settings.Settings{EvictionPolicy: settings.Ptr(settings.PolicyLeastRecentlyUsed), SizeLimit: settings.Ptr(newLimit.Value())}); !want.Diff(st).IsZero() {
		t.Errorf("after the restart: %v", st)
	}
	// The rolled pod runs with the new value, not just a new pod template.
	cfg, err = podConfig(ctxT(t, 30*time.Second), rolled, tok)
	if err != nil {
		t.Fatal(err)
	}
	if cfg["database_timeout_seconds"] != 3.0 {
		t.Errorf("after the restart the server runs with database_timeout_seconds %v, want 3", cfg["database_timeout_seconds"])
	}
	// New databases would get 4096-byte pages; those on the volume keep
	// theirs, which the operator tells in an Event.
	if cfg["page_size"] != 4096.0 || !allEqual(cfg["database_page_sizes"], 2048.0) {
		t.Errorf("after the restart: page_size %v, database_page_sizes %v; want 4096, and 2048 kept", cfg["page_size"], cfg["database_page_sizes"])
	}
	eventually(t, 2*time.Minute, "a PageSizeKept event about "+rolled.Name, func(context.Context) (bool, string) {
		var notes []string
		for _, e := range eventsOf(t, ns, name) {
			if e.Reason == cachev1alpha1.ReasonPageSizeKept {
				if strings.HasPrefix(e.Note, "pod "+rolled.Name+": of its 8 fanout databases, 8 with pages of 2048 bytes keep") {
					return true, ""
				}
				notes = append(notes, e.Note)
			}
		}
		return false, fmt.Sprintf("PageSizeKept events: %q", notes)
	})
}

// allEqual reports whether v, a JSON array, is not empty and holds only want.
func allEqual(v any, want any) bool {
	a, ok := v.([]any)
	if !ok || len(a) == 0 {
		return false
	}
	for _, x := range a {
		if x != want {
			return false
		}
	}
	return true
}

// 4. The run-maintenance annotation expires dead keys and records the run in
// status.maintenance and an Event.
func TestMaintenanceExpires(t *testing.T) {
	p := newPhases(t)
	defer p.done()
	p.next("create + Available")
	ns := newNamespace(t, "maint")
	const name = "maint"
	createDiskCache(t, newDiskCache(ns, name, func(dc *cachev1alpha1.DiskCache) {
		// Only the annotation triggers runs in this test.
		dc.Spec.Maintenance.Schedule = "0 0 1 1 *"
		// Writes cull up to cullLimit expired items each (as in
		// python-diskcache): 0 leaves the dead keys to maintenance.
		dc.Spec.CullLimit = ptr.To[int32](0)
	}))
	waitAvailable(t, ns, name, 4*time.Minute)
	c := newCacheClient(t, serviceURL(t, ns, name), token(t, ns, name))

	p.next("write dead and live keys")
	const dead, live = 50, 10
	var items []cacheclient.SetItem
	for i := range dead {
		items = append(items, cacheclient.SetItem{Key: kv.TextKey(fmt.Sprintf("dead-%d", i)), Value: kv.Text("x"),
			Opts: kv.SetOptions{Expire: kv.ExpireAfterSeconds(0)}})
	}
	for i := range live {
		items = append(items, cacheclient.SetItem{Key: kv.TextKey(fmt.Sprintf("live-%d", i)), Value: kv.Text("y")})
	}
	if res, err := c.SetMany(ctxT(t, time.Minute), items); err != nil || res.Stored != len(items) {
		t.Fatalf("SetMany: %+v %v", res, err)
	}
	info, err := c.Info(ctxT(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before maintenance: count %d", info.Count)
	if info.Count != dead+live {
		t.Errorf("count before maintenance %d, want %d (dead keys stored)", info.Count, dead+live)
	}

	p.next("annotate run-maintenance, wait for status")
	trigger := strconv.FormatInt(time.Now().UnixNano(), 10)
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		if dc.Annotations == nil {
			dc.Annotations = map[string]string{}
		}
		dc.Annotations["cache.diskcache.dev/run-maintenance"] = trigger
	})
	var ms *cachev1alpha1.MaintenanceStatus
	eventually(t, 2*time.Minute, "status.maintenance of the triggered run", func(ctx context.Context) (bool, string) {
		dc := &cachev1alpha1.DiskCache{}
		if err := k8s.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: name}, dc); err != nil {
			return false, err.Error()
		}
		ms = dc.Status.Maintenance
		return ms != nil && ms.LastTrigger == trigger, fmt.Sprintf("%+v", ms)
	})
	t.Logf("status.maintenance: %+v", *ms)
	if ms.Expired != dead {
		t.Errorf("status.maintenance.expired %d, want %d", ms.Expired, dead)
	}
	if ms.LastError != "" || ms.LastSuccessfulTime == nil || ms.LastScheduleTime == nil ||
		!ms.LastSuccessfulTime.Equal(ms.LastScheduleTime) {
		t.Errorf("status.maintenance not a success: %+v", *ms)
	}
	if len(ms.PerShard) != 1 || ms.PerShard[0].Expired != dead || ms.PerShard[0].Error != "" {
		t.Errorf("status.maintenance.perShard %+v, want one shard with %d expired", ms.PerShard, dead)
	}

	p.next("event MaintenanceSucceeded")
	eventually(t, time.Minute, "Event MaintenanceSucceeded", func(ctx context.Context) (bool, string) {
		var evs corev1.EventList
		if err := k8s.List(ctx, &evs, ctrlclient.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			seen = append(seen, e.Reason+": "+e.Message)
			if e.Reason == "MaintenanceSucceeded" && e.Type == corev1.EventTypeNormal &&
				e.InvolvedObject.Kind == "DiskCache" && e.InvolvedObject.Name == name {
				t.Logf("event: %s %s: %s", e.Type, e.Reason, e.Message)
				return true, ""
			}
		}
		return false, fmt.Sprintf("events %q", seen)
	})

	p.next("dead keys gone, live keys kept")
	info, err = c.Info(ctxT(t, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if info.Count != live {
		t.Errorf("count after maintenance %d, want %d", info.Count, live)
	}
	for i := range live {
		if _, ok, err := c.Get(ctxT(t, time.Minute), kv.TextKey(fmt.Sprintf("live-%d", i))); err != nil || !ok {
			t.Errorf("live-%d: found %v err %v", i, ok, err)
		}
	}
}

// 5. A request without (or with a wrong) token is refused with 401.
func TestAuth(t *testing.T) {
	p := newPhases(t)
	defer p.done()
	p.next("create + Available")
	ns := newNamespace(t, "auth")
	const name = "auth"
	createDiskCache(t, newDiskCache(ns, name, nil))
	waitAvailable(t, ns, name, 4*time.Minute)
	base := serviceURL(t, ns, name)
	tok := token(t, ns, name)

	p.next("requests")
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	do := func(method, path, auth string) int {
		req, err := http.NewRequest(method, base+path, strings.NewReader("v"))
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		method, path, auth string
		want               int
	}{
		{http.MethodGet, "/v1/keys/k", "", http.StatusUnauthorized},
		{http.MethodPut, "/v1/keys/k", "", http.StatusUnauthorized},
		{http.MethodGet, "/v1/settings", "", http.StatusUnauthorized},
		{http.MethodGet, "/v1/keys/k", "Bearer wrong-" + tok, http.StatusUnauthorized},
		{http.MethodPut, "/v1/keys/k", "Bearer " + tok, http.StatusNoContent},
		{http.MethodGet, "/v1/keys/k", "Bearer " + tok, http.StatusOK},
	} {
		got := do(tc.method, tc.path, tc.auth)
		if got != tc.want && !(tc.want == http.StatusNoContent && got/100 == 2) {
			t.Errorf("%s %s (auth %v): %d, want %d", tc.method, tc.path, tc.auth != "", got, tc.want)
		}
	}
	var e *cacheclient.Error
	_, _, err := newCacheClient(t, base, "").Get(ctxT(t, 30*time.Second), kv.TextKey("k"))
	if !errors.As(err, &e) {
		t.Errorf("Go client without a token: %v, want a *client.Error (401)", err)
	} else {
		t.Logf("Go client without a token: %v", err)
	}
}

// 6. kubectl scale dcache --replicas=3: the StatefulSet follows.
func TestScale(t *testing.T) {
	p := newPhases(t)
	defer p.done()
	p.next("create + Available")
	ns := newNamespace(t, "scale")
	const name = "scale"
	createDiskCache(t, newDiskCache(ns, name, nil))
	waitAvailable(t, ns, name, 4*time.Minute)

	p.next("kubectl scale --replicas=3")
	if out, err := kubectl(t, "-n", ns, "scale", "dcache/"+name, "--replicas=3"); err != nil {
		t.Fatalf("kubectl scale: %v\n%s", err, out)
	}
	if dc := getDiskCache(t, ns, name); dc.Spec.Shards != 3 {
		t.Errorf("spec.shards %d after kubectl scale, want 3", dc.Spec.Shards)
	}
	eventually(t, time.Minute, "StatefulSet replicas 3", func(ctx context.Context) (bool, string) {
		sts := &appsv1.StatefulSet{}
		if err := k8s.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: name}, sts); err != nil {
			return false, err.Error()
		}
		return ptr.Deref(sts.Spec.Replicas, 0) == 3, fmt.Sprintf("replicas %v", ptr.Deref(sts.Spec.Replicas, 0))
	})

	p.next("3 shards Available")
	dc := waitAvailable(t, ns, name, 4*time.Minute)
	t.Logf("status: shards %d ready %d topology %+v selector %q", dc.Status.Shards, dc.Status.ReadyShards, dc.Status.Topology, dc.Status.Selector)
	out, _ := kubectl(t, "-n", ns, "get", "dcache", name, "-o", "wide")
	t.Logf("kubectl get dcache -o wide:\n%s", out)

	p.next("scale subresource reads back")
	out, err := kubectl(t, "-n", ns, "get", "--raw", fmt.Sprintf("/apis/cache.diskcache.dev/v1alpha1/namespaces/%s/diskcaches/%s/scale", ns, name))
	if err != nil || !strings.Contains(out, `"replicas":3`) {
		t.Errorf("scale subresource: %v %s", err, out)
	}
}

// 7. Deleting a DiskCache garbage-collects its children; PVCs follow
// spec.storage.pvcRetentionPolicy.whenDeleted.
func TestDeleteGarbageCollects(t *testing.T) {
	p := newPhases(t)
	defer p.done()
	p.next("create two + Available")
	ns := newNamespace(t, "delete")
	retain, del := "retain", "delete"
	createDiskCache(t, newDiskCache(ns, retain, nil))
	createDiskCache(t, newDiskCache(ns, del, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Storage.PVCRetentionPolicy.WhenDeleted = cachev1alpha1.DeletePVC
	}))
	waitAvailable(t, ns, retain, 4*time.Minute)
	waitAvailable(t, ns, del, 4*time.Minute)
	if dc := getDiskCache(t, ns, retain); dc.Spec.Storage.PVCRetentionPolicy.WhenDeleted != cachev1alpha1.RetainPVC {
		t.Errorf("default whenDeleted %q, want Retain", dc.Spec.Storage.PVCRetentionPolicy.WhenDeleted)
	}
	writeItems(t, newCacheClient(t, serviceURL(t, ns, retain), token(t, ns, retain)), 0, 300, 300)

	children := func(name string) []ctrlclient.Object {
		key := func(n string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: n} }
		return []ctrlclient.Object{
			&appsv1.StatefulSet{ObjectMeta: key(name)},
			&corev1.Service{ObjectMeta: key(name)},
			&corev1.Service{ObjectMeta: key(name + "-peers")},
			&corev1.ConfigMap{ObjectMeta: key(name + "-config")},
			&corev1.Secret{ObjectMeta: key(name + "-token")},
			&policyv1.PodDisruptionBudget{ObjectMeta: key(name)},
			&corev1.Pod{ObjectMeta: key(name + "-0")},
		}
	}
	for _, name := range []string{retain, del} {
		for _, o := range children(name) {
			if err := k8s.Get(ctxT(t, 30*time.Second), ctrlclient.ObjectKeyFromObject(o), o); err != nil {
				t.Fatalf("child %T %s before delete: %v", o, o.GetName(), err)
			}
		}
	}

	p.next("delete both, wait for children gone")
	for _, name := range []string{retain, del} {
		if err := k8s.Delete(ctxT(t, 30*time.Second), getDiskCache(t, ns, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{retain, del} {
		for _, o := range append(children(name), &cachev1alpha1.DiskCache{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}) {
			eventually(t, 3*time.Minute, fmt.Sprintf("%T %s gone", o, o.GetName()), func(ctx context.Context) (bool, string) {
				err := k8s.Get(ctx, ctrlclient.ObjectKeyFromObject(o), o)
				return apierrors.IsNotFound(err), fmt.Sprintf("get: %v", err)
			})
		}
	}

	p.next("PVCs per whenDeleted")
	eventually(t, 2*time.Minute, "PVC data-delete-0 deleted (whenDeleted: Delete)", func(ctx context.Context) (bool, string) {
		err := k8s.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: "data-" + del + "-0"}, &corev1.PersistentVolumeClaim{})
		return apierrors.IsNotFound(err), fmt.Sprintf("get: %v", err)
	})
	// The StatefulSet and its pod are gone, so nothing would delete the
	// retained claim any more: it must be there, not being deleted, with no
	// owner left.
	pvc := &corev1.PersistentVolumeClaim{}
	if err := k8s.Get(ctxT(t, 30*time.Second), ctrlclient.ObjectKey{Namespace: ns, Name: "data-" + retain + "-0"}, pvc); err != nil {
		t.Fatalf("retained PVC: %v", err)
	}
	if pvc.DeletionTimestamp != nil || len(pvc.OwnerReferences) != 0 || pvc.Status.Phase != corev1.ClaimBound {
		t.Errorf("retained PVC: deletion %v owners %+v phase %s", pvc.DeletionTimestamp, pvc.OwnerReferences, pvc.Status.Phase)
	}

	// A DiskCache created again on the retained claim with another fanout
	// would hash the keys to other databases: the shard refuses to start,
	// and the DiskCache says why.
	p.next("created again with another fanout: the shard refuses, Degraded ShardFailing")
	createDiskCache(t, newDiskCache(ns, retain, func(dc *cachev1alpha1.DiskCache) { dc.Spec.Fanout = 4 }))
	eventually(t, 4*time.Minute, "Degraded (ShardFailing) naming the fanout", func(ctx context.Context) (bool, string) {
		dc := &cachev1alpha1.DiskCache{}
		if err := k8s.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: retain}, dc); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(dc.Status.Conditions, cachev1alpha1.ConditionDegraded)
		return c != nil && c.Reason == cachev1alpha1.ReasonShardFailing && strings.Contains(c.Message, "made for another fanout"),
			fmt.Sprintf("Degraded %+v", c)
	})

	p.next("created again with its own fanout: every item back")
	if err := k8s.Delete(ctxT(t, 30*time.Second), getDiskCache(t, ns, retain)); err != nil {
		t.Fatal(err)
	}
	for _, o := range append(children(retain), &cachev1alpha1.DiskCache{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: retain}}) {
		eventually(t, 3*time.Minute, fmt.Sprintf("%T %s gone", o, o.GetName()), func(ctx context.Context) (bool, string) {
			err := k8s.Get(ctx, ctrlclient.ObjectKeyFromObject(o), o)
			return apierrors.IsNotFound(err), fmt.Sprintf("get: %v", err)
		})
	}
	createDiskCache(t, newDiskCache(ns, retain, nil))
	waitAvailable(t, ns, retain, 4*time.Minute)
	checkItems(t, newCacheClient(t, serviceURL(t, ns, retain), token(t, ns, retain)), 0, 300, 300)
}
