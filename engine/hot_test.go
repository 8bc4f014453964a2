package engine

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// openHot opens a cache with values kept in memory, and a second cache on
// the same directory without, whose gets read the database itself.
func openHot(t *testing.T, hotBytes int64, overrides map[settings.Name]any) (hot, plain *Cache, clk *fakeClock) {
	t.Helper()
	clk = newClock()
	dir := t.TempDir()
	var err error
	if hot, err = Open(context.Background(), dir, Options{Settings: overrides, Now: clk.Now, HotBytes: hotBytes}); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = hot.Close() })
	if plain, err = Open(context.Background(), dir, Options{Now: clk.Now}); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = plain.Close() })
	return hot, plain, clk
}

func TestHotValuesAnswerRepeatedGets(t *testing.T) {
	c, plain, clk := openHot(t, 1<<20, nil)
	k := kv.TextKey("k")
	utSet(t, c, k, kv.Bytes([]byte("v1")), kv.SetOptions{Tag: kv.TextKey("t"), Expire: kv.ExpireAfter(time.Minute)})
	// The set's own value went to memory when it committed.
	first, ok := utGet(t, c, k)
	if !ok {
		t.Fatal("miss after set")
	}
	if s := c.HotStats(); s.Entries != 1 || s.Hits != 1 {
		t.Fatalf("after the first get: %+v, want 1 entry and 1 hit", s)
	}
	want, ok, err := plain.Get(utCtx, k, GetOptions{})
	if err != nil || !ok || !first.Value.Equal(want.Value) || !first.Tag.Equal(want.Tag) || first.ExpireTime != want.ExpireTime {
		t.Fatalf("get from memory = %+v; from the database %+v, %v, %v", first, want, ok, err)
	}
	// A value read from the database goes to memory too.
	utSet(t, plain, kv.TextKey("other"), kv.Int(7), kv.SetOptions{})
	utGet(t, c, kv.TextKey("other"))
	if again, ok := utGet(t, c, kv.TextKey("other")); !ok || !again.Value.Equal(kv.Int(7)) || c.HotStats().Hits != 2 {
		t.Fatalf("second get of a value read from the database = %+v, %v; %+v", again, ok, c.HotStats())
	}
	// Expired in memory is a miss, as in the database.
	clk.Advance(2 * time.Minute)
	if _, ok := utGet(t, c, k); ok {
		t.Fatal("expired item returned from memory")
	}
	// Values in files stay there.
	big := make([]byte, 64<<10)
	utSet(t, c, kv.TextKey("big"), kv.Bytes(big), kv.SetOptions{})
	before := c.HotStats()
	utGet(t, c, kv.TextKey("big"))
	utGet(t, c, kv.TextKey("big"))
	if s := c.HotStats(); s.Hits != before.Hits || s.Entries != before.Entries {
		t.Fatalf("a file-backed value went to memory: %+v, before %+v", s, before)
	}
}

func TestHotValuesStayWithinBytes(t *testing.T) {
	const max = 8 << 10
	c, _, _ := openHot(t, max, nil)
	for i := range 200 {
		k := kv.IntKey(int64(i))
		utSet(t, c, k, kv.Bytes(make([]byte, 100)), kv.SetOptions{})
		utGet(t, c, k)
		if s := c.HotStats(); s.Bytes > max {
			t.Fatalf("after %d gets memory holds %d bytes, more than %d", i+1, s.Bytes, max)
		}
	}
	// The newest stay: the last key is answered from memory.
	before := c.HotStats().Hits
	utGet(t, c, kv.IntKey(199))
	if c.HotStats().Hits != before+1 {
		t.Fatal("the most recently read value is not in memory")
	}
}

