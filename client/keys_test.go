package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

func collectKeys(t *testing.T, c *Cache, opts KeysOptions) []string {
	t.Helper()
	var out []string
	for k, err := range c.Keys(context.Background(), opts) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k.String())
	}
	return out
}

// Keys lists the server's cache over three shards through one URL (the
// client following their topology), with a match, both ways and in small
// pages; a named cache in insertion and sorted order.
func TestCacheKeys(t *testing.T) {
	cl := testserver.StartCluster(t, 3, testserver.Options{})
	ctx := context.Background()
	c, err := New(cl.URLs[1], Options{Token: cl.Shards[0].Token})
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	for i := 0; i < 60; i++ {
		k := kv.TextKey(fmt.Sprintf("user:%02d", i))
		if err := c.Cache("").Set(ctx, k, kv.Int(1), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := c.Cache("").Set(ctx, kv.TextKey(fmt.Sprintf("other:%d", i)), kv.Int(1), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		users = append(users, k.String())
	}
	for _, opts := range []KeysOptions{{Match: "user:*"}, {Match: "user:*", Reverse: true, Limit: 7}, {Match: "user:[0-5]?", Limit: 1}} {
		got := collectKeys(t, c.Cache(""), opts)
		slices.Sort(got)
		if !slices.Equal(got, users) {
			t.Errorf("%+v: %d keys %v", opts, len(got), got)
		}
	}
	if got := collectKeys(t, c.Cache(""), KeysOptions{Limit: 13}); len(got) != 120 {
		t.Errorf("every key: %d, want 120", len(got))
	}

	named := c.Cache("sorted")
	for _, k := range []kv.Key{kv.TextKey("b"), kv.IntKey(2), kv.TextKey("a"), kv.IntKey(1)} {
		if err := named.Set(ctx, k, kv.Int(1), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		opts KeysOptions
		want []string
	}{
		{KeysOptions{}, []string{"b", "2", "a", "1"}},
		{KeysOptions{Sorted: true, Limit: 1}, []string{"1", "2", "a", "b"}},
		{KeysOptions{Sorted: true, Reverse: true}, []string{"b", "a", "2", "1"}},
	} {
		got := collectKeys(t, named, tc.opts)
		want := make([]string, len(tc.want))
		for i, w := range tc.want {
			if w[0] >= '0' && w[0] <= '9' {
				want[i] = kv.IntKey(int64(w[0] - '0')).String()
			} else {
				want[i] = kv.TextKey(w).String()
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%+v: %v, want %v", tc.opts, got, want)
		}
	}
	for _, err := range c.Cache("").Keys(ctx, KeysOptions{Sorted: true}) {
		if err == nil {
			t.Error("the server's cache listed in sorted order")
		}
		break
	}
}

// A named cache's queues, as python-diskcache's Cache: push with expiry
// and tag, pull from either end, peek, peekitem; the server's cache has
// none.
func TestCacheQueues(t *testing.T) {
	cl := testserver.StartCluster(t, 2, testserver.Options{})
	ctx := context.Background()
	c, err := New(cl.URLs[0], Options{Token: cl.Shards[0].Token})
	if err != nil {
		t.Fatal(err)
	}
	jobs := c.Cache("jobs")
	if _, err := jobs.Pull(ctx, "", ""); !errors.Is(err, ErrEmpty) {
		t.Fatalf("pull of an empty queue: %v", err)
	}
	for i, v := range []string{"a", "b", "c"} {
		k, err := jobs.Push(ctx, kv.Text(v), "q", Back, kv.SetOptions{Tag: kv.TextKey("t"), Expire: kv.ExpireAfter(time.Hour)})
		if want := fmt.Sprintf("q-%015d", 500000000000000+i); err != nil || k != kv.TextKey(want) {
			t.Fatalf("push %s = %v, %v; want %s", v, k, err, want)
		}
	}
	for _, tc := range []struct {
		take func() (Item, error)
		want string
	}{
		{func() (Item, error) { return jobs.Peek(ctx, "q", Back) }, "c"},
		{func() (Item, error) { return jobs.Pull(ctx, "q", Front) }, "a"},
		{func() (Item, error) { return jobs.PeekItem(ctx, false) }, "b"},
		{func() (Item, error) { return jobs.Pull(ctx, "q", Back) }, "c"},
		{func() (Item, error) { return jobs.PeekItem(ctx, true) }, "b"},
	} {
		it, err := tc.take()
		if err != nil || !it.Value.Equal(kv.Text(tc.want)) || it.Tag != kv.TextKey("t") || it.ExpireTime == 0 {
			t.Fatalf("= %+v, %v; want %s with its tag and expiry", it, err, tc.want)
		}
	}
	if _, err := c.Cache("").Push(ctx, kv.Int(1), "", "", kv.SetOptions{}); !errors.Is(err, errNoQueues) {
		t.Fatalf("push on the server's cache: %v", err)
	}
}

// A listing that outlives a change of topology starts again by itself:
// every key comes, those of the pages before the change twice.
func TestCacheKeysRestartAfterATopologyChange(t *testing.T) {
	cl := testserver.StartCluster(t, 2, testserver.Options{})
	ctx := context.Background()
	c, err := New(cl.URLs[0], Options{Token: cl.Shards[0].Token})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for i := 0; i < 40; i++ {
		k := fmt.Sprintf("r%02d", i)
		want[k] = true
		if err := c.Cache("").Set(ctx, kv.TextKey(k), kv.Int(int64(i)), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// announce PUTs a layout of the same shards, a new epoch, to both.
	epoch := int64(1)
	announce := func() {
		epoch++
		for _, u := range cl.URLs {
			admin, err := New(u, Options{Token: cl.AdminToken, DirectOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := admin.PutTopology(ctx, topology.Announcement{Layout: topology.Layout{Epoch: epoch, Shards: cl.URLs}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := map[string]int{}
	n := 0
	for k, err := range c.Cache("").Keys(ctx, KeysOptions{Limit: 5}) {
		if err != nil {
			t.Fatalf("after %d keys: %v", n, err)
		}
		got[k.Text()]++
		if n++; n == 7 || n == 30 {
			announce()
		}
	}
	for k := range want {
		if got[k] == 0 {
			t.Errorf("%s not listed", k)
		}
	}
	if n < len(want)+7 || len(got) != len(want) {
		t.Errorf("%d keys listed, %d distinct; want every one of %d, the first pages twice", n, len(got), len(want))
	}
}
