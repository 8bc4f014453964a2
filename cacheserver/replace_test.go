package cacheserver_test

import (
	"context"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// TestReplaceStoresOnlyOverALiveItem: POST .../keys/{key}/replace (Redis's
// SET XX) on three shards through one of them, for the server's cache and
// a named one: a missing key stays missing, a live one takes the value.
func TestReplaceStoresOnlyOverALiveItem(t *testing.T) {
	ctx := context.Background()
	c := testserver.StartCluster(t, 3, testserver.Options{})
	cl := dataClient(t, c.URLs[0], c.Shards[0].Token)
	for _, name := range []string{"", "named"} {
		cc := cl.Cache(name)
		for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
			key := kv.TextKey(k)
			if ok, err := cc.Replace(ctx, key, kv.Text("new"), kv.SetOptions{}); ok || err != nil {
				t.Fatalf("cache %q: replace of missing %s = %v, %v", name, k, ok, err)
			}
			if _, ok, err := cc.Get(ctx, key); ok || err != nil {
				t.Fatalf("cache %q: %s after a refused replace: found %v, %v", name, k, ok, err)
			}
			if err := cc.Set(ctx, key, kv.Text("old"), kv.SetOptions{}); err != nil {
				t.Fatal(err)
			}
			if ok, err := cc.Replace(ctx, key, kv.Text("new"), kv.SetOptions{Tag: kv.TextKey("t")}); !ok || err != nil {
				t.Fatalf("cache %q: replace of live %s = %v, %v", name, k, ok, err)
			}
			it, ok, err := cc.Get(ctx, key)
			if !ok || err != nil || string(it.Value.Data) != "new" || it.Tag != kv.TextKey("t") {
				t.Fatalf("cache %q: %s after replace = %+v, %v, %v", name, k, it, ok, err)
			}
		}
	}
}

// TestReplaceDuringAMoveSeesThePreviousOwner: while a grow 2 → 3 has moved
// nothing yet (its handoff stalled), a replace at the new owner finds the
// item still at its previous owner live, and stores.
func TestReplaceDuringAMoveSeesThePreviousOwner(t *testing.T) {
	ctx := context.Background()
	keys, owner := stalledGrow(t, "x", 20)
	for _, k := range keys {
		if ok, err := owner.Replace(ctx, kv.TextKey(k), kv.Text("new"), kv.SetOptions{}); !ok || err != nil {
			t.Fatalf("replace of %s at its new owner = %v, %v; the item is live at its previous owner", k, ok, err)
		}
		if it, ok, err := owner.Get(ctx, kv.TextKey(k)); !ok || err != nil || string(it.Value.Data) != "new" {
			t.Fatalf("%s after replace = %+v, %v, %v", k, it, ok, err)
		}
	}
}