// TestHotValuesSeeEveryChange runs random operations of every kind that
// changes rows and, after each, compares every key's get through memory
// with a get that reads the database.
func TestHotValuesSeeEveryChange(t *testing.T) {
	ctx := context.Background()
	// A small size_limit makes writes cull (evict) other keys.
	c, plain, clk := openHot(t, 1<<20, map[settings.Name]any{settings.NameSizeLimit: int64(48 << 10), settings.NameCullLimit: int64(3), settings.NameDiskMinFileSize: int64(8 << 10)})
	rng := rand.New(rand.NewSource(1))
	keys := make([]kv.Key, 40)
	for i := range keys {
		keys[i] = kv.TextKey("k" + strconv.Itoa(i))
	}
	tags := []kv.Key{{}, kv.TextKey("a"), kv.TextKey("b")}
	val := func(i int) kv.Value {
		return kv.Bytes(fmt.Appendf(bytes.Repeat([]byte{'.'}, rng.Intn(3000)), "v%d", i))
	}
	show := func(it Item, ok bool) string {
		if !ok {
			return "a miss"
		}
		d := it.Value.Data
		return fmt.Sprintf("%d bytes ending %q, expire %v, tag %v", len(d), d[max(0, len(d)-6):], it.ExpireTime, it.Tag)
	}
	ops := []string{"set", "set", "set", "setFile", "add", "delete", "pop", "touch", "incr", "evict", "expire", "cull", "clear", "transact", "deleteRows", "advance"}
	absentSeen := 0
	for step := range 3000 {
		k := keys[rng.Intn(len(keys))]
		op := ops[rng.Intn(len(ops))]
		if op == "clear" && rng.Intn(10) != 0 {
			op = "set"
		}
		var err error
		switch op {
		case "set":
			opts := kv.SetOptions{Tag: tags[rng.Intn(len(tags))]}
			if rng.Intn(3) == 0 {
				opts.Expire = kv.ExpireAfterSeconds(float64(1 + rng.Intn(5)))
			}
			err = c.Set(ctx, k, val(step), opts)
		case "setFile":
			// A value in a file stays out of memory: its set names no
			// value to keep.
			err = c.Set(ctx, k, kv.Bytes(bytes.Repeat([]byte{'f'}, 10<<10)), kv.SetOptions{})
		case "add":
			_, err = c.Add(ctx, k, val(step), kv.SetOptions{})
		case "delete":
			_, err = c.Delete(ctx, k)
		case "pop":
			_, _, err = c.Pop(ctx, k, GetOptions{})
		case "touch":
			_, err = c.Touch(ctx, k, kv.ExpireAfterSeconds(float64(rng.Intn(4))))
		case "incr":
			_, err = c.Incr(ctx, kv.TextKey("n"+strconv.Itoa(rng.Intn(3))), kv.Int(1), kv.Int(0))
		case "evict":
			_, err = c.Evict(ctx, tags[1+rng.Intn(2)])
		case "expire":
			_, err = c.Expire(ctx, c.nowSeconds())
		case "cull":
			_, err = c.Cull(ctx)
		case "clear":
			_, err = c.Clear(ctx)
		case "transact":
			err = c.Transact(ctx, func(tx *Tx) error {
				if err := tx.Set(k, val(step), kv.SetOptions{}); err != nil {
					return err
				}
				_, err := tx.Delete(keys[rng.Intn(len(keys))])
				return err
			})
		case "deleteRows":
			var rows []Row
			if rows, err = c.Rows(ctx, 0, 3); err == nil {
				_, err = c.DeleteRows(ctx, rows)
			}
		case "advance":
			clk.Advance(time.Duration(rng.Intn(2000)) * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("step %d %s: %v", step, op, err)
		}
		for _, k := range append(keys, kv.TextKey("n0"), kv.TextKey("n1"), kv.TextKey("n2")) {
			got, gok, err := c.Get(ctx, k, GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want, wok, err := plain.Get(ctx, k, GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if gok != wok || gok && (!got.Value.Equal(want.Value) || !got.Tag.Equal(want.Tag) || got.ExpireTime != want.ExpireTime) {
				t.Fatalf("step %d, after %s: get %v through memory = %s; the database has %s", step, op, k, show(got, gok), show(want, wok))
			}
		}
		absentSeen = max(absentSeen, c.HotStats().Absent)
	}
	if s := c.HotStats(); s.Hits == 0 || absentSeen == 0 {
		t.Fatalf("no get was answered from memory, or no missing key was kept: %+v, at most %d absent", s, absentSeen)
	}
}

// stopReaders waits for the writers, stops the readers, reports what they
// found wrong, and fails when memory answered no get.
func stopReaders(t *testing.T, c *Cache, writers, readers *sync.WaitGroup, done *atomic.Bool, errs chan error) {
	t.Helper()
	writers.Wait()
	done.Store(true)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := c.HotStats(); s.Hits == 0 {
		t.Fatalf("no get was answered from memory: %+v", s)
	}
}

// TestHotAbsentKeysNeverHideAWrite has writers insert new keys, and update
// expired rows back to life, while readers get keys on both sides of the
// last write: a get that starts after a write returned must find its key,
// though earlier gets found none and memory kept that.
func TestHotAbsentKeysNeverHideAWrite(t *testing.T) {
	clk := newClock()
	c, err := Open(context.Background(), t.TempDir(), Options{HotBytes: 1 << 20, BatchYield: true, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	const writers, perWriter = 3, 400
	key := func(w, i int) kv.Key { return kv.TextKey(fmt.Sprintf("w%d-%d", w, i)) }
	// Half of the keys start as expired rows, so that their write is an
	// UPDATE of the row, not an INSERT.
	for w := range writers {
		for i := 1; i < perWriter; i += 2 {
			utSet(t, c, key(w, i), kv.Int(0), kv.SetOptions{Expire: kv.ExpireAfterSeconds(1)})
		}
	}
	clk.Advance(2 * time.Second)
	var acked [writers]atomic.Int64 // keys 0..acked-1 of each writer are stored
	var wg, readers sync.WaitGroup
	var done atomic.Bool
	errs := make(chan error, 16)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				// A miss first, which memory keeps unless another
				// writer's transaction runs meanwhile.
				if _, ok, err := c.Get(ctx, key(w, i), GetOptions{}); err != nil || ok {
					errs <- fmt.Errorf("key %v before its write: found %v, %v", key(w, i), ok, err)
					return
				}
				if err := c.Set(ctx, key(w, i), kv.Int(int64(i)), kv.SetOptions{}); err != nil {
					errs <- err
					return
				}
				acked[w].Store(int64(i + 1))
			}
		}()
	}
	for r := range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			rng := rand.New(rand.NewSource(int64(r)))
			for !done.Load() {
				w := rng.Intn(writers)
				floor := int(acked[w].Load())
				i := max(0, floor-2+rng.Intn(5)) // around the last write
				_, ok, err := c.Get(ctx, key(w, i), GetOptions{})
				if err != nil {
					errs <- err
					return
				}
				if i < floor && !ok {
					errs <- fmt.Errorf("key %v: a miss after its write returned", key(w, i))
					return
				}
			}
		}()
	}
	stopReaders(t, c, &wg, &readers, &done, errs)
}

