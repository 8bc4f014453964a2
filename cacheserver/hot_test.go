package cacheserver_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// hotGets sums diskcache_hot_value_gets_total{result} over the databases.
func hotGets(t *testing.T, srv *testserver.Server, result string) int {
	t.Helper()
	n := 0
	for _, l := range strings.Split(scrape(t, srv), "\n") {
		if strings.HasPrefix(l, "diskcache_hot_value_gets_total{") && strings.Contains(l, `result="`+result+`"`) {
			v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", l, err)
			}
			n += int(v)
		}
	}
	return n
}

func TestHotValuesServeRepeatedGets(t *testing.T) {
	srv, c := startServer(t)
	cache := c.Cache("")
	ctx := t.Context()
	k := kv.TextKey("greeting")
	want := func(v string) {
		t.Helper()
		it, ok, err := cache.Get(ctx, k)
		if err != nil || !ok || string(it.Value.Data) != v {
			t.Fatalf("GET = %q, %v, %v; want %q", it.Value.Data, ok, err, v)
		}
	}
	if err := cache.Set(ctx, k, kv.Text("hello"), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		want("hello")
	}
	if n := hotGets(t, srv, "hit"); n != 3 {
		t.Fatalf("gets answered from memory = %d, want 3 (the set's value went to memory)", n)
	}
	// A write replaces what memory holds.
	if err := cache.Set(ctx, k, kv.Text("bye"), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	want("bye")
	if _, err := cache.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := cache.Get(ctx, k); ok || err != nil {
		t.Fatalf("GET after DELETE = %v, %v; want a miss", ok, err)
	}

	off, c0 := startServer(t, "--hot-value-bytes", "0")
	if err := c0.Cache("").Set(ctx, k, kv.Text("hello"), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, ok, err := c0.Cache("").Get(ctx, k); !ok || err != nil {
			t.Fatalf("GET = %v, %v", ok, err)
		}
	}
	if n := hotGets(t, off, "hit"); n != 0 {
		t.Fatalf("--hot-value-bytes 0: %d gets answered from memory", n)
	}
}
