//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// hostVolumes are PersistentVolumes on directories of this machine (the
// local cluster's node), each bound in advance to one claim, and each
// optionally a tmpfs mount of a given size: a volume that fills for real,
// whatever the claim asks for, as a node's disk shared with other data
// does. Made before the test's namespace, so that their cleanup (the PVs
// and the StorageClass deleted, the mounts undone) runs after the
// namespace, and with it the pods using them, is gone.
type hostVolumes struct {
	class string
	root  string
	node  string
	pvs   []string
	mnts  []string
}

func newHostVolumes(t *testing.T) *hostVolumes {
	t.Helper()
	var nodes corev1.NodeList
	if err := k8s.List(ctxT(t, 30*time.Second), &nodes); err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %d, %v; want the local cluster's one", len(nodes.Items), err)
	}
	root, err := os.MkdirTemp("", "diskcache-e2e-volumes-")
	if err != nil {
		t.Fatal(err)
	}
	v := &hostVolumes{class: "e2e-host-" + randSuffix(), root: root, node: nodes.Items[0].Name}
	sc := &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: v.class, Labels: map[string]string{"diskcache-e2e": "true"}},
		Provisioner:       "kubernetes.io/no-provisioner",
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimRetain),
	}
	if err := k8s.Create(ctxT(t, 30*time.Second), sc); err != nil {
		t.Fatalf("create StorageClass: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		for _, name := range v.pvs {
			if err := k8s.Delete(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete PersistentVolume %s: %v", name, err)
			}
		}
		if err := k8s.Delete(ctx, sc); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete StorageClass %s: %v", v.class, err)
		}
		for _, dir := range v.mnts {
			if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v %s", dir, err, out)
			}
		}
		if err := os.RemoveAll(root); err != nil {
			t.Errorf("remove %s: %v", root, err)
		}
	})
	return v
}

// add makes a PersistentVolume of capacity for claim ns/claim: a tmpfs of
// tmpfsBytes, or a plain directory when tmpfsBytes is 0.
func (v *hostVolumes) add(t *testing.T, ns, claim string, capacity resource.Quantity, tmpfsBytes int64) {
	t.Helper()
	name := v.class + "-" + claim
	dir := filepath.Join(v.root, claim)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if tmpfsBytes > 0 {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", tmpfsBytes), "tmpfs", dir).CombinedOutput(); err != nil {
			t.Fatalf("mount a tmpfs of %d bytes (the e2e tests run as root on the node): %v %s", tmpfsBytes, err, out)
		}
		v.mnts = append(v.mnts, dir)
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"diskcache-e2e": "true"}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: capacity},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              v.class,
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: ns, Name: claim},
			PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: dir}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{v.node}}},
			}}}},
		},
	}
	if err := k8s.Create(ctxT(t, 30*time.Second), pv); err != nil {
		t.Fatalf("create PersistentVolume %s: %v", name, err)
	}
	v.pvs = append(v.pvs, name)
}

// degradedFor reports whether the DiskCache's Degraded condition is true
// for reason with a message holding want.
func degradedFor(t *testing.T, ns, name, reason, want string) (bool, string) {
	c := meta.FindStatusCondition(getDiskCache(t, ns, name).Status.Conditions, cachev1alpha1.ConditionDegraded)
	return c != nil && c.Status == metav1.ConditionTrue && c.Reason == reason && strings.Contains(c.Message, want), fmt.Sprintf("%+v", c)
}

