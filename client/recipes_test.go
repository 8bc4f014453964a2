package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// TestLockMutualExclusion: eight clients take one lock through HTTP with
// wait=; no two are ever inside the critical section at once and no
// increment of the (deliberately non-atomic) counter is lost.
func TestLockMutualExclusion(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	key := kv.TextKey("the-lock")
	const workers, rounds = 8, 12
	var inside atomic.Bool
	var counter atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := c.Lock(key)
			owner := fmt.Sprintf("worker-%d", w)
			for r := 0; r < rounds; r++ {
				st, err := l.Acquire(ctx, owner, time.Minute, 25*time.Second)
				if err != nil || !st.Acquired || st.Holder != owner {
					t.Errorf("%s: Acquire = %+v, %v", owner, st, err)
					return
				}
				if !inside.CompareAndSwap(false, true) {
					t.Errorf("%s: entered the critical section while another client was in it", owner)
				}
				v := counter.Load()
				runtime.Gosched()
				counter.Store(v + 1)
				inside.Store(false)
				if n, err := l.Release(ctx, owner); err != nil || n != 0 {
					t.Errorf("%s: Release = %d, %v", owner, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := counter.Load(); got != workers*rounds {
		t.Fatalf("counter = %d, want %d", got, workers*rounds)
	}
	if st, err := c.Lock(key).Status(ctx); err != nil || st.Locked {
		t.Fatalf("Status after all released = %+v, %v", st, err)
	}
}

func TestLockAndRLockOverHTTP(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	l := c.Lock(kv.IntKey(42))
	st, err := l.Acquire(ctx, "alice", time.Hour, 0)
	if err != nil || !st.Acquired || st.Holder != "alice" || st.Count != 1 || st.Remaining <= 0 {
		t.Fatalf("Acquire = %+v, %v", st, err)
	}
	if st, err := l.Acquire(ctx, "bob", 0, 0); err != nil || st.Acquired || st.Holder != "alice" {
		t.Fatalf("Acquire by bob = %+v, %v", st, err)
	}
	if _, err := l.Release(ctx, "bob"); !errors.Is(err, client.ErrNotOwner) {
		t.Fatalf("Release by bob: %v, want ErrNotOwner", err)
	}
	if err := l.Refresh(ctx, "bob", time.Hour); !errors.Is(err, client.ErrNotOwner) {
		t.Fatalf("Refresh by bob: %v, want ErrNotOwner", err)
	}
	if err := l.Refresh(ctx, "alice", 0); err != nil {
		t.Fatal(err)
	}
	if st, err := l.Status(ctx); err != nil || !st.Locked || st.Holder != "alice" || st.Remaining != 0 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	if _, err := l.Release(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Release(ctx, "alice"); !errors.Is(err, client.ErrNotOwner) {
		t.Fatalf("second Release: %v, want ErrNotOwner", err)
	}
	// A claim that expires frees the lock for a waiter: the server waits
	// for the expiry the engine reports.
	if st, err := l.Acquire(ctx, "alice", 50*time.Millisecond, 0); err != nil || !st.Acquired {
		t.Fatalf("short Acquire = %+v, %v", st, err)
	}
	if st, err := l.Acquire(ctx, "bob", 0, 20*time.Second); err != nil || !st.Acquired || st.Holder != "bob" {
		t.Fatalf("waiting Acquire = %+v, %v", st, err)
	}

	rl := c.RLock(kv.TextKey("re"))
	for depth := 1; depth <= 2; depth++ {
		if st, err := rl.Acquire(ctx, "alice", 0, 0); err != nil || !st.Acquired || st.Count != depth {
			t.Fatalf("RLock Acquire #%d = %+v, %v", depth, st, err)
		}
	}
	if st, err := rl.Acquire(ctx, "bob", 0, 0); err != nil || st.Acquired || st.Holder != "alice" || st.Count != 2 {
		t.Fatalf("RLock Acquire by bob = %+v, %v", st, err)
	}
	if st, err := rl.Status(ctx); err != nil || !st.Locked || st.Count != 2 {
		t.Fatalf("RLock Status = %+v, %v", st, err)
	}
	for want := 1; want >= 0; want-- {
		if n, err := rl.Release(ctx, "alice"); err != nil || n != want {
			t.Fatalf("RLock Release = %d, %v; want %d", n, err, want)
		}
	}
	if _, err := rl.Release(ctx, "alice"); !errors.Is(err, client.ErrNotOwner) {
		t.Fatalf("RLock over-release: %v", err)
	}
}

// TestSemaphoreBound: eight clients share three permits; never more than
// three are inside at once.
func TestSemaphoreBound(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	key := kv.TextKey("pool")
	const workers, rounds, permits = 8, 6, 3
	var inUse, peak, total atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := c.Semaphore(key, permits)
			owner := fmt.Sprintf("w%d", w)
			for r := 0; r < rounds; r++ {
				st, err := s.Acquire(ctx, owner, time.Minute, 25*time.Second)
				if err != nil || !st.Acquired || st.InUse > permits {
					t.Errorf("%s: Acquire = %+v, %v", owner, st, err)
					return
				}
				n := inUse.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				total.Add(1)
				runtime.Gosched()
				inUse.Add(-1)
				if _, err := s.Release(ctx, owner); err != nil {
					t.Errorf("%s: Release: %v", owner, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > permits || total.Load() != workers*rounds {
		t.Fatalf("peak %d permits in use (bound %d), %d acquisitions", p, permits, total.Load())
	}

	s := c.Semaphore(key, 2)
	for _, owner := range []string{"a", "b"} {
		if st, err := s.Acquire(ctx, owner, 0, 0); err != nil || !st.Acquired {
			t.Fatalf("Acquire %s = %+v, %v", owner, st, err)
		}
	}
	if st, err := s.Acquire(ctx, "c", 0, 0); err != nil || st.Acquired || st.InUse != 2 || st.RetryAfter != 0 {
		t.Fatalf("Acquire beyond the bound = %+v, %v", st, err)
	}
	if holders, n, err := s.Holders(ctx); err != nil || n != 2 || holders["a"] != 1 || holders["b"] != 1 {
		t.Fatalf("Holders = %v %d %v", holders, n, err)
	}
	if _, err := s.Release(ctx, "c"); !errors.Is(err, client.ErrNotOwner) {
		t.Fatalf("Release by a non-holder: %v, want ErrNotOwner", err)
	}
	if err := s.Refresh(ctx, "c", time.Minute); !errors.Is(err, client.ErrNotOwner) {
		t.Fatalf("Refresh by a non-holder: %v, want ErrNotOwner", err)
	}
	if err := s.Refresh(ctx, "a", time.Minute); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Release(ctx, "a"); err != nil || n != 1 {
		t.Fatalf("Release a = %d, %v", n, err)
	}
}

func TestAveragerAndRateLimitOverHTTP(t *testing.T) {
	ctx := context.Background()
	srv, c := startServer(t)
	a := c.Averager(kv.TextKey("latency"))
	if _, _, err := a.Get(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Get of no average: %v", err)
	}
	for i, x := range []float64{1, 2, 6} {
		avg, n, err := a.Add(ctx, x)
		if err != nil || n != int64(i+1) {
			t.Fatalf("Add(%v) = %v %d %v", x, avg, n, err)
		}
	}
	if avg, n, err := a.Get(ctx); err != nil || avg != 3 || n != 3 {
		t.Fatalf("Get = %v %d %v", avg, n, err)
	}
	if avg, n, err := a.Pop(ctx); err != nil || avg != 3 || n != 3 {
		t.Fatalf("Pop = %v %d %v", avg, n, err)
	}
	if _, _, err := a.Pop(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Pop of no average: %v", err)
	}

	rl := c.RateLimit(kv.TextKey("api"), 3, time.Hour)
	for i := 0; i < 3; i++ {
		if res, err := rl.Take(ctx, 1); err != nil || !res.Allowed {
			t.Fatalf("Take #%d = %+v, %v", i, res, err)
		}
	}
	res, err := rl.Take(ctx, 1)
	if !errors.Is(err, client.ErrRateLimited) || res.Allowed || res.RetryAfter <= 0 {
		t.Fatalf("Take after the burst = %+v, %v; want ErrRateLimited", res, err)
	}
	// The raw answer: 429, Retry-After in whole seconds, the JSON body.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/ratelimits/api?count=3&per=3600", nil)
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusTooManyRequests || err != nil || ra < 1 ||
		body["error"] != wire.CodeRateLimited || body["allowed"] != false || body["retry_after"] == nil || body["remaining"] == nil {
		t.Fatalf("raw 429 = %d Retry-After %q body %v", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if res, err := c.RateLimit(kv.TextKey("other"), 3, time.Hour).Take(ctx, 3); err != nil || !res.Allowed {
		t.Fatalf("another key's bucket = %+v, %v", res, err)
	}
}

// Each recipe's state item carries the tag it was given (python-diskcache's
// recipes take tag=), on every write of it, so that Evict(tag) removes it;
// an average's expiry is renewed by each Add.
func TestRecipeStateIsTagged(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	cc := c.Cache("")
	a := c.Averager(kv.TextKey("avg")).With(kv.SetOptions{Tag: kv.TextKey("a"), Expire: kv.ExpireAfter(time.Hour)})
	for _, x := range []float64{1, 3} {
		if _, _, err := a.Add(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	rl := c.RLock(kv.TextKey("rlock")).WithTag(kv.TextKey("l"))
	for range 2 {
		if st, err := rl.Acquire(ctx, "me", 0, 0); err != nil || !st.Acquired {
			t.Fatalf("acquire = %+v, %v", st, err)
		}
	}
	if _, err := rl.Release(ctx, "me"); err != nil { // held once more: written again
		t.Fatal(err)
	}
	if st, err := c.Semaphore(kv.TextKey("sem"), 2).WithTag(kv.TextKey("s")).Acquire(ctx, "me", 0, 0); err != nil || !st.Acquired {
		t.Fatalf("semaphore acquire = %+v, %v", st, err)
	}
	if res, err := c.RateLimit(kv.TextKey("bucket"), 3, time.Hour).WithTag(kv.TextKey("r")).Take(ctx, 1); err != nil || !res.Allowed {
		t.Fatalf("take = %+v, %v", res, err)
	}
	for key, tag := range map[string]string{"avg": "a", "rlock": "l", "sem": "s", "bucket": "r"} {
		it, ok, err := cc.Get(ctx, kv.TextKey(key))
		if !ok || err != nil || it.Tag != kv.TextKey(tag) {
			t.Errorf("%s: tag %v (found %v, %v); want %s", key, it.Tag, ok, err, tag)
		}
		if key == "avg" && it.ExpireTime == 0 {
			t.Errorf("avg: no expiry after Add with one")
		}
		if n, err := cc.Evict(ctx, kv.TextKey(tag)); n != 1 || err != nil {
			t.Errorf("evict %s = %d, %v; want 1", tag, n, err)
		}
	}
}
