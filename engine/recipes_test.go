package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// rcClock is a fake clock safe for concurrent use (the goroutine tests read
// it from many goroutines).
type rcClock struct{ ns atomic.Int64 }

func newRCClock() *rcClock {
	c := &rcClock{}
	c.ns.Store(time.Unix(1_700_000_000, 0).UnixNano())
	return c
}

func (c *rcClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *rcClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

var rcCtx = context.Background()

// rcOpen opens the cache in dir on clk; two calls on one directory stand in
// for two processes.
func rcOpen(t *testing.T, dir string, clk *rcClock) *Cache {
	t.Helper()
	c, err := Open(rcCtx, dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func rcNew(t *testing.T) (*Cache, *rcClock) {
	t.Helper()
	clk := newRCClock()
	return rcOpen(t, t.TempDir(), clk), clk
}

// rcText returns the text value under key, failing when there is none.
func rcText(t *testing.T, c *Cache, key kv.Key) (string, Item) {
	t.Helper()
	it, ok, err := c.Get(rcCtx, key, GetOptions{})
	if err != nil || !ok {
		t.Fatalf("Get(%s) = %v, %v; want an item", key, ok, err)
	}
	if it.Value.Type != kv.ValueText {
		t.Fatalf("Get(%s) is a %s value, want text", key, it.Value.Type)
	}
	return string(it.Value.Data), it
}

func rcAbsent(t *testing.T, c *Cache, key kv.Key) {
	t.Helper()
	if ok, err := c.Contains(rcCtx, key); err != nil || ok {
		t.Fatalf("Contains(%s) = %v, %v; want no item", key, ok, err)
	}
}

func rcWantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

type lockResult struct {
	acquired  bool
	holder    string
	remaining time.Duration
}

func rcAcquire(t *testing.T, l Lock, key kv.Key, owner string, ttl time.Duration, want lockResult) {
	t.Helper()
	ok, holder, rem, err := l.Acquire(rcCtx, key, owner, ttl)
	if err != nil {
		t.Fatalf("Acquire(%s, %q): %v", key, owner, err)
	}
	if got := (lockResult{ok, holder, rem}); got != want {
		t.Fatalf("Acquire(%s, %q) = %+v, want %+v", key, owner, got, want)
	}
}

func rcLocked(t *testing.T, l Lock, key kv.Key, want lockResult) {
	t.Helper()
	ok, holder, rem, err := l.Locked(rcCtx, key)
	if err != nil {
		t.Fatalf("Locked(%s): %v", key, err)
	}
	if got := (lockResult{ok, holder, rem}); got != want {
		t.Fatalf("Locked(%s) = %+v, want %+v", key, got, want)
	}
}

func TestLockAcquireReleaseRefresh(t *testing.T) {
	c, clk := rcNew(t)
	l := Lock{Cache: c, Tag: kv.TextKey("locks")}
	key := kv.TextKey("job")

	rcLocked(t, l, key, lockResult{false, "", 0})
	rcAcquire(t, l, key, "w1", 10*time.Second, lockResult{true, "w1", 10 * time.Second})
	// Not reentrant: the owner itself is refused, and told it holds it.
	rcAcquire(t, l, key, "w1", 30*time.Second, lockResult{false, "w1", 10 * time.Second})
	rcAcquire(t, l, key, "w2", 10*time.Second, lockResult{false, "w1", 10 * time.Second})
	clk.Advance(4 * time.Second)
	rcAcquire(t, l, key, "w2", 10*time.Second, lockResult{false, "w1", 6 * time.Second})
	rcLocked(t, l, key, lockResult{true, "w1", 6 * time.Second})

	// The state is an ordinary item: JSON text, the lock's tag, its expiry.
	text, it := rcText(t, c, key)
	if text != `{"owner":"w1"}` || !it.Tag.Equal(kv.TextKey("locks")) || it.ExpireTime != float64(clk.Now().Unix()+6) {
		t.Fatalf("lock item = %q tag %s expire %v", text, it.Tag, it.ExpireTime)
	}

	rcWantErr(t, "Release by non-owner", l.Release(rcCtx, key, "w2"), kv.ErrNotOwner)
	rcWantErr(t, "Refresh by non-owner", l.Refresh(rcCtx, key, "w2", time.Hour), kv.ErrNotOwner)
	rcLocked(t, l, key, lockResult{true, "w1", 6 * time.Second})

	if err := l.Refresh(rcCtx, key, "w1", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	rcLocked(t, l, key, lockResult{true, "w1", 20 * time.Second})
	if err := l.Release(rcCtx, key, "w1"); err != nil {
		t.Fatal(err)
	}
	rcAbsent(t, c, key)
	rcLocked(t, l, key, lockResult{false, "", 0})
	rcWantErr(t, "Release of a free lock", l.Release(rcCtx, key, "w1"), kv.ErrNotOwner)
	rcWantErr(t, "Refresh of a free lock", l.Refresh(rcCtx, key, "w1", time.Second), kv.ErrNotOwner)

	// A zero ttl holds until released.
	rcAcquire(t, l, key, "w2", 0, lockResult{true, "w2", 0})
	clk.Advance(1000 * time.Hour)
	rcAcquire(t, l, key, "w1", time.Second, lockResult{false, "w2", 0})
	// Refresh can also give a never-expiring lock an expiry.
	if err := l.Refresh(rcCtx, key, "w2", time.Second); err != nil {
		t.Fatal(err)
	}
	rcLocked(t, l, key, lockResult{true, "w2", time.Second})
}

func TestLockExpiredIsTakenOver(t *testing.T) {
	c, clk := rcNew(t)
	l := Lock{Cache: c}
	key := kv.IntKey(7)

	rcAcquire(t, l, key, "w1", 5*time.Second, lockResult{true, "w1", 5 * time.Second})
	clk.Advance(5*time.Second - time.Millisecond)
	rcAcquire(t, l, key, "w2", 3*time.Second, lockResult{false, "w1", time.Millisecond})
	clk.Advance(time.Millisecond) // expire_time == now: dead, as in python-diskcache
	rcLocked(t, l, key, lockResult{false, "", 0})
	rcAcquire(t, l, key, "w2", 3*time.Second, lockResult{true, "w2", 3 * time.Second})

	// The former holder has lost it.
	rcWantErr(t, "Release by the expired holder", l.Release(rcCtx, key, "w1"), kv.ErrNotOwner)
	rcWantErr(t, "Refresh by the expired holder", l.Refresh(rcCtx, key, "w1", time.Minute), kv.ErrNotOwner)
	rcLocked(t, l, key, lockResult{true, "w2", 3 * time.Second})
	if err := l.Release(rcCtx, key, "w2"); err != nil {
		t.Fatal(err)
	}
}

func TestLockForeignValuesAndBadArguments(t *testing.T) {
	c, _ := rcNew(t)
	l, r := Lock{Cache: c}, RLock{Cache: c}
	key := kv.TextKey("foreign")

	// python-diskcache's Lock adds the key with the value None (a pickle).
	if err := c.Set(rcCtx, key, kv.Pickle([]byte("\x80\x05N.")), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	rcAcquire(t, l, key, "w1", time.Second, lockResult{false, "", 0})
	rcLocked(t, l, key, lockResult{true, "", 0})
	rcWantErr(t, "Release of a python-held lock", l.Release(rcCtx, key, "w1"), kv.ErrNotOwner)
	if ok, holder, n, _, err := r.Acquire(rcCtx, key, "w1", 0); err != nil || ok || holder != "" || n != 0 {
		t.Fatalf("RLock.Acquire on a foreign value = %v %q %d, %v", ok, holder, n, err)
	}
	if _, err := r.Release(rcCtx, key, "w1"); !errors.Is(err, kv.ErrNotOwner) {
		t.Fatalf("RLock.Release on a foreign value: %v", err)
	}

	// A Lock and an RLock do not take each other's state for their own.
	lk, rk := kv.TextKey("plain"), kv.TextKey("reentrant")
	rcAcquire(t, l, lk, "w1", 0, lockResult{true, "w1", 0})
	if ok, holder, _, _, err := r.Acquire(rcCtx, lk, "w1", 0); err != nil || ok || holder != "" {
		t.Fatalf("RLock.Acquire on a Lock = %v %q, %v", ok, holder, err)
	}
	if ok, _, _, _, err := r.Acquire(rcCtx, rk, "w1", 0); err != nil || !ok {
		t.Fatalf("RLock.Acquire = %v, %v", ok, err)
	}
	rcAcquire(t, l, rk, "w1", 0, lockResult{false, "", 0})
	rcWantErr(t, "Lock.Release of an RLock", l.Release(rcCtx, rk, "w1"), kv.ErrNotOwner)

	_, _, _, err := l.Acquire(rcCtx, key, "", time.Second)
	rcWantErr(t, "empty owner", err, kv.ErrInvalidValue)
	_, _, _, err = l.Acquire(rcCtx, key, "w1", -time.Second)
	rcWantErr(t, "negative ttl", err, kv.ErrInvalidValue)
	// Stored in the lock's value: it went past --max-value-bytes.
	_, _, _, err = l.Acquire(rcCtx, key, strings.Repeat("o", MaxOwnerBytes+1), time.Second)
	rcWantErr(t, "owner over MaxOwnerBytes", err, kv.ErrInvalidValue)
	_, _, _, err = l.Acquire(rcCtx, kv.Key{}, "w1", time.Second)
	rcWantErr(t, "empty key", err, kv.ErrInvalidKey)
	rcWantErr(t, "Release with empty owner", l.Release(rcCtx, key, ""), kv.ErrInvalidValue)
}

// rcCritical is a critical section that notices being run by two
// goroutines at once: the atomic flag catches an overlap directly, and the
// counter's read-yield-write loses an increment if two sections interleave.
// The counter uses atomic loads and stores so that the race detector stays
// quiet when the only synchronisation is SQLite's (two Cache instances);
// the read-modify-write as a whole is not atomic.
type rcCritical struct {
	inside   atomic.Bool
	overlaps atomic.Int64
	counter  atomic.Int64
}

func (s *rcCritical) run() {
	if !s.inside.CompareAndSwap(false, true) {
		s.overlaps.Add(1)
	}
	v := s.counter.Load()
	runtime.Gosched()
	s.counter.Store(v + 1)
	s.inside.Store(false)
}

func TestLockMutualExclusionGoroutines(t *testing.T) {
	c, _ := rcNew(t)
	key := kv.TextKey("mutex")
	const workers, rounds = 16, 20
	var (
		inside   atomic.Bool
		overlaps atomic.Int64
		counter  int // plain: the lock is all that protects it
		failed   atomic.Bool
		wg       sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, owner := Lock{Cache: c}, fmt.Sprintf("worker-%d", w)
			for range rounds {
				for {
					ok, _, _, err := l.Acquire(rcCtx, key, owner, time.Minute)
					if err != nil || failed.Load() {
						if err != nil {
							t.Errorf("Acquire: %v", err)
						}
						failed.Store(true)
						return
					}
					if ok {
						break
					}
					runtime.Gosched()
				}
				if !inside.CompareAndSwap(false, true) {
					overlaps.Add(1)
				}
				v := counter
				runtime.Gosched()
				counter = v + 1
				inside.Store(false)
				if err := l.Release(rcCtx, key, owner); err != nil {
					t.Errorf("Release: %v", err)
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() {
		t.FailNow()
	}
	if overlaps.Load() != 0 || counter != workers*rounds {
		t.Fatalf("overlaps = %d, counter = %d; want 0 and %d", overlaps.Load(), counter, workers*rounds)
	}
	rcAbsent(t, c, key)
}

func TestLockMutualExclusionAcrossInstances(t *testing.T) {
	dir, clk := t.TempDir(), newRCClock()
	a, b := rcOpen(t, dir, clk), rcOpen(t, dir, clk)
	la, lb := Lock{Cache: a}, Lock{Cache: b}
	key := kv.TextKey("shared")

	rcAcquire(t, la, key, "a", time.Minute, lockResult{true, "a", time.Minute})
	rcAcquire(t, lb, key, "b", time.Minute, lockResult{false, "a", time.Minute})
	rcWantErr(t, "Release from the other instance", lb.Release(rcCtx, key, "b"), kv.ErrNotOwner)
	if err := la.Release(rcCtx, key, "a"); err != nil {
		t.Fatal(err)
	}
	rcAcquire(t, lb, key, "b", time.Minute, lockResult{true, "b", time.Minute})
	rcLocked(t, la, key, lockResult{true, "b", time.Minute})
	if err := lb.Release(rcCtx, key, "b"); err != nil {
		t.Fatal(err)
	}

	// Two goroutines per instance contend. A loser waits with reads (which
	// do not block writers in WAL mode) until the lock looks free, then
	// tries again: test-and-test-and-set, so that one instance's retries do
	// not starve the other's release in SQLite's busy handler.
	const perInstance, rounds = 2, 10
	var (
		cs     rcCritical
		failed atomic.Bool
		wg     sync.WaitGroup
	)
	for i, c := range []*Cache{a, b} {
		for g := range perInstance {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, owner := Lock{Cache: c}, fmt.Sprintf("instance-%d-worker-%d", i, g)
				fail := func(what string, err error) {
					t.Errorf("%s %s: %v", owner, what, err)
					failed.Store(true)
				}
				for range rounds {
					for {
						ok, _, _, err := l.Acquire(rcCtx, key, owner, 0)
						if err != nil {
							fail("Acquire", err)
							return
						}
						if ok {
							break
						}
						for !failed.Load() {
							held, err := c.Contains(rcCtx, key)
							if err != nil {
								fail("Contains", err)
								return
							}
							if !held {
								break
							}
							runtime.Gosched()
						}
						if failed.Load() {
							return
						}
					}
					cs.run()
					if err := l.Release(rcCtx, key, owner); err != nil {
						fail("Release", err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if failed.Load() {
		t.FailNow()
	}
	if cs.overlaps.Load() != 0 || cs.counter.Load() != 2*perInstance*rounds {
		t.Fatalf("overlaps = %d, counter = %d; want 0 and %d", cs.overlaps.Load(), cs.counter.Load(), 2*perInstance*rounds)
	}
}

func TestRLockReentry(t *testing.T) {
	c, clk := rcNew(t)
	l := RLock{Cache: c}
	key := kv.TextKey("rlock")
	acquire := func(owner string, ttl time.Duration, wantOK bool, wantHolder string, wantCount int, wantRem time.Duration) {
		t.Helper()
		ok, holder, n, rem, err := l.Acquire(rcCtx, key, owner, ttl)
		if err != nil || ok != wantOK || holder != wantHolder || n != wantCount || rem != wantRem {
			t.Fatalf("Acquire(%q) = %v %q %d %v, %v; want %v %q %d %v", owner, ok, holder, n, rem, err, wantOK, wantHolder, wantCount, wantRem)
		}
	}
	release := func(owner string, want int) {
		t.Helper()
		n, err := l.Release(rcCtx, key, owner)
		if err != nil || n != want {
			t.Fatalf("Release(%q) = %d, %v; want %d", owner, n, err, want)
		}
	}
	locked := func(wantOK bool, wantHolder string, wantCount int, wantRem time.Duration) {
		t.Helper()
		ok, holder, n, rem, err := l.Locked(rcCtx, key)
		if err != nil || ok != wantOK || holder != wantHolder || n != wantCount || rem != wantRem {
			t.Fatalf("Locked = %v %q %d %v, %v; want %v %q %d %v", ok, holder, n, rem, err, wantOK, wantHolder, wantCount, wantRem)
		}
	}

	acquire("w1", 0, true, "w1", 1, 0)
	acquire("w1", 0, true, "w1", 2, 0)
	acquire("w1", 0, true, "w1", 3, 0)
	acquire("w2", 0, false, "w1", 3, 0)
	if text, _ := rcText(t, c, key); text != `{"owner":"w1","count":3}` {
		t.Fatalf("rlock item = %q", text)
	}
	if _, err := l.Release(rcCtx, key, "w2"); !errors.Is(err, kv.ErrNotOwner) {
		t.Fatalf("Release by non-owner: %v", err)
	}
	release("w1", 2)
	release("w1", 1)
	locked(true, "w1", 1, 0)
	release("w1", 0)
	locked(false, "", 0, 0)
	rcAbsent(t, c, key)
	if _, err := l.Release(rcCtx, key, "w1"); !errors.Is(err, kv.ErrNotOwner) {
		t.Fatalf("Release of a free lock: %v", err)
	}

	// The ttl covers the whole lock; re-entry renews it, release keeps it.
	acquire("w1", 10*time.Second, true, "w1", 1, 10*time.Second)
	clk.Advance(6 * time.Second)
	acquire("w1", 10*time.Second, true, "w1", 2, 10*time.Second)
	clk.Advance(6 * time.Second)
	release("w1", 1)
	locked(true, "w1", 1, 4*time.Second)
	if err := l.Refresh(rcCtx, key, "w2", time.Minute); !errors.Is(err, kv.ErrNotOwner) {
		t.Fatalf("Refresh by non-owner: %v", err)
	}
	if err := l.Refresh(rcCtx, key, "w1", 8*time.Second); err != nil {
		t.Fatal(err)
	}
	locked(true, "w1", 1, 8*time.Second)
	clk.Advance(8 * time.Second)
	locked(false, "", 0, 0)
	// Expired: another owner takes it over at depth 1; the old one is out.
	acquire("w2", 0, true, "w2", 1, 0)
	if _, err := l.Release(rcCtx, key, "w1"); !errors.Is(err, kv.ErrNotOwner) {
		t.Fatalf("Release by the expired owner: %v", err)
	}
	release("w2", 0)
}

func TestRLockMutualExclusionGoroutines(t *testing.T) {
	c, _ := rcNew(t)
	key := kv.TextKey("rmutex")
	const workers, rounds = 8, 10
	var (
		cs     rcCritical
		failed atomic.Bool
		wg     sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, owner := RLock{Cache: c}, fmt.Sprintf("worker-%d", w)
			fail := func(what string, err error) {
				t.Errorf("%s %s: %v", owner, what, err)
				failed.Store(true)
			}
			for range rounds {
				for {
					ok, _, _, _, err := l.Acquire(rcCtx, key, owner, time.Minute)
					if err != nil || failed.Load() {
						if err != nil {
							fail("Acquire", err)
						}
						return
					}
					if ok {
						break
					}
					runtime.Gosched()
				}
				// Re-enter inside the critical section: it must succeed at once.
				if ok, _, n, _, err := l.Acquire(rcCtx, key, owner, time.Minute); err != nil || !ok || n != 2 {
					fail("re-Acquire", fmt.Errorf("= %v, %d, %v; want true, 2", ok, n, err))
					return
				}
				cs.run()
				for want := 1; want >= 0; want-- {
					if n, err := l.Release(rcCtx, key, owner); err != nil || n != want {
						fail("Release", fmt.Errorf("= %d, %v; want %d", n, err, want))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() {
		t.FailNow()
	}
	if cs.overlaps.Load() != 0 || cs.counter.Load() != workers*rounds {
		t.Fatalf("overlaps = %d, counter = %d; want 0 and %d", cs.overlaps.Load(), cs.counter.Load(), workers*rounds)
	}
}

func TestBoundedSemaphore(t *testing.T) {
	c, clk := rcNew(t)
	s := BoundedSemaphore{Cache: c, Tag: kv.TextKey("sems")}
	key := kv.TextKey("pool")
	acquire := func(owner string, n int, ttl time.Duration, wantOK bool, wantInUse int, wantWait time.Duration) {
		t.Helper()
		ok, inUse, wait, err := s.Acquire(rcCtx, key, owner, n, ttl)
		if err != nil || ok != wantOK || inUse != wantInUse || wait != wantWait {
			t.Fatalf("Acquire(%q, %d) = %v %d %v, %v; want %v %d %v", owner, n, ok, inUse, wait, err, wantOK, wantInUse, wantWait)
		}
	}
	release := func(owner string, want int) {
		t.Helper()
		inUse, err := s.Release(rcCtx, key, owner)
		if err != nil || inUse != want {
			t.Fatalf("Release(%q) = %d, %v; want %d", owner, inUse, err, want)
		}
	}
	holders := func(want map[string]int) {
		t.Helper()
		got, err := s.Holders(rcCtx, key)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("Holders = %v, %v; want %v", got, err, want)
		}
	}

	holders(map[string]int{})
	acquire("w1", 2, 10*time.Second, true, 1, 0)
	acquire("w2", 2, 5*time.Second, true, 2, 0)
	// Full: told how long until the soonest permit (w2's) expires.
	acquire("w3", 2, time.Second, false, 2, 5*time.Second)
	acquire("w1", 2, time.Second, false, 2, 5*time.Second)
	holders(map[string]int{"w1": 1, "w2": 1})
	text, it := rcText(t, c, key)
	var st semaphoreState
	if err := json.Unmarshal([]byte(text), &st); err != nil || st.Value != 2 || len(st.Holders) != 2 ||
		!it.Tag.Equal(kv.TextKey("sems")) || it.ExpireTime != float64(clk.Now().Unix()+10) {
		t.Fatalf("semaphore item = %q (%v) tag %s expire %v", text, err, it.Tag, it.ExpireTime)
	}

	// Over-release, python's "cannot release un-acquired semaphore".
	if _, err := s.Release(rcCtx, key, "w3"); !errors.Is(err, kv.ErrOverRelease) {
		t.Fatalf("Release by a non-holder: %v", err)
	}
	if err := s.Refresh(rcCtx, key, "w3", time.Minute); !errors.Is(err, kv.ErrNotOwner) {
		t.Fatalf("Refresh by a non-holder: %v", err)
	}
	release("w1", 1)
	if _, err := s.Release(rcCtx, key, "w1"); !errors.Is(err, kv.ErrOverRelease) {
		t.Fatalf("second Release: %v", err)
	}

	// An owner may hold several permits; they share one expiry. Released
	// by all, the semaphore takes the next acquirer's value.
	release("w2", 0)
	acquire("w2", 3, 8*time.Second, true, 1, 0)
	acquire("w2", 3, 8*time.Second, true, 2, 0)
	acquire("w3", 3, 20*time.Second, true, 3, 0)
	acquire("w1", 3, 0, false, 3, 8*time.Second)
	holders(map[string]int{"w2": 2, "w3": 1})
	// A crashed holder's permits come back when its claim expires.
	clk.Advance(8 * time.Second)
	holders(map[string]int{"w3": 1})
	if _, err := s.Release(rcCtx, key, "w2"); !errors.Is(err, kv.ErrOverRelease) {
		t.Fatalf("Release by an expired holder: %v", err)
	}
	acquire("w1", 3, 0, true, 2, 0)
	// Held, its value stays 3 whatever an acquirer says.
	acquire("w4", 2, 0, true, 3, 0)
	acquire("w5", 3, 0, false, 3, 12*time.Second)
	// Permits without expiry: the item never expires; a refused caller is
	// told there is nothing to wait for but a release (wait 0) once every
	// holder's permits are permanent.
	if err := s.Refresh(rcCtx, key, "w3", 0); err != nil {
		t.Fatal(err)
	}
	acquire("w5", 3, 0, false, 3, 0)
	if _, it := rcText(t, c, key); it.ExpireTime != 0 {
		t.Fatalf("semaphore item expires at %v, want never", it.ExpireTime)
	}
	release("w3", 2)
	release("w4", 1)
	release("w1", 0)
	rcAbsent(t, c, key) // the last release removes the item
	holders(map[string]int{})

	// Every holder expiring removes the item with them.
	acquire("w1", 1, time.Second, true, 1, 0)
	clk.Advance(time.Second)
	rcAbsent(t, c, key)
	acquire("w2", 1, time.Second, true, 1, 0)

	for _, bad := range []struct {
		owner string
		n     int
		ttl   time.Duration
	}{{"", 1, 0}, {"w", 0, 0}, {"w", 1, -1}, {strings.Repeat("o", MaxOwnerBytes+1), 1, 0}} {
		if _, _, _, err := s.Acquire(rcCtx, key, bad.owner, bad.n, bad.ttl); !errors.Is(err, kv.ErrInvalidValue) {
			t.Fatalf("Acquire(%q, %d, %v): %v, want ErrInvalidValue", bad.owner, bad.n, bad.ttl, err)
		}
	}
	// A key holding something else is not a semaphore.
	other := kv.TextKey("not-a-semaphore")
	if err := c.Set(rcCtx, other, kv.Int(3), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Acquire(rcCtx, other, "w1", 1, 0); !errors.Is(err, kv.ErrWrongType) {
		t.Fatalf("Acquire on an int: %v", err)
	}
}

func TestBoundedSemaphoreNeverExceedsN(t *testing.T) {
	c, _ := rcNew(t)
	s := BoundedSemaphore{Cache: c}
	key := kv.TextKey("permits")
	const workers, rounds, n = 16, 10, 3
	var (
		inside, most, done atomic.Int64
		failed             atomic.Bool
		wg                 sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("worker-%d", w)
			fail := func(what string, err error) {
				t.Errorf("%s %s: %v", owner, what, err)
				failed.Store(true)
			}
			for range rounds {
				for {
					ok, inUse, _, err := s.Acquire(rcCtx, key, owner, n, time.Minute)
					if err != nil {
						fail("Acquire", err)
						return
					}
					if inUse > n {
						fail("Acquire", fmt.Errorf("reported %d permits in use, bound %d", inUse, n))
						return
					}
					if ok {
						break
					}
					if failed.Load() {
						return
					}
					runtime.Gosched()
				}
				cur := inside.Add(1)
				for m := most.Load(); cur > m && !most.CompareAndSwap(m, cur); m = most.Load() {
				}
				runtime.Gosched()
				inside.Add(-1)
				done.Add(1)
				if _, err := s.Release(rcCtx, key, owner); err != nil {
					fail("Release", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() {
		t.FailNow()
	}
	if most.Load() > n || done.Load() != workers*rounds {
		t.Fatalf("at most %d holders at once (bound %d), %d sections done (want %d)", most.Load(), n, done.Load(), workers*rounds)
	}
	rcAbsent(t, c, key)
}

func TestAverager(t *testing.T) {
	c, clk := rcNew(t)
	a := Averager{Cache: c, Tag: kv.TextKey("stats")}
	key := kv.TextKey("latency")
	get := func(wantAvg float64, wantCount int64) {
		t.Helper()
		avg, n, err := a.Get(rcCtx, key)
		if err != nil || avg != wantAvg || n != wantCount {
			t.Fatalf("Get = %v, %d, %v; want %v, %d", avg, n, err, wantAvg, wantCount)
		}
	}
	add := func(v, want float64) {
		t.Helper()
		if avg, err := a.Add(rcCtx, key, v); err != nil || avg != want {
			t.Fatalf("Add(%v) = %v, %v; want %v", v, avg, err, want)
		}
	}

	get(0, 0)
	add(1, 1)
	add(2, 1.5)
	add(6, 3)
	get(3, 3)
	if text, it := rcText(t, c, key); text != `[9,3]` || !it.Tag.Equal(kv.TextKey("stats")) {
		t.Fatalf("averager item = %q tag %s; want python's (total, count) as [9,3]", text, it.Tag)
	}
	if avg, n, err := a.Pop(rcCtx, key); err != nil || avg != 3 || n != 3 {
		t.Fatalf("Pop = %v, %d, %v", avg, n, err)
	}
	rcAbsent(t, c, key)
	get(0, 0)
	if avg, n, err := a.Pop(rcCtx, key); err != nil || avg != 0 || n != 0 {
		t.Fatalf("Pop of nothing = %v, %d, %v", avg, n, err)
	}
	add(0.5, 0.5)
	if err := a.Reset(rcCtx, key); err != nil {
		t.Fatal(err)
	}
	get(0, 0)

	// Expire applies on every Add, as in python's Averager(expire=...).
	e := Averager{Cache: c, Expire: kv.ExpireAfter(10 * time.Second)}
	if _, err := e.Add(rcCtx, key, 4); err != nil {
		t.Fatal(err)
	}
	clk.Advance(6 * time.Second)
	if avg, err := e.Add(rcCtx, key, 8); err != nil || avg != 6 {
		t.Fatalf("Add = %v, %v", avg, err)
	}
	clk.Advance(6 * time.Second)
	get(6, 2)
	clk.Advance(4 * time.Second)
	get(0, 0)

	if _, err := a.Add(rcCtx, key, math.NaN()); !errors.Is(err, kv.ErrInvalidValue) {
		t.Fatalf("Add(NaN): %v", err)
	}
	other := kv.TextKey("words")
	if err := c.Set(rcCtx, other, kv.Text("hello"), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Add(rcCtx, other, 1); !errors.Is(err, kv.ErrWrongType) {
		t.Fatalf("Add on text: %v", err)
	}
	if _, _, err := a.Pop(rcCtx, other); !errors.Is(err, kv.ErrWrongType) {
		t.Fatalf("Pop on text: %v", err)
	}
	if text, _ := rcText(t, c, other); text != "hello" {
		t.Fatalf("a failed Pop removed the value: %q", text)
	}
}

func TestThrottle(t *testing.T) {
	c, clk := rcNew(t)
	th := Throttler{Cache: c}
	key := kv.TextKey("api")
	take := func(count int, per time.Duration, cost int, wantOK bool, wantRetry time.Duration, wantLeft float64) {
		t.Helper()
		ok, retry, left, err := th.Throttle(rcCtx, key, count, per, cost)
		if err != nil || ok != wantOK || retry != wantRetry || left != wantLeft {
			t.Fatalf("Throttle(%d/%v, cost %d) = %v %v %v, %v; want %v %v %v", count, per, cost, ok, retry, left, err, wantOK, wantRetry, wantLeft)
		}
	}

	// 4 per second: a full bucket allows a burst of exactly 4.
	for left := 3; left >= 0; left-- {
		take(4, time.Second, 1, true, 0, float64(left))
	}
	take(4, time.Second, 1, false, 250*time.Millisecond, 0)
	take(4, time.Second, 1, false, 250*time.Millisecond, 0) // a refusal costs nothing
	clk.Advance(125 * time.Millisecond)
	take(4, time.Second, 1, false, 125*time.Millisecond, 0.5)
	take(4, time.Second, 0, true, 0, 0.5) // cost 0 only looks
	clk.Advance(125 * time.Millisecond)
	take(4, time.Second, 1, true, 0, 0)
	take(4, time.Second, 2, false, 500*time.Millisecond, 0)
	clk.Advance(500 * time.Millisecond)
	take(4, time.Second, 2, true, 0, 0)

	// The bucket item expires when the bucket would be full again (1 s),
	// plus a margin.
	var st throttleState
	if text, _ := rcText(t, c, key); json.Unmarshal([]byte(text), &st) != nil || st.Tally != 0 || st.Last != clk.Now().UnixNano() {
		t.Fatalf("bucket item = %q", text)
	}
	clk.Advance(time.Second - time.Nanosecond)
	take(4, time.Second, 0, true, 0, 4-4e-9)
	clk.Advance(time.Nanosecond)
	take(4, time.Second, 0, true, 0, 4)
	clk.Advance(throttleMargin)
	rcAbsent(t, c, key)
	// Refill never goes past count.
	clk.Advance(time.Hour)
	take(4, time.Second, 1, true, 0, 3)

	// Waiting exactly the retryAfter of a refusal is always enough, also
	// with rates that are not exact in binary.
	for _, r := range []struct {
		count int
		per   time.Duration
	}{{3, time.Second}, {7, time.Second}, {10, 3 * time.Second}, {1, time.Minute}} {
		k := kv.TextKey(fmt.Sprintf("rate-%d-%v", r.count, r.per))
		allowed := 0
		for range 3 * r.count {
			ok, retry, _, err := th.Throttle(rcCtx, k, r.count, r.per, 1)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				allowed++
				continue
			}
			if retry <= 0 || retry > r.per/time.Duration(r.count)+1 {
				t.Fatalf("%d/%v: retryAfter %v, want (0, %v]", r.count, r.per, retry, r.per/time.Duration(r.count)+1)
			}
			clk.Advance(retry)
			if ok, _, _, err := th.Throttle(rcCtx, k, r.count, r.per, 1); err != nil || !ok {
				t.Fatalf("%d/%v: refused after waiting retryAfter %v: %v", r.count, r.per, retry, err)
			}
		}
		if allowed < r.count {
			t.Fatalf("%d/%v: only %d allowed without waiting", r.count, r.per, allowed)
		}
	}

	for _, bad := range []struct {
		count int
		per   time.Duration
		cost  int
	}{{0, time.Second, 0}, {1, 0, 1}, {2, time.Second, 3}, {2, time.Second, -1}} {
		if _, _, _, err := th.Throttle(rcCtx, key, bad.count, bad.per, bad.cost); !errors.Is(err, kv.ErrInvalidValue) {
			t.Fatalf("Throttle(%d, %v, %d): %v, want ErrInvalidValue", bad.count, bad.per, bad.cost, err)
		}
	}
	if err := c.Set(rcCtx, key, kv.Float(1.5), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := th.Throttle(rcCtx, key, 1, time.Second, 1); !errors.Is(err, kv.ErrWrongType) {
		t.Fatalf("Throttle on a float: %v", err)
	}
}

// rcPython returns the python-diskcache interpreter or skips (fails when
// DISKCACHE_REQUIRE_PYTHON is set).
func rcPython(t *testing.T) string {
	t.Helper()
	python := os.Getenv("PYTHON")
	if python == "" {
		python = "/usr/bin/python3"
	}
	if err := exec.Command(python, "-c", "import diskcache").Run(); err != nil {
		if os.Getenv("DISKCACHE_REQUIRE_PYTHON") != "" {
			t.Fatalf("python-diskcache oracle %s unavailable: %v", python, err)
		}
		t.Skipf("python-diskcache oracle %s unavailable: %v", python, err)
	}
	return python
}

// TestRecipesPythonInterop checks what python-diskcache makes of the
// recipes' state, and that a lock python holds keeps Go out.
func TestRecipesPythonInterop(t *testing.T) {
	python := rcPython(t)
	c, _ := rcNew(t)
	// The fake clock is in 2023: claims without expiry, so that python's
	// real clock does not see them as expired.
	if ok, _, _, err := (Lock{Cache: c}).Acquire(rcCtx, kv.TextKey("job"), "w1", 0); err != nil || !ok {
		t.Fatalf("Acquire = %v, %v", ok, err)
	}
	for _, v := range []float64{1, 2} {
		if _, err := (Averager{Cache: c}).Add(rcCtx, kv.TextKey("avg"), v); err != nil {
			t.Fatal(err)
		}
	}
	script := `
import json, sys
from diskcache import Cache
from diskcache.recipes import Lock
with Cache(sys.argv[1]) as c:
    out = {
        "locked": Lock(c, "job").locked(),
        "add": c.add("job", None),
        "owner": json.loads(c["job"])["owner"],
        "avg": json.loads(c["avg"]),
    }
    Lock(c, "pylock").acquire()
print(json.dumps(out, sort_keys=True))
`
	out, err := exec.Command(python, "-c", script, c.Directory()).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	want := `{"add": false, "avg": [3, 2], "locked": true, "owner": "w1"}`
	if got := strings.TrimSpace(string(out)); got != want {
		t.Fatalf("python saw %s, want %s", got, want)
	}
	l := Lock{Cache: c}
	rcAcquire(t, l, kv.TextKey("pylock"), "w1", time.Second, lockResult{false, "", 0})
	rcWantErr(t, "Release of python's lock", l.Release(rcCtx, kv.TextKey("pylock"), "w1"), kv.ErrNotOwner)
}

// While a semaphore is held its value is the one it was taken with: a
// second acquirer made with a larger value shared a one-permit semaphore
// (python-diskcache keeps the count left in the cache, whatever value a
// later BoundedSemaphore object was made with). Released, the next
// acquirer's value counts.
func TestBoundedSemaphoreKeepsItsValueWhileHeld(t *testing.T) {
	c, _ := rcNew(t)
	s := BoundedSemaphore{Cache: c}
	key := kv.TextKey("one")
	if ok, _, _, err := s.Acquire(rcCtx, key, "w1", 1, 0); err != nil || !ok {
		t.Fatalf("first acquire: %v %v", ok, err)
	}
	if ok, inUse, _, err := s.Acquire(rcCtx, key, "w2", 3, 0); err != nil || ok || inUse != 1 {
		t.Errorf("acquire with value 3 of a held one-permit semaphore: %v, %d in use, %v; want refused", ok, inUse, err)
	}
	if _, err := s.Release(rcCtx, key, "w1"); err != nil {
		t.Fatal(err)
	}
	for _, owner := range []string{"w2", "w3"} {
		if ok, _, _, err := s.Acquire(rcCtx, key, owner, 3, 0); err != nil || !ok {
			t.Errorf("acquire with value 3 once released (%s): %v %v", owner, ok, err)
		}
	}
}
