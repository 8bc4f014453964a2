package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// queueLen reports how many writers wait for the writer.
func (c *Cache) queueLen() int {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return len(c.w.queue)
}

// TestGroupCommitIsolatesFailures queues writers behind a held transaction
// so they run as one batch, and checks that a failing or panicking writer
// rolls back only its own changes and files.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	for _, yield := range []bool{false, true} {
		t.Run(fmt.Sprintf("BatchYield=%v", yield), func(t *testing.T) { testGroupCommitIsolatesFailures(t, yield) })
	}
}

func testGroupCommitIsolatesFailures(t *testing.T, yield bool) {
	ctx := context.Background()
	c, err := Open(ctx, t.TempDir(), Options{Settings: map[settings.Name]any{settings.NameDiskMinFileSize: 16}, BatchYield: yield})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	release := utHoldWriter(c)

	const writers = 40
	errFail := errors.New("fail on purpose")
	results := make([]error, writers)
	panics := make([]any, writers)
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { panics[i] = recover() }()
			results[i] = c.Transact(ctx, func(tx *Tx) error {
				big := bytes.Repeat([]byte{byte(i)}, 64) // file-backed
				if err := tx.Set(kv.IntKey(int64(i)), kv.Bytes(big), kv.SetOptions{}); err != nil {
					return err
				}
				if _, err := tx.Incr(kv.TextKey("total"), kv.Int(1), kv.Int(0)); err != nil {
					return err
				}
				switch i % 5 {
				case 1:
					return errFail
				case 2:
					panic(fmt.Sprintf("panic %d", i))
				}
				return nil
			})
		}()
	}
	for c.queueLen() < writers {
		runtime.Gosched()
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	ok := 0
	for i := 0; i < writers; i++ {
		it, found, err := c.Get(ctx, kv.IntKey(int64(i)), GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		switch i % 5 {
		case 1:
			if !errors.Is(results[i], errFail) || found {
				t.Errorf("writer %d: err %v, key found %v; want its error and no key", i, results[i], found)
			}
		case 2:
			if panics[i] != fmt.Sprintf("panic %d", i) || found {
				t.Errorf("writer %d: panic %v, key found %v; want its own panic and no key", i, panics[i], found)
			}
		default:
			ok++
			if results[i] != nil || panics[i] != nil || !found || len(it.Value.Data) != 64 || it.Value.Data[0] != byte(i) {
				t.Errorf("writer %d: err %v panic %v found %v value %v", i, results[i], panics[i], found, it.Value)
			}
		}
	}
	total, _, _ := c.Get(ctx, kv.TextKey("total"), GetOptions{})
	if !total.Value.Equal(kv.Int(int64(ok))) {
		t.Errorf("total = %s, want %d: failed writers' increments must be rolled back", total.Value, ok)
	}
	// Files of rolled-back writes are gone; Check finds nothing to fix.
	warns, err := c.Check(ctx, false)
	if err != nil || len(warns) != 0 {
		t.Fatalf("Check = %v, %v", warns, err)
	}
}

// With BatchYield, concurrent writers that each find the writer idle or
// busy all commit, each exactly once, whichever batch they land in.
func TestBatchYieldCommitsEveryWrite(t *testing.T) {
	ctx := context.Background()
	c, err := Open(ctx, t.TempDir(), Options{BatchYield: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const writers, each = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := c.Set(ctx, kv.IntKey(int64(w*each+i)), kv.Int(int64(i)), kv.SetOptions{}); err != nil {
					errs <- err
					return
				}
				if _, err := c.Incr(ctx, kv.TextKey("n"), kv.Int(1), kv.Int(0)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n, _, err := c.Get(ctx, kv.TextKey("n"), GetOptions{})
	if err != nil || !n.Value.Equal(kv.Int(writers*each)) {
		t.Fatalf("n = %v, %v; want %d", n.Value, err, writers*each)
	}
	for k := range writers * each {
		it, found, err := c.Get(ctx, kv.IntKey(int64(k)), GetOptions{})
		if err != nil || !found || !it.Value.Equal(kv.Int(int64(k%each))) {
			t.Fatalf("key %d: %v %v %v", k, it.Value, found, err)
		}
	}
}

// TestAbandonedWritesAreNotApplied queues writes behind a held transaction
// and gives up on some of them while they wait, without ending their
// contexts (as a stopped process finds them when it runs again): those are
// not applied, the others are, in the same batch.
func TestAbandonedWritesAreNotApplied(t *testing.T) {
	ctx := context.Background()
	c, err := Open(ctx, t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Alone, a write given up on before it runs is not applied either.
	gone := kv.WithAbandoned(ctx, func() bool { return true })
	if err := c.Set(gone, kv.TextKey("alone"), kv.Text("v"), kv.SetOptions{}); !errors.Is(err, kv.ErrAbandoned) {
		t.Fatalf("Set given up on: %v, want ErrAbandoned", err)
	}

	release := utHoldWriter(c)
	const writers = 10
	var abandoned [writers]atomic.Bool
	results := make([]error, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wctx := kv.WithAbandoned(ctx, abandoned[i].Load)
			results[i] = c.Set(wctx, kv.IntKey(int64(i)), kv.Int(int64(i)), kv.SetOptions{})
		}()
	}
	for c.queueLen() < writers {
		runtime.Gosched()
	}
	for i := 0; i < writers; i += 3 {
		abandoned[i].Store(true) // while it waits its turn
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	for i := range writers {
		_, found, err := c.Get(ctx, kv.IntKey(int64(i)), GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if want := !abandoned[i].Load(); found != want || (results[i] == nil) != want {
			t.Errorf("write %d (given up on: %v): %v, stored %v", i, !want, results[i], found)
		}
		if abandoned[i].Load() && !errors.Is(results[i], kv.ErrAbandoned) {
			t.Errorf("write %d given up on: %v, want ErrAbandoned", i, results[i])
		}
	}
	if _, found, _ := c.Get(ctx, kv.TextKey("alone"), GetOptions{}); found {
		t.Error("the lone write given up on was stored")
	}
}