// TestHotValuesNeverGoBack has writers store increasing values while
// readers check that a get never returns a value older than one whose
// write had already returned when the get started.
func TestHotValuesNeverGoBack(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(context.Background(), dir, Options{HotBytes: 1 << 20, BatchYield: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	const nkeys, writes = 4, 300
	var acked [nkeys]atomic.Int64
	var wg sync.WaitGroup
	var done atomic.Bool
	errs := make(chan error, 16)
	for w := range nkeys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := kv.IntKey(int64(w))
			for n := int64(1); n <= writes; n++ {
				if err := c.Set(ctx, k, kv.Int(n), kv.SetOptions{}); err != nil {
					errs <- err
					return
				}
				acked[w].Store(n)
			}
		}()
	}
	var readers sync.WaitGroup
	for r := range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for i := 0; !done.Load(); i++ {
				w := (i + r) % nkeys
				floor := acked[w].Load()
				it, ok, err := c.Get(ctx, kv.IntKey(int64(w)), GetOptions{})
				if err != nil {
					errs <- err
					return
				}
				if floor > 0 && (!ok || it.Value.Int < floor) {
					errs <- fmt.Errorf("key %d: get = %v (found %v) after the write of %d returned", w, it.Value.Int, ok, floor)
					return
				}
			}
		}()
	}
	stopReaders(t, c, &wg, &readers, &done, errs)
}

// TestHotAbsentFillAfterAWriteIsDropped: a get that found no row keeps
// nothing when a write transaction ran while it read (the row may have been
// inserted since), as for the values it reads.
func TestHotAbsentFillAfterAWriteIsDropped(t *testing.T) {
	h := newHotValues(1 << 20)
	k := kv.TextKey("k")
	token := h.fillToken()
	h.writeBegin()
	h.rowChanged(false, 1)
	h.beforeCommit(func(yield func(hotWrite) bool) { yield(hotWrite{rowid: 1, item: Item{Key: k}}) })
	h.writeEnd()
	h.fillAbsent(token, k)
	if _, _, found := h.lookup(k, 0, false); found {
		t.Fatal("a miss read before a write transaction was kept after it")
	}
	h.fillAbsent(h.fillToken(), k)
	if _, ok, found := h.lookup(k, 0, false); !found || ok {
		t.Fatalf("a miss read with no write running: found %v, ok %v; want kept as absent", found, ok)
	}
}
