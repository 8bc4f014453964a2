package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

func TestTransactCommitsTogether(t *testing.T) {
	c, _ := openTest(t, nil)
	utSet(t, c, kv.TextKey("gone"), kv.Int(1), kv.SetOptions{})
	utSet(t, c, kv.TextKey("n"), kv.Int(10), kv.SetOptions{})
	err := c.Transact(utCtx, func(tx *Tx) error {
		if err := tx.Set(kv.TextKey("a"), kv.Int(1), kv.SetOptions{}); err != nil {
			return err
		}
		if ok, err := tx.Add(kv.TextKey("b"), kv.Int(2), kv.SetOptions{}); !ok || err != nil {
			return fmt.Errorf("add: %v, %v", ok, err)
		}
		if ok, err := tx.Delete(kv.TextKey("gone")); !ok || err != nil {
			return fmt.Errorf("delete: %v, %v", ok, err)
		}
		if _, err := tx.Incr(kv.TextKey("n"), kv.Int(5), kv.Int(0)); err != nil {
			return err
		}
		// The transaction sees its own writes.
		if it, ok, err := tx.Get(kv.TextKey("a"), GetOptions{}); !ok || err != nil || !it.Value.Equal(kv.Int(1)) {
			return fmt.Errorf("get in tx: %+v, %v, %v", it, ok, err)
		}
		if ok, err := tx.Contains(kv.TextKey("gone")); ok || err != nil {
			return fmt.Errorf("contains in tx: %v, %v", ok, err)
		}
		if ok, err := tx.Touch(kv.TextKey("b"), kv.ExpireAfter(time.Hour)); !ok || err != nil {
			return fmt.Errorf("touch in tx: %v, %v", ok, err)
		}
		if _, err := tx.Decr(kv.TextKey("n"), kv.Int(1), kv.Int(0)); err != nil {
			return err
		}
		if it, ok, err := tx.Pop(kv.TextKey("b"), GetOptions{}); !ok || err != nil || it.ExpireTime != t0+3600 {
			return fmt.Errorf("pop in tx: %+v, %v, %v", it, ok, err)
		}
		if tx.Settings().CullLimit != 10 {
			return errors.New("tx settings")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	utWant(t, c, kv.TextKey("a"), kv.Int(1))
	utMiss(t, c, kv.TextKey("b"))
	utMiss(t, c, kv.TextKey("gone"))
	utWant(t, c, kv.TextKey("n"), kv.Int(14))
}

func TestTransactRollsBackTogether(t *testing.T) {
	c, _ := openTest(t, nil)
	utSet(t, c, kv.TextKey("keep"), kv.Int(1), kv.SetOptions{})
	utSet(t, c, kv.TextKey("n"), kv.Int(10), kv.SetOptions{})
	boom := errors.New("boom")
	err := c.Transact(utCtx, func(tx *Tx) error {
		tx.Set(kv.TextKey("a"), kv.Int(1), kv.SetOptions{})
		tx.Delete(kv.TextKey("keep"))
		tx.Incr(kv.TextKey("n"), kv.Int(5), kv.Int(0))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Transact = %v, want the function's error", err)
	}
	utMiss(t, c, kv.TextKey("a"))
	utWant(t, c, kv.TextKey("keep"), kv.Int(1))
	utWant(t, c, kv.TextKey("n"), kv.Int(10))
	if n := utLen(t, c); n != 2 {
		t.Fatalf("Len = %d", n)
	}
	// An operation error inside (Incr on text) rolls back the earlier writes.
	utSet(t, c, kv.TextKey("text"), kv.Text("x"), kv.SetOptions{})
	err = c.Transact(utCtx, func(tx *Tx) error {
		tx.Set(kv.TextKey("a"), kv.Int(1), kv.SetOptions{})
		_, err := tx.Incr(kv.TextKey("text"), kv.Int(1), kv.Int(0))
		return err
	})
	if !errors.Is(err, kv.ErrNotNumeric) {
		t.Fatalf("Transact = %v, want ErrNotNumeric", err)
	}
	utMiss(t, c, kv.TextKey("a"))
	// A panic rolls back and propagates.
	func() {
		defer func() {
			if p := recover(); p != "kaboom" {
				t.Fatalf("recovered %v", p)
			}
		}()
		c.Transact(utCtx, func(tx *Tx) error {
			tx.Set(kv.TextKey("a"), kv.Int(1), kv.SetOptions{})
			panic("kaboom")
		})
	}()
	utMiss(t, c, kv.TextKey("a"))
	// The cache is usable afterwards (the write lock was released).
	utSet(t, c, kv.TextKey("after"), kv.Int(1), kv.SetOptions{})
	utWant(t, c, kv.TextKey("after"), kv.Int(1))
}

// TestValueFilesRemovedOnlyAfterCommit: a transaction that overwrites or
// deletes file-backed items and then fails leaves the old files and values
// intact and removes the files it created; one that commits removes the old
// files.
func TestValueFilesRemovedOnlyAfterCommit(t *testing.T) {
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 10})
	oldK, oldD := kv.Bytes(utBig(100, 'k')), kv.Bytes(utBig(100, 'd'))
	utSet(t, c, kv.TextKey("k"), oldK, kv.SetOptions{})
	utSet(t, c, kv.TextKey("d"), oldD, kv.SetOptions{})
	utPush(t, c, kv.Bytes(utBig(100, 'q')), QueueOptions{}, kv.SetOptions{})
	before := utValFiles(t, c)
	if len(before) != 3 {
		t.Fatalf("files = %v", before)
	}
	boom := errors.New("boom")
	for _, fail := range []func() error{
		func() error { return boom },
		func() error { panic(boom) },
	} {
		func() {
			defer func() { recover() }()
			err := c.Transact(utCtx, func(tx *Tx) error {
				if err := tx.Set(kv.TextKey("k"), kv.Bytes(utBig(200, 'K')), kv.SetOptions{}); err != nil {
					return err
				}
				if err := tx.Set(kv.TextKey("new"), kv.Bytes(utBig(200, 'N')), kv.SetOptions{Body: nil}); err != nil {
					return err
				}
				if err := tx.Set(kv.TextKey("streamed"), kv.Value{}, kv.SetOptions{Body: bytesReader(utBig(50, 's'))}); err != nil {
					return err
				}
				if ok, err := tx.Delete(kv.TextKey("d")); !ok || err != nil {
					return fmt.Errorf("delete: %v %v", ok, err)
				}
				if _, ok, err := tx.Pull(QueueOptions{}, GetOptions{}); !ok || err != nil {
					return fmt.Errorf("pull: %v %v", ok, err)
				}
				if _, err := tx.Push(kv.Bytes(utBig(100, 'P')), QueueOptions{}, kv.SetOptions{}); err != nil {
					return err
				}
				if ok, err := tx.Add(kv.TextKey("k"), kv.Bytes(utBig(100, 'A')), kv.SetOptions{}); ok || err != nil {
					return fmt.Errorf("add: %v %v", ok, err)
				}
				// Inside the transaction, the old files are still there.
				for _, f := range before {
					if _, err := os.Stat(c.Directory() + "/" + f); err != nil {
						return fmt.Errorf("file removed before commit: %v", err)
					}
				}
				return fail()
			})
			if !errors.Is(err, boom) {
				t.Fatalf("Transact = %v", err)
			}
		}()
		if got := utValFiles(t, c); fmt.Sprint(got) != fmt.Sprint(before) {
			t.Fatalf("files after rollback = %v, want %v", got, before)
		}
		utWant(t, c, kv.TextKey("k"), oldK)
		utWant(t, c, kv.TextKey("d"), oldD)
		utMiss(t, c, kv.TextKey("new"))
		if it, ok := utTake(t, c, false, QueueOptions{}); !ok || it.Value.Data[0] != 'q' {
			t.Fatalf("queue after rollback = %+v", it)
		}
		utWantKinds(t, utCheck(t, c, false))
	}

	// Committed: the overwritten, deleted and pulled items' files go.
	err := c.Transact(utCtx, func(tx *Tx) error {
		if err := tx.Set(kv.TextKey("k"), kv.Bytes(utBig(200, 'K')), kv.SetOptions{}); err != nil {
			return err
		}
		if _, err := tx.Delete(kv.TextKey("d")); err != nil {
			return err
		}
		_, _, err := tx.Pull(QueueOptions{}, GetOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	after := utValFiles(t, c)
	if len(after) != 1 || after[0] == before[0] || after[0] == before[1] || after[0] == before[2] {
		t.Fatalf("files after commit = %v (before %v)", after, before)
	}
	utWant(t, c, kv.TextKey("k"), kv.Bytes(utBig(200, 'K')))
	utCheckConverges(t, c)
}

type byteReader struct {
	b []byte
}

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func bytesReader(b []byte) *byteReader { return &byteReader{b: b} }

// TestTimeoutAcrossCaches holds a write transaction in one Cache while a
// second Cache on the same directory (as another process would) waits
// 50ms and fails with ErrTimeout.
func TestTimeoutAcrossCaches(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	a := utOpenAt(t, dir, clk, nil)
	utSet(t, a, kv.TextKey("k"), kv.Int(1), kv.SetOptions{})
	b, err := Open(utCtx, dir, Options{Timeout: 50 * time.Millisecond, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	held, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- a.Transact(utCtx, func(tx *Tx) error {
			if err := tx.Set(kv.TextKey("k"), kv.Int(2), kv.SetOptions{}); err != nil {
				return err
			}
			close(held)
			<-release
			return nil
		})
	}()
	<-held

	err = b.Set(utCtx, kv.TextKey("other"), kv.Int(1), kv.SetOptions{})
	var te *kv.TimeoutError
	if !errors.Is(err, kv.ErrTimeout) || !errors.As(err, &te) || te.Op != "set" {
		t.Errorf("Set while locked = %v, want a set TimeoutError", err)
	}
	if _, err := b.Incr(utCtx, kv.TextKey("n"), kv.Int(1), kv.Int(0)); !errors.Is(err, kv.ErrTimeout) {
		t.Errorf("Incr while locked = %v, want ErrTimeout", err)
	}
	if _, err := b.Delete(utCtx, kv.TextKey("k")); !errors.Is(err, kv.ErrTimeout) {
		t.Errorf("Delete while locked = %v, want ErrTimeout", err)
	}
	n, err := b.Clear(utCtx)
	if !errors.As(err, &te) || te.Op != "clear" || te.Removed != 0 || n != 0 {
		t.Errorf("Clear while locked = %d, %v; want a clear TimeoutError", n, err)
	}
	if _, err := b.Expire(utCtx, 0); !errors.Is(err, kv.ErrTimeout) {
		t.Errorf("Expire while locked = %v, want ErrTimeout", err)
	}
	if err := b.Transact(utCtx, func(*Tx) error { return nil }); !errors.Is(err, kv.ErrTimeout) {
		t.Errorf("Transact while locked = %v, want ErrTimeout", err)
	}
	// Readers are not blocked and see the last committed value.
	utWant(t, b, kv.TextKey("k"), kv.Int(1))
	if ok, err := b.Contains(utCtx, kv.TextKey("k")); !ok || err != nil {
		t.Errorf("Contains while locked = %v, %v", ok, err)
	}

	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	utWant(t, b, kv.TextKey("k"), kv.Int(2))
	utSet(t, b, kv.TextKey("other"), kv.Int(3), kv.SetOptions{})
	utWant(t, a, kv.TextKey("other"), kv.Int(3))
}

// TestTimeoutInProcess: writers of one Cache wait for each other at most
// the timeout.
func TestTimeoutInProcess(t *testing.T) {
	for _, timeout := range []time.Duration{50 * time.Millisecond, -1} {
		c, err := Open(utCtx, t.TempDir(), Options{Timeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		release := utHoldWriter(c)
		if err := c.Set(utCtx, kv.TextKey("k"), kv.Int(1), kv.SetOptions{}); !errors.Is(err, kv.ErrTimeout) {
			t.Errorf("timeout %v: Set = %v, want ErrTimeout", timeout, err)
		}
		// A cancelled context ends the wait with the context's error.
		ctx, cancel := context.WithCancel(utCtx)
		cancel()
		if timeout > 0 {
			if err := c.Set(ctx, kv.TextKey("k"), kv.Int(1), kv.SetOptions{}); !errors.Is(err, context.Canceled) {
				t.Errorf("Set with a cancelled context = %v", err)
			}
		}
		if err := release(); err != nil {
			t.Fatal(err)
		}
		if err := c.Set(utCtx, kv.TextKey("k"), kv.Int(1), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

func TestConcurrentAddExactlyOnce(t *testing.T) {
	c, _ := openTest(t, nil)
	const workers, keys = 16, 1000
	var wins atomic.Int64
	winner := make([]atomic.Int32, keys)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < keys; i++ {
				k := (i + w*61) % keys // different starting points
				ok, err := c.Add(utCtx, kv.IntKey(int64(k)), kv.Int(int64(w)), kv.SetOptions{})
				if err != nil {
					errs <- err
					return
				}
				if ok {
					wins.Add(1)
					winner[k].Store(int32(w))
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := wins.Load(); got != keys {
		t.Fatalf("%d adds succeeded, want %d", got, keys)
	}
	if n := utLen(t, c); n != keys {
		t.Fatalf("Len = %d", n)
	}
	// Each key holds the value of the goroutine that won it.
	for k := 0; k < keys; k += 97 {
		utWant(t, c, kv.IntKey(int64(k)), kv.Int(int64(winner[k].Load())))
	}
}

func TestConcurrentIncrExact(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	// Two Caches on one directory stand in for two processes.
	caches := []*Cache{utOpenAt(t, dir, clk, nil), utOpenAt(t, dir, clk, nil)}
	const perCache, each = 4, 150
	var wg sync.WaitGroup
	errs := make(chan error, 2*perCache)
	for _, c := range caches {
		for g := 0; g < perCache; g++ {
			wg.Add(1)
			go func(c *Cache, g int) {
				defer wg.Done()
				for i := 0; i < each; i++ {
					var err error
					if g%2 == 0 {
						_, err = c.Incr(utCtx, kv.TextKey("n"), kv.Int(2), kv.Int(0))
					} else {
						_, err = c.Decr(utCtx, kv.TextKey("n"), kv.Int(1), kv.Int(0))
					}
					if err == nil && i%10 == 0 {
						_, err = c.Incr(utCtx, kv.TextKey("f"), kv.Float(0.5), kv.Int(0))
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}(c, g)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Per cache: two goroutines add 2 each time, two subtract 1.
	want := int64(len(caches) * (2*each*2 - 2*each))
	utWant(t, caches[0], kv.TextKey("n"), kv.Int(want))
	utWant(t, caches[1], kv.TextKey("f"), kv.Float(float64(len(caches)*perCache*each/10)*0.5))
}

// TestConcurrentReadersSeeWholeValues: readers racing a writer that keeps
// replacing a file-backed value see either a whole value or a miss.
func TestConcurrentReadersSeeWholeValues(t *testing.T) {
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 100})
	utSet(t, c, kv.TextKey("k"), kv.Bytes(utBig(1000, 'a')), kv.SetOptions{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				it, ok, err := c.Get(utCtx, kv.TextKey("k"), GetOptions{})
				if err != nil {
					errs <- err
					return
				}
				if !ok {
					continue
				}
				d := it.Value.Data
				if len(d) != 1000 || d[0] != d[999] {
					errs <- fmt.Errorf("torn value: %d bytes", len(d))
					return
				}
			}
		}()
	}
	for i := 0; i < 60; i++ {
		utSet(t, c, kv.TextKey("k"), kv.Bytes(utBig(1000, byte('a'+i%26))), kv.SetOptions{})
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if files := utValFiles(t, c); len(files) != 1 {
		t.Fatalf("files left: %v", files)
	}
}

// TestSingleConnection: with one connection every operation, iteration
// with writes in its body included, still works (no self-deadlock).
func TestSingleConnection(t *testing.T) {
	clk := newClock()
	c, err := Open(utCtx, t.TempDir(), Options{MaxConns: 1, Now: clk.Now, Settings: map[settings.Name]any{settings.NameDiskMinFileSize: 10, settings.NameStatistics: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 120; i++ {
		utSet(t, c, kv.IntKey(int64(i)), kv.Int(int64(i)), kv.SetOptions{Tag: kv.TextKey("t")})
	}
	for k, err := range c.Keys(utCtx, false) {
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Incr(utCtx, k, kv.Int(1), kv.Int(0)); err != nil {
			t.Fatal(err)
		}
		utGet(t, c, k)
	}
	for k, err := range c.SortedKeys(utCtx, true) {
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Contains(utCtx, k); err != nil {
			t.Fatal(err)
		}
	}
	utWant(t, c, kv.IntKey(5), kv.Int(6))
	utSet(t, c, kv.TextKey("f"), kv.Bytes(utBig(100, 'f')), kv.SetOptions{})
	utWantKinds(t, utCheck(t, c, true))
	if _, _, err := c.Stats(utCtx, false, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Volume(utCtx); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(utCtx, settings.NameSizeLimit, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Cull(utCtx); err != nil || n != 121 {
		t.Fatalf("Cull = %d, %v", n, err)
	}
}

// TestTimedOutWriteLeavesNoFile: a value file written before the lock was
// taken is removed when the write then times out.
func TestTimedOutWriteLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	a := utOpenAt(t, dir, newClock(), nil)
	b, err := Open(utCtx, dir, Options{Timeout: 20 * time.Millisecond, Settings: map[settings.Name]any{settings.NameDiskMinFileSize: 10}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	release := utHoldWriter(a)
	if err := b.Set(utCtx, kv.TextKey("k"), kv.Bytes(utBig(100, 'x')), kv.SetOptions{}); !errors.Is(err, kv.ErrTimeout) {
		t.Errorf("Set = %v, want ErrTimeout", err)
	}
	if _, err := b.Add(utCtx, kv.TextKey("k"), kv.Value{}, kv.SetOptions{Body: bytesReader(utBig(100, 'y'))}); !errors.Is(err, kv.ErrTimeout) {
		t.Errorf("Add = %v, want ErrTimeout", err)
	}
	if _, err := b.Push(utCtx, kv.Bytes(utBig(100, 'z')), QueueOptions{}, kv.SetOptions{}); !errors.Is(err, kv.ErrTimeout) {
		t.Errorf("Push = %v, want ErrTimeout", err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if files := utValFiles(t, b); len(files) != 0 {
		t.Fatalf("timed-out writes left %v", files)
	}
}
