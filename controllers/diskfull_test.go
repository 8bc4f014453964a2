package controllers

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// TestFullVolumeIsReported: a shard (a real cacheserver on a small tmpfs)
// whose volume fills stays ready and makes the cache Degraded DiskFull
// with one Warning Event naming the pod; freed, the cache is no longer
// Degraded. The operator said nothing (the pod was only not ready).
func TestFullVolumeIsReported(t *testing.T) {
	needEnv(t)
	vol, err := os.MkdirTemp("", "diskcache-full-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", vol).CombinedOutput(); err != nil {
		t.Fatalf("mount a small tmpfs (the test runs as root, as CI does): %v %s", err, out)
	}
	t.Cleanup(func() {
		_ = exec.Command("umount", vol).Run()
		_ = os.Remove(vol)
	})
	ns := newNamespace(t)
	const name = "full"
	newDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 1 })
	tok := waitToken(t, ns, name)
	srv, pod := serveShard0(t, ns, name, tok, filepath.Join(vol, "data"))
	c := shardClient(t, srv.URL, tok)

	value := kv.Bytes([]byte(strings.Repeat("v", 1<<20)))
	for i := 0; ; i++ {
		err := c.Cache("").Set(bg, kv.TextKey(fmt.Sprint("k", i)), value, kv.SetOptions{})
		if err == nil {
			continue
		}
		if !strings.Contains(err.Error(), "insufficient_storage") {
			t.Fatalf("write %d: %v, want 507 insufficient_storage", i, err)
		}
		break
	}
	degraded := func(reason string) func() error {
		return func() error {
			// A change of the spec brings a reconcile at once (the operator
			// also looks every minute).
			updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
				dc.Spec.CullLimit = ptrTo(int32(10 + len(dc.Status.Conditions)%2 + int(dc.Generation%2)))
			})
			dc := get(t, ns, name, &cachev1alpha1.DiskCache{})
			if reason == "" {
				return conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionFalse, "")
			}
			return conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionTrue, reason)
		}
	}
	eventually(t, "Degraded DiskFull", degraded(cachev1alpha1.ReasonDiskFull))
	notes := eventNotes(t, ns, name, corev1.EventTypeWarning, cachev1alpha1.ReasonDiskFull)
	if len(notes) != 1 || !strings.Contains(notes[0], "pod "+pod) {
		t.Errorf("DiskFull events %q; want one naming pod %s", notes, pod)
	}
	if _, err := c.Cache("").Clear(bg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "no longer Degraded", degraded(""))
}
