// Package loadcheck drives a cache with concurrent writers, deleters and
// readers and keeps a ledger of every acknowledged operation, so a test can
// check afterwards that nothing acknowledged was lost, served stale or
// brought back after its delete, and print the counts.
//
// Each key belongs to one worker, which runs its operations on it one after
// another: the last acknowledged operation on a key is then exactly known,
// and every value names the write it came from ("<key>#<seq>").
package loadcheck

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Store is the cache under test.
type Store interface {
	Set(ctx context.Context, key string, value []byte) error
	Delete(ctx context.Context, key string) error
	// Get returns found=false for a missing key.
	Get(ctx context.Context, key string) (value []byte, found bool, err error)
}

// Config shapes the load.
type Config struct {
	Workers       int     // concurrent workers (default 8)
	KeysPerWorker int     // keys each worker owns (default 200)
	DeleteRatio   float64 // share of writes that are deletes (default 0.2)
	ReadRatio     float64 // share of operations that are reads (default 0.3)
	Prefix        string  // key prefix (default "lc")
}

func (c *Config) defaults() {
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.KeysPerWorker <= 0 {
		c.KeysPerWorker = 200
	}
	if c.DeleteRatio == 0 {
		c.DeleteRatio = 0.2
	}
	if c.ReadRatio == 0 {
		c.ReadRatio = 0.3
	}
	if c.Prefix == "" {
		c.Prefix = "lc"
	}
}

// keyState is what the ledger knows of one key.
type keyState struct {
	seq     int  // of the last write (set or delete) sent
	acked   int  // seq of the last acknowledged write; 0: none
	deleted bool // the last acknowledged write was a delete
	// unsure are the writes answered with an error since the last
	// acknowledged one: each may or may not have happened, in any order
	// (a request held by a stalled server may be applied after a later
	// one failed), so any of their outcomes is accepted until a later
	// write is acknowledged.
	unsure []write
}

// write is one set (or delete) of a key.
type write struct {
	seq     int
	deleted bool
}

// Counts are the results of a run and its check.
type Counts struct {
	Sets, Deletes, Reads int64 // acknowledged
	Errors               int64 // operations answered with an error
	StaleReads           int64 // reads during the load older than an acknowledged write
	Lost                 int64 // acknowledged value missing at the end
	Stale                int64 // an older value than the last acknowledged one at the end
	Resurrected          int64 // present at the end after an acknowledged delete
	Checked              int64 // keys checked at the end
}

func (c Counts) String() string {
	return fmt.Sprintf("acknowledged sets %d, deletes %d, reads %d; errors %d; stale reads %d; checked %d keys: lost %d, stale %d, resurrected %d",
		c.Sets, c.Deletes, c.Reads, c.Errors, c.StaleReads, c.Checked, c.Lost, c.Stale, c.Resurrected)
}

// Safe reports whether no acknowledged write was lost, stale or resurrected.
func (c Counts) Safe() bool {
	return c.Lost == 0 && c.Stale == 0 && c.Resurrected == 0 && c.StaleReads == 0
}

// Ledger is a running or finished load.
type Ledger struct {
	cfg    Config
	store  Store
	mu     []sync.Mutex // one per worker
	keys   [][]keyState // [worker][key]
	counts Counts
	errs   atomic.Int64
	last   atomic.Value // last error, for the report
}

// New prepares a load on store.
func New(store Store, cfg Config) *Ledger {
	cfg.defaults()
	l := &Ledger{cfg: cfg, store: store, mu: make([]sync.Mutex, cfg.Workers), keys: make([][]keyState, cfg.Workers)}
	for w := range l.keys {
		l.keys[w] = make([]keyState, cfg.KeysPerWorker)
	}
	return l
}

func (l *Ledger) key(w, k int) string {
	return l.cfg.Prefix + "-" + strconv.Itoa(w) + "-" + strconv.Itoa(k)
}

func value(key string, seq int) []byte { return []byte(key + "#" + strconv.Itoa(seq)) }

