package engine

import (
	"fmt"
	"sync"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// TestMaxOpenCollectionsClosesTheLeastRecentlyUsed: with a bound of 2,
// using a third collection closes the connections of the one used least
// recently, whichever its kind, and using that one again opens it with its
// items.
func TestMaxOpenCollectionsClosesTheLeastRecentlyUsed(t *testing.T) {
	ctx := t.Context()
	f, err := OpenFanout(ctx, t.TempDir(), FanoutOptions{Fanout: 1, MaxOpenCollections: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := f.Cache(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, kv.TextKey("k"), kv.Text("v"), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	d, err := f.Deque(ctx, "d", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Append(ctx, kv.Text("item")); err != nil {
		t.Fatal(err)
	}
	if got := f.OpenCollections(); got != 2 {
		t.Fatalf("open collections after using 2: %d, want 2", got)
	}
	// The named cache again, before the index: the deque is now the one
	// used least recently.
	if _, err := f.Cache(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	x, err := f.Index(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Set(ctx, kv.TextKey("k"), kv.Text("v")); err != nil {
		t.Fatal(err)
	}
	if n := d.Cache().openConns(); n != 0 {
		t.Errorf("the deque, used least recently, holds %d connections, want 0", n)
	}
	if c.openConns() == 0 || x.Cache().openConns() == 0 {
		t.Errorf("the named cache (%d) and the index (%d) used last hold no connection", c.openConns(), x.Cache().openConns())
	}
	if got := f.OpenCollections(); got != 2 {
		t.Errorf("open collections after using 3: %d, want 2", got)
	}

	// The deque again: it opens with its item, and the named cache, now
	// the least recently used, closes.
	d, err = f.Deque(ctx, "d", 0)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := d.PeekLeft(ctx); err != nil || !v.Equal(kv.Text("item")) {
		t.Errorf("deque opened again: %v %v, want item", v, err)
	}
	if n := c.openConns(); n != 0 {
		t.Errorf("the named cache, now used least recently, holds %d connections, want 0", n)
	}
	if it, ok, err := c.Get(ctx, kv.TextKey("k"), GetOptions{}); err != nil || !ok || !it.Value.Equal(kv.Text("v")) {
		t.Errorf("named cache opened again: %v %v %v, want v", it.Value, ok, err)
	}
}

// TestMaxOpenCollectionsUnderConcurrentUse: 8 goroutines each set and get
// in turn in 40 named caches, with at most 4 open: connections close under
// other goroutines' feet, and every read finds what its goroutine wrote.
func TestMaxOpenCollectionsUnderConcurrentUse(t *testing.T) {
	ctx := t.Context()
	f, err := OpenFanout(ctx, t.TempDir(), FanoutOptions{Fanout: 1, MaxOpenCollections: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				name := fmt.Sprintf("c%d", (w*7+i)%40)
				key := kv.TextKey(fmt.Sprintf("w%d", w))
				c, err := f.Cache(ctx, name)
				if err != nil {
					t.Error(err)
					return
				}
				if err := c.Set(ctx, key, kv.Int(int64(i)), kv.SetOptions{}); err != nil {
					t.Errorf("set in %s: %v", name, err)
					return
				}
				if c, err = f.Cache(ctx, name); err != nil {
					t.Error(err)
					return
				}
				if it, ok, err := c.Get(ctx, key, GetOptions{}); err != nil || !ok || !it.Value.Equal(kv.Int(int64(i))) {
					t.Errorf("get in %s: %v %v %v, want %d", name, it.Value, ok, err, i)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := f.OpenCollections(); n > 4 {
		t.Errorf("%d collections open after the goroutines ended, want at most 4", n)
	}
}
