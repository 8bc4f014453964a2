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
	c, plain, clk := openHot(t, 1<<20, map[settings.Name]any{settings.NameSizeLimit: int64(48 << 10), settings.NameCullLimit: int64(3)})
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
	ops := []string{"set", "set", "set", "add", "delete", "pop", "touch", "incr", "evict", "expire", "cull", "clear", "transact", "deleteRows", "advance"}
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
	}
	if s := c.HotStats(); s.Hits == 0 {
		t.Fatalf("no get was answered from memory: %+v", s)
	}
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
	wg.Wait()
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
