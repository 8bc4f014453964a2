package client

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
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
