package engine

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// utRowKeys lists the keys of c's rows, expired ones included, by rowid.
func utRowKeys(t *testing.T, c *Cache) []string {
	t.Helper()
	cn, err := c.acquire(utCtx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.release(cn)
	rows, err := cn.queryRows(`SELECT key FROM Cache ORDER BY rowid`, 1)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, len(rows))
	for i, r := range rows {
		keys[i] = fmt.Sprint(r[0])
	}
	return keys
}

// TestExclusiveCullRemovesWhatPythonDiskcachesWould: an exclusive cache
// knows a floor under every expiry and skips looking for expired rows below
// it. Driven through the same random writes (expiries past, near, far and
// none, touches, deletes, adds, rows imported, transactions rolled back)
// on the same clock as a shared cache, which runs python-
// diskcache's statement on every write, it culls exactly the same rows,
// after every write. A floor kept too high would leave expired rows the
// shared cache culls.
func TestExclusiveCullRemovesWhatPythonDiskcachesWould(t *testing.T) {
	clk := newClock()
	overrides := map[settings.Name]any{settings.NameCullLimit: 2}
	open := func(exclusive bool) *Cache {
		c, err := Open(utCtx, t.TempDir(), Options{Settings: overrides, Now: clk.Now, Exclusive: exclusive})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	excl, shared := open(true), open(false)
	rng := rand.New(rand.NewPCG(1, 2))
	expiry := func() kv.Expiry {
		switch rng.IntN(5) {
		case 0:
			return kv.Expiry{}
		case 1:
			return kv.ExpireAfter(-time.Duration(rng.IntN(5)) * time.Second)
		case 2:
			return kv.ExpireAfter(time.Duration(rng.IntN(1000)) * time.Millisecond)
		default:
			return kv.ExpireAfter(time.Duration(rng.IntN(60)) * time.Second)
		}
	}
	errRollback := errors.New("roll back")
	skipped := 0
	for step := range 3000 {
		key := kv.TextKey(fmt.Sprintf("k%d", rng.IntN(40)))
		exp := expiry()
		op := rng.IntN(11)
		if excl.expiryFloor > clk.Now().Sub(time.Unix(0, 0)).Seconds() {
			skipped++
		}
		for _, c := range []*Cache{excl, shared} {
			var err error
			switch op {
			case 0, 1, 2, 3:
				err = c.Set(utCtx, key, kv.Int(int64(step)), kv.SetOptions{Expire: exp})
			case 4:
				_, err = c.Add(utCtx, key, kv.Int(int64(step)), kv.SetOptions{Expire: exp})
			case 5:
				_, err = c.Touch(utCtx, key, exp)
			case 6:
				_, err = c.Delete(utCtx, key)
			case 8:
				// A row moved in from another shard, as it was there.
				now := c.nowSeconds()
				row := Row{Key: key, StoreTime: now, AccessTime: now, Mode: modeRaw, Value: int64(step)}
				if exp.IsSet() {
					e := now + exp.Seconds()
					row.ExpireTime = &e
				}
				_, err = c.ImportRow(utCtx, row, nil)
			case 7:
				// Written, culled, then rolled back: the floor must be
				// as before.
				err = c.Transact(utCtx, func(tx *Tx) error {
					if err := tx.Set(key, kv.Int(0), kv.SetOptions{Expire: kv.ExpireAfter(-time.Second)}); err != nil {
						return err
					}
					return errRollback
				})
				if errors.Is(err, errRollback) {
					err = nil
				}
			default:
				clk.Advance(time.Duration(rng.IntN(3000)) * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("step %d, op %d: %v", step, op, err)
			}
		}
		if got, want := utRowKeys(t, excl), utRowKeys(t, shared); !slices.Equal(got, want) {
			t.Fatalf("step %d (op %d): the exclusive cache holds %v, the shared one %v", step, op, got, want)
		}
	}
	if got, want := excl.Counters().Expired, shared.Counters().Expired; got != want || got == 0 {
		t.Errorf("expired: exclusive %d, shared %d, want equal and not 0", got, want)
	}
	if skipped == 0 {
		t.Error("the floor never let a cull skip its look: the test does not test the floor")
	}
	t.Logf("%d of 3000 writes found every expiry after now", skipped)
}

// TestExpiryFloorIgnoresRolledBackJobs: in a batch of writes (group
// commit), a job that culled expired rows and then failed is rolled back
// to its savepoint, and those rows are back: the floor its cull raised
// must not stay, or the next writes would skip them. The floor a job that
// committed lowered stays.
func TestExpiryFloorIgnoresRolledBackJobs(t *testing.T) {
	clk := newClock()
	c, err := Open(utCtx, t.TempDir(), Options{Settings: map[settings.Name]any{settings.NameCullLimit: 2}, Now: clk.Now, Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, k := range []string{"e1", "e2"} {
		utSet(t, c, kv.TextKey(k), kv.Int(0), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	}
	utSet(t, c, kv.TextKey("later"), kv.Int(0), kv.SetOptions{Expire: kv.ExpireAfter(time.Hour)})
	clk.Advance(time.Minute) // e1 and e2 have expired

	// Hold the writer, so that the jobs below queue and run as one batch.
	release := utHoldWriter(c)
	errFail := errors.New("fail on purpose")
	jobs := []func(tx *Tx) error{
		func(tx *Tx) error { // culls e1 and e2, then fails
			if err := tx.Set(kv.TextKey("x"), kv.Int(0), kv.SetOptions{}); err != nil {
				return err
			}
			return errFail
		},
		func(tx *Tx) error { // commits an earlier expiry for "later" (a touch does not cull)
			_, err := tx.Touch(kv.TextKey("later"), kv.ExpireAfter(time.Minute))
			return err
		},
	}
	results := make(chan error, len(jobs))
	for i, fn := range jobs {
		go func() { results <- c.Transact(utCtx, fn) }()
		for c.queueLen() < i+1 { // queued in this order
			runtime.Gosched()
		}
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	var failed int
	for range jobs {
		if err := <-results; errors.Is(err, errFail) {
			failed++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if failed != 1 {
		t.Fatalf("%d jobs failed, want 1", failed)
	}
	if got := utRowKeys(t, c); !slices.Equal(got, []string{"e1", "e2", "later"}) {
		t.Fatalf("rows %v after the batch, want e1 and e2 back", got)
	}
	// The next write culls them.
	utSet(t, c, kv.TextKey("z"), kv.Int(0), kv.SetOptions{})
	if got := utRowKeys(t, c); !slices.Equal(got, []string{"later", "z"}) {
		t.Fatalf("rows %v after the next write, want e1 and e2 culled", got)
	}
	// And the floor is the touched expiry: nothing expires before it.
	if want := c.nowSeconds() + 60; c.expiryFloor != want {
		t.Errorf("floor %v, want the touched expiry %v", c.expiryFloor, want)
	}
}