// Run drives the load until ctx ends or stop is closed.
func (l *Ledger) Run(ctx context.Context, stop <-chan struct{}) {
	var wg sync.WaitGroup
	for w := 0; w < l.cfg.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for {
				select {
				case <-ctx.Done():
					return
				case <-stop:
					return
				default:
				}
				l.step(ctx, w, rng)
			}
		}()
	}
	wg.Wait()
}

func (l *Ledger) step(ctx context.Context, w int, rng *rand.Rand) {
	k := rng.IntN(l.cfg.KeysPerWorker)
	key := l.key(w, k)
	st := &l.keys[w][k]
	if rng.Float64() < l.cfg.ReadRatio {
		v, found, err := l.store.Get(ctx, key)
		if err != nil {
			l.fail(err)
			return
		}
		atomic.AddInt64(&l.counts.Reads, 1)
		if !acceptable(key, st, v, found) {
			atomic.AddInt64(&l.counts.StaleReads, 1)
			l.setLast(fmt.Errorf("read of %s during the load: %q (found %v), last acknowledged write %d (deleted %v)", key, v, found, st.acked, st.deleted))
		}
		return
	}
	st.seq++
	seq := st.seq
	del := st.acked > 0 && rng.Float64() < l.cfg.DeleteRatio
	var err error
	if del {
		err = l.store.Delete(ctx, key)
	} else {
		err = l.store.Set(ctx, key, value(key, seq))
	}
	if err != nil {
		st.unsure = append(st.unsure, write{seq, del})
		l.fail(err)
		return
	}
	st.acked, st.deleted, st.unsure = seq, del, nil
	if del {
		atomic.AddInt64(&l.counts.Deletes, 1)
	} else {
		atomic.AddInt64(&l.counts.Sets, 1)
	}
}

func (l *Ledger) fail(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	atomic.AddInt64(&l.counts.Errors, 1)
	l.setLast(err)
}

// acceptable reports whether a read of key fits its ledger: the last
// acknowledged write, or a later write whose outcome is unknown.
func acceptable(key string, st *keyState, v []byte, found bool) bool {
	ok := func(w write) bool {
		if w.seq == 0 || w.deleted { // never written, or deleted
			return !found
		}
		return found && string(v) == string(value(key, w.seq))
	}
	return ok(write{st.acked, st.deleted}) || slices.ContainsFunc(st.unsure, ok)
}

// Verify reads every key once the load has stopped and counts what does
// not match the ledger.
func (l *Ledger) Verify(ctx context.Context) (Counts, error) { return l.VerifyThrough(ctx, l.store) }

// VerifyThrough is Verify reading through another store (for example
// through each of several entry points in turn).
func (l *Ledger) VerifyThrough(ctx context.Context, store Store) (Counts, error) {
	c := l.counts
	c.Errors = atomic.LoadInt64(&l.counts.Errors)
	for w := range l.keys {
		for k := range l.keys[w] {
			st := &l.keys[w][k]
			key := l.key(w, k)
			v, found, err := store.Get(ctx, key)
			if err != nil {
				return c, fmt.Errorf("verify %s: %w", key, err)
			}
			c.Checked++
			if acceptable(key, st, v, found) {
				continue
			}
			switch {
			case st.deleted && found:
				c.Resurrected++
			case !found:
				c.Lost++
			default:
				c.Stale++
			}
			l.setLast(fmt.Errorf("%s at the end: %q (found %v), last acknowledged write %d (deleted %v)", key, v, found, st.acked, st.deleted))
		}
	}
	return c, nil
}

// Acked returns how many writes (sets and deletes) were acknowledged so far.
func (l *Ledger) Acked() int64 {
	return atomic.LoadInt64(&l.counts.Sets) + atomic.LoadInt64(&l.counts.Deletes)
}

// lastError boxes errors for atomic.Value, which panics when the concrete
// type of what it stores changes.
type lastError struct{ err error }

func (l *Ledger) setLast(err error) { l.last.Store(lastError{err}) }

// LastError is the last error or mismatch seen, for the report.
func (l *Ledger) LastError() error {
	if e, ok := l.last.Load().(lastError); ok {
		return e.err
	}
	return nil
}
