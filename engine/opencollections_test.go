package engine

import (
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
