//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// fillValue is the filler's value of key: 8000 bytes from its hash, below
// diskMinFileSize (held in the database, whose pages SQLite caches).
func fillValue(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return bytes.Repeat(sum[:], 250)
}

// filler writes distinct keys with fillValue through c from 4 goroutines
// until stopped, and keeps the keys whose writes were acknowledged.
type filler struct {
	c     *cacheclient.Cache
	next  atomic.Int64
	bytes atomic.Int64
	errs  atomic.Int64
	// full counts the writes refused for a full data volume (507).
	full  atomic.Int64
	mu    sync.Mutex
	acked []string
}

func (f *filler) run(stop <-chan struct{}) {
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := "fill-" + strconv.FormatInt(f.next.Add(1), 10)
				v := fillValue(k)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := f.c.Set(ctx, kv.TextKey(k), kv.Bytes(v), kv.SetOptions{})
				cancel()
				if err != nil {
					f.errs.Add(1)
					if ce := (*cacheclient.Error)(nil); errors.As(err, &ce) && ce.Code == wire.CodeInsufficientStorage {
						f.full.Add(1)
					}
					continue
				}
				f.bytes.Add(int64(len(v)))
				f.mu.Lock()
				f.acked = append(f.acked, k)
				f.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// startFiller runs a filler through c until the returned stop is called
// (at the latest when the test ends).
func startFiller(t *testing.T, c *cacheclient.Cache) (f *filler, stop func()) {
	f = &filler{c: c}
	stopFill, filled := make(chan struct{}), make(chan struct{})
	go func() { f.run(stopFill); close(filled) }()
	stop = sync.OnceFunc(func() { close(stopFill); <-filled })
	t.Cleanup(stop)
	return f, stop
}

// oomKilled names the pod of DiskCache name whose cacheserver the kernel
// killed for its memory limit (its last state OOMKilled); "" if none.
func oomKilled(ctx context.Context, ns, name string) (string, error) {
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, ctrlclient.InNamespace(ns), ctrlclient.MatchingLabels{"app.kubernetes.io/instance": name}); err != nil {
		return "", err
	}
	for _, pod := range pods.Items {
		for _, cs := range pod.Status.ContainerStatuses {
			if t := cs.LastTerminationState.Terminated; cs.Name == cacheContainer && t != nil && t.Reason == "OOMKilled" {
				return pod.Name, nil
			}
		}
	}
	return "", nil
}