// 14. A shard whose data volume fills refuses writes of new data, keeps
// serving the rest, and takes writes again once deletes have freed space,
// losing nothing acknowledged. 2 shards, shard 1's volume a tmpfs of
// 128 MiB under a claim of 1Gi (so spec.sizeLimit never culls before the
// volume is full, as when other data shares the node's disk); a load
// through the Service keeps a ledger while a filler writes distinct
// 8000-byte values through the Service until shard 1 answers 507
// insufficient_storage. The operator reports it (a Warning Event DiskFull
// on the pod, Degraded DiskFull naming it) while the cache stays
// Available: through the Service a write of shard 1's keys answers 507
// and one of shard 0's is stored, and every value the filler had
// acknowledged reads back. Deleting three quarters of the filler's keys
// through the Service frees the space: shard 1 stores again by itself and
// Degraded clears. Then the quarter kept reads back whole, no deleted key
// comes back, and the ledger counts 0 lost, 0 stale, 0 resurrected.
func TestFullVolumeRefusesWritesAndRecovers(t *testing.T) {
	const name = "full"
	p := newPhases(t)
	defer p.done()
	p.next("create 2 shards, shard 1 on a tmpfs of 128 MiB")
	vols := newHostVolumes(t)
	ns := newNamespace(t, "full")
	claimSize := resource.MustParse("1Gi")
	vols.add(t, ns, "data-"+name+"-0", claimSize, 0)
	vols.add(t, ns, "data-"+name+"-1", claimSize, 128<<20)
	createDiskCache(t, newDiskCache(ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Shards = 2
		dc.Spec.Storage.Size = &claimSize
		dc.Spec.Storage.StorageClassName = &vols.class
	}))
	waitAvailable(t, ns, name, 5*time.Minute)
	waitTopologyAnnounced(t, ns, name, 2)
	tok := token(t, ns, name)
	full := cachePod(t, ns, name, 1).Name

	p.next("load through the Service")
	l, store, stopLoad := startServiceLoad(t, ns, name, tok, "full", 4)
	waitLoadRuns(t, store, 300)

	p.next("fill until shard 1's volume is full")
	f, stopFiller := startFiller(t, store.c)
	// Shard 1 takes about half of the values: its 128 MiB are full well
	// before 512 MiB are written.
	eventually(t, 5*time.Minute, "a write refused 507 insufficient_storage", func(context.Context) (bool, string) {
		if f.bytes.Load() > 512<<20 {
			t.Fatalf("%d MiB written, no write refused for a full volume", f.bytes.Load()>>20)
		}
		return f.full.Load() > 0, fmt.Sprintf("%d MiB written (%d writes failed)", f.bytes.Load()>>20, f.errs.Load())
	})
	stopFiller()
	t.Logf("shard 1 full after %d MiB of the filler's values were acknowledged (%d writes failed, %d of them 507)",
		f.bytes.Load()>>20, f.errs.Load(), f.full.Load())

	p.next("the operator reports it; the cache serves on")
	eventually(t, 3*time.Minute, "a Warning Event DiskFull on "+full, func(context.Context) (bool, string) {
		for _, e := range eventsOf(t, ns, name) {
			if e.Reason == cachev1alpha1.ReasonDiskFull && e.Type == corev1.EventTypeWarning && e.Related != nil && e.Related.Name == full {
				return true, e.Note
			}
		}
		return false, "none yet"
	})
	eventually(t, 3*time.Minute, "Degraded DiskFull naming "+full, func(context.Context) (bool, string) {
		return degradedFor(t, ns, name, cachev1alpha1.ReasonDiskFull, "pod "+full+": its data volume is full")
	})
	if c := meta.FindStatusCondition(getDiskCache(t, ns, name).Status.Conditions, cachev1alpha1.ConditionAvailable); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Available with one shard's volume full: %+v; want True (the shard serves reads and deletes)", c)
	}
	probe, owner := keysOnEachShard("full-probe", 2, 1)
	for i, k := range probe {
		err := store.c.Set(ctxT(t, 10*time.Second), k, kv.Text("probe"), kv.SetOptions{})
		var ce *cacheclient.Error
		switch {
		case owner[i] == 0 && err != nil:
			t.Errorf("a write of shard 0's key %s through the Service while shard 1 is full: %v", k.Text(), err)
		case owner[i] == 1 && (!errors.As(err, &ce) || ce.Status != 507 || ce.Code != wire.CodeInsufficientStorage):
			t.Errorf("a write of shard 1's key %s through the Service while it is full: %v; want 507 %s", k.Text(), err, wire.CodeInsufficientStorage)
		}
	}
	c := serviceClient(t, ns, name, tok)
	lost, wrong := readFilled(t, c, f.acked)
	if lost != 0 || wrong != 0 {
		t.Errorf("while shard 1 is full, of the filler's %d acknowledged values %d are missing and %d wrong", len(f.acked), lost, wrong)
	}

	p.next("delete three quarters of the filler's keys; shard 1 stores again")
	var kept, deleted []string
	for i, k := range f.acked {
		if i%4 == 0 {
			kept = append(kept, k)
		} else {
			deleted = append(deleted, k)
		}
	}
	for chunk := range slices.Chunk(deleted, 200) {
		keys := make([]kv.Key, len(chunk))
		for i, k := range chunk {
			keys[i] = kv.TextKey(k)
		}
		if _, err := c.DeleteMany(ctxT(t, time.Minute), keys); err != nil {
			t.Fatalf("DeleteMany on a full volume: %v", err)
		}
	}
	k1 := probe[slices.Index(owner, 1)]
	eventually(t, time.Minute, "a write of shard 1's key stored", func(ctx context.Context) (bool, string) {
		err := store.c.Set(ctx, k1, kv.Text("probe"), kv.SetOptions{})
		return err == nil, fmt.Sprintf("%v", err)
	})
	eventually(t, 3*time.Minute, "Degraded no longer DiskFull", func(context.Context) (bool, string) {
		c := meta.FindStatusCondition(getDiskCache(t, ns, name).Status.Conditions, cachev1alpha1.ConditionDegraded)
		return c != nil && c.Status == metav1.ConditionFalse, fmt.Sprintf("%+v", c)
	})
	waitLoadGoesOn(t, l, "the load to go on")

	p.next("stop the load; every acknowledged write reads back")
	stopLoad()
	lost, wrong = readFilled(t, c, kept)
	resurrected := len(deleted) - countMissing(t, c, deleted)
	t.Logf("the filler's values: %d kept (%d lost, %d wrong), %d deleted (%d resurrected)", len(kept), lost, wrong, len(deleted), resurrected)
	if lost != 0 || wrong != 0 || resurrected != 0 {
		t.Errorf("after the full volume was freed: of %d values kept %d are lost and %d wrong; of %d deleted %d are back",
			len(kept), lost, wrong, len(deleted), resurrected)
	}
	verifyServiceLoad(t, l, c, "with a full volume")
}

// readFilled reads the filler's keys through c and counts those missing
// and those whose value is not fillValue's.
func readFilled(t *testing.T, c *cacheclient.Cache, keys []string) (lost, wrong int) {
	t.Helper()
	for chunk := range slices.Chunk(keys, 200) {
		ks := make([]kv.Key, len(chunk))
		for i, k := range chunk {
			ks[i] = kv.TextKey(k)
		}
		res, err := c.GetMany(ctxT(t, time.Minute), ks)
		if err != nil {
			t.Fatalf("GetMany of the filler's keys: %v", err)
		}
		for i, r := range res {
			switch {
			case r.Err != nil:
				t.Fatalf("GetMany of %s: %v", chunk[i], r.Err)
			case !r.Found:
				lost++
			case !bytes.Equal(r.Value.Data, fillValue(chunk[i])):
				wrong++
			}
		}
	}
	return lost, wrong
}

// countMissing counts the keys that read as missing through c.
func countMissing(t *testing.T, c *cacheclient.Cache, keys []string) int {
	t.Helper()
	lost, _ := readFilled(t, c, keys)
	return lost
}
