//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// collectionLoad keeps named deques and named caches busy through the
// Service while the shard count changes: one goroutine appends to the
// deques, stores file-sized values in the caches and now and then drops
// one, and keeps what each should hold from the acknowledged answers (it
// is the only writer, so that is exact). A call that failed may have been
// applied: its collection is unknown until a drop of it succeeds.
type collectionLoad struct {
	c      *cacheclient.Client
	prefix string
	deques [][]int64        // acknowledged appends, in order
	caches []map[int64]bool // acknowledged keys
	unsure map[string]bool  // collections a failed call left unknown
	seq    int64            // the next value or key
	// Calls made, failed, and drops acknowledged (read while it runs).
	ops, errs, drops atomic.Int64
	// errors counts the failed calls by message (read once it stopped).
	errors map[string]int
}

func newCollectionLoad(c *cacheclient.Client, prefix string, n int) *collectionLoad {
	l := &collectionLoad{c: c, prefix: prefix, deques: make([][]int64, n), caches: make([]map[int64]bool, n), unsure: map[string]bool{}, errors: map[string]int{}}
	for i := range l.caches {
		l.caches[i] = map[int64]bool{}
	}
	return l
}

func (l *collectionLoad) dequeName(i int) string { return l.prefix + "/queue-" + strconv.Itoa(i) }
func (l *collectionLoad) cacheName(i int) string { return l.prefix + "/cache-" + strconv.Itoa(i) }

// collectionValue is the value stored under key n of a named cache: past
// the default diskMinFileSize, so each is a value file that moves too.
func collectionValue(n int64) []byte {
	return append([]byte(strconv.FormatInt(n, 10)+"|"), fileSized...)
}

// step makes one call on collection i of a deque (even) or cache (odd):
// one in ten a drop, else an append or a set.
func (l *collectionLoad) step(ctx context.Context, i int) {
	n := len(l.deques)
	k := i % (2 * n)
	isDeque, j := k%2 == 0, k/2
	id := l.cacheName(j)
	if isDeque {
		id = l.dequeName(j)
	}
	l.ops.Add(1)
	l.seq++
	var err error
	if l.unsure[id] || l.seq%10 == 0 {
		if isDeque {
			_, err = l.c.Deque(id).Clear(ctx)
		} else {
			_, err = l.c.Cache(id).Drop(ctx)
		}
		if err == nil {
			l.drops.Add(1)
			delete(l.unsure, id)
			if isDeque {
				l.deques[j] = nil
			} else {
				clear(l.caches[j])
			}
		}
	} else if isDeque {
		if _, err = l.c.Deque(id).Append(ctx, kv.Int(l.seq)); err == nil {
			l.deques[j] = append(l.deques[j], l.seq)
		}
	} else if err = l.c.Cache(id).Set(ctx, kv.IntKey(l.seq), kv.Bytes(collectionValue(l.seq)), kv.SetOptions{}); err == nil {
		l.caches[j][l.seq] = true
	}
	if err != nil {
		l.errs.Add(1)
		l.unsure[id] = true
		l.errors[strings.ReplaceAll(err.Error(), id, "<name>")]++
	}
}

// run calls until stop closes.
func (l *collectionLoad) run(ctx context.Context, stop <-chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		l.step(ctx, i)
	}
}

// collectionCounts is what verify found: items of the collections known
// (acknowledged and read back, missing, or there without an acknowledged
// write since the last drop).
type collectionCounts struct {
	Checked, Unsure, Items, Lost, Resurrected int
}

func (c collectionCounts) String() string {
	return fmt.Sprintf("%d collections checked (%d left unknown by a failed call), %d items: lost %d, resurrected %d",
		c.Checked, c.Unsure, c.Items, c.Lost, c.Resurrected)
}

// verify reads every collection known through the Service.
func (l *collectionLoad) verify(ctx context.Context) (collectionCounts, error) {
	var out collectionCounts
	for j := range l.deques {
		if id := l.dequeName(j); l.unsure[id] {
			out.Unsure++
		} else {
			out.Checked++
			want := map[int64]bool{}
			for _, v := range l.deques[j] {
				want[v] = true
			}
			out.Items += len(want)
			for it, err := range l.c.Deque(id).Items(ctx, false, 500) {
				if err != nil {
					return out, fmt.Errorf("deque %s: %w", id, err)
				}
				if want[it.Value.Int] {
					delete(want, it.Value.Int)
				} else {
					out.Resurrected++
				}
			}
			out.Lost += len(want)
		}
		if id := l.cacheName(j); l.unsure[id] {
			out.Unsure++
		} else {
			out.Checked++
			out.Items += len(l.caches[j])
			cc := l.c.Cache(id)
			for key := range l.caches[j] {
				it, ok, err := cc.Get(ctx, kv.IntKey(key))
				if err != nil {
					return out, fmt.Errorf("cache %s: %w", id, err)
				}
				if !ok || !bytes.Equal(it.Value.Data, collectionValue(key)) {
					out.Lost++
				}
			}
			info, err := cc.Info(ctx)
			if err != nil {
				return out, fmt.Errorf("cache %s: %w", id, err)
			}
			out.Resurrected += max(int(info.Count)-len(l.caches[j]), 0)
		}
	}
	return out, nil
}