// 13. A shard the kernel kills for its memory keeps every acknowledged
// write. 2 shards with a memory limit of 80Mi, below what a shard may use
// (the operator says MemoryLimitTooLow); a load through the Service keeps a
// ledger while a filler writes distinct 8000-byte values through the
// Service, which fill SQLite's page caches, until the kernel OOM-kills a
// shard's cacheserver. The operator reports the kill (a Warning Event
// ShardOOMKilled, Degraded naming the pod and the limit) and the shard
// restarts on its volume. The limit is then raised, as the report says,
// the shards roll, and every acknowledged write reads back: each of the
// filler's values, and the ledger's 0 lost, 0 stale, 0 resurrected.
func TestShardOOMKilledKeepsEveryWrite(t *testing.T) {
	const name = "oom"
	p := newPhases(t)
	defer p.done()
	p.next("create 2 shards with a memory limit of 80Mi")
	ns := newNamespace(t, "oom")
	createDiskCache(t, newDiskCache(ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Shards = 2
		dc.Spec.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("80Mi")}
	}))
	waitAvailable(t, ns, name, 5*time.Minute)
	waitTopologyAnnounced(t, ns, name, 2)
	if c := meta.FindStatusCondition(getDiskCache(t, ns, name).Status.Conditions, cachev1alpha1.ConditionDegraded); c == nil || !strings.Contains(c.Message, "below") {
		t.Errorf("Degraded with a memory limit of 80Mi: %+v; want the limit named too low", c)
	}
	tok := token(t, ns, name)

	p.next("load through the Service")
	l, store, stopLoad := startServiceLoad(t, ns, name, tok, "oom", 4)
	waitLoadRuns(t, store, 300)

	p.next("fill until the kernel kills a shard")
	f, stopFiller := startFiller(t, store.c)
	var killed string
	// Each shard's page caches may reach 8 databases × 8192 pages of
	// 2 KiB: the kill comes well before 512 MiB are written.
	eventually(t, 5*time.Minute, "a shard's cacheserver OOMKilled", func(ctx context.Context) (bool, string) {
		if f.bytes.Load() > 512<<20 {
			t.Fatalf("%d MiB written, no shard OOMKilled with a limit of 80Mi", f.bytes.Load()>>20)
		}
		var err error
		killed, err = oomKilled(ctx, ns, name)
		return killed != "", fmt.Sprintf("%d MiB written (%d writes failed), %v", f.bytes.Load()>>20, f.errs.Load(), err)
	})
	stopFiller()
	t.Logf("pod %s OOMKilled after %d MiB of the filler's values were acknowledged (%d writes failed)", killed, f.bytes.Load()>>20, f.errs.Load())

	p.next("the operator reports the kill; the shard is back")
	eventually(t, 2*time.Minute, "a Warning Event ShardOOMKilled", func(context.Context) (bool, string) {
		for _, e := range eventsOf(t, ns, name) {
			if e.Reason == cachev1alpha1.ReasonShardOOMKilled && e.Type == corev1.EventTypeWarning && e.Related != nil && e.Related.Name == killed {
				return true, e.Note
			}
		}
		return false, "none yet"
	})
	eventually(t, 2*time.Minute, "Degraded naming the kill", func(context.Context) (bool, string) {
		c := meta.FindStatusCondition(getDiskCache(t, ns, name).Status.Conditions, cachev1alpha1.ConditionDegraded)
		return c != nil && c.Status == "True" && strings.Contains(c.Message, killed+": cacheserver was OOMKilled (memory limit 80Mi)"), fmt.Sprintf("%+v", c)
	})
	waitServiceRoutes(t, ns, name, 0, 1)
	waitLoadGoesOn(t, l, "the load to go on")

	p.next("raise the limit as the report says; the shards roll")
	before := []*corev1.Pod{cachePod(t, ns, name, 0), cachePod(t, ns, name, 1)}
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")}
	})
	for i, old := range before {
		eventually(t, 5*time.Minute, fmt.Sprintf("shard %d rolled and ready", i), func(ctx context.Context) (bool, string) {
			// Between the old pod's deletion and the new one's creation
			// there is none.
			pod := &corev1.Pod{}
			if err := k8s.Get(ctx, ctrlclient.ObjectKey{Namespace: ns, Name: old.Name}, pod); err != nil {
				return false, err.Error()
			}
			return pod.UID != old.UID && podReady(pod), fmt.Sprintf("uid %s ready %v", pod.UID, podReady(pod))
		})
	}
	waitStatefulSetSettled(t, ns, name, 5*time.Minute)
	eventually(t, 2*time.Minute, "Degraded false", func(context.Context) (bool, string) {
		c := meta.FindStatusCondition(getDiskCache(t, ns, name).Status.Conditions, cachev1alpha1.ConditionDegraded)
		return c != nil && c.Status == "False", fmt.Sprintf("%+v", c)
	})
	waitServiceRoutes(t, ns, name, 0, 1)

	p.next("stop the load; every acknowledged write reads back")
	stopLoad()
	c := serviceClient(t, ns, name, tok)
	lost, wrong := readFilled(t, c, f.acked)
	t.Logf("the filler's %d acknowledged values: %d lost, %d wrong", len(f.acked), lost, wrong)
	if lost != 0 || wrong != 0 {
		t.Errorf("of the filler's %d acknowledged values %d are lost and %d wrong after the OOM kill", len(f.acked), lost, wrong)
	}
	verifyServiceLoad(t, l, c, "with a shard OOMKilled")
}
