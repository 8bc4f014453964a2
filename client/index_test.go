package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

func TestIndexOverHTTP(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	x := c.Index("users")

	if n, err := x.Len(ctx); err != nil || n != 0 {
		t.Fatalf("Len = %d, %v", n, err)
	}
	if _, err := x.PopItem(ctx, true); !errors.Is(err, client.ErrEmpty) {
		t.Fatalf("PopItem on empty: %v", err)
	}
	if _, err := x.PeekItem(ctx, false); !errors.Is(err, client.ErrEmpty) {
		t.Fatalf("PeekItem on empty: %v", err)
	}
	if _, err := x.Pull(ctx, "", ""); !errors.Is(err, client.ErrEmpty) {
		t.Fatalf("Pull on empty: %v", err)
	}

	big := bytes.Repeat([]byte("b"), 80_000)
	keys := []kv.Key{kv.TextKey("b/slash?"), kv.IntKey(7), kv.BytesKey([]byte{0, 0xff}), kv.TextKey("a")}
	vals := []kv.Value{kv.Text("B"), kv.Int(70), kv.Bytes(big), kv.Float(0.5)}
	for i, k := range keys {
		if err := x.Set(ctx, k, vals[i]); err != nil {
			t.Fatalf("Set(%s): %v", k, err)
		}
	}
	// Overwriting keeps the place in insertion order.
	if err := x.Set(ctx, kv.IntKey(7), kv.Int(71)); err != nil {
		t.Fatal(err)
	}
	vals[1] = kv.Int(71)
	for i, k := range keys {
		it, ok, err := x.Get(ctx, k)
		if err != nil || !ok || !it.Value.Equal(vals[i]) {
			t.Fatalf("Get(%s) = %v %v %v", k, it.Value, ok, err)
		}
		if ok, err := x.Contains(ctx, k); err != nil || !ok {
			t.Fatalf("Contains(%s) = %v, %v", k, ok, err)
		}
	}
	if _, ok, err := x.Get(ctx, kv.TextKey("nope")); err != nil || ok {
		t.Fatalf("Get(nope) = %v, %v", ok, err)
	}
	if ok, err := x.Contains(ctx, kv.TextKey("nope")); err != nil || ok {
		t.Fatalf("Contains(nope) = %v, %v", ok, err)
	}

	var got []kv.Key
	for it, err := range x.Items(ctx, client.ItemsOptions{Limit: 3}) {
		if err != nil {
			t.Fatal(err)
		}
		if i := len(got); !it.Value.Equal(vals[i]) {
			t.Fatalf("Items[%d] = %s, want %s", i, it.Value, vals[i])
		}
		got = append(got, it.Key)
	}
	if len(got) != len(keys) {
		t.Fatalf("Items keys = %v", got)
	}
	for i := range keys {
		if !got[i].Equal(keys[i]) {
			t.Fatalf("Items keys = %v, want %v", got, keys)
		}
	}
	page, err := x.Page(ctx, "", client.ItemsOptions{Reverse: true, KeysOnly: true, Limit: 10})
	if err != nil || page.Next != "" || len(page.Items) != 4 || !page.Items[0].Key.Equal(kv.TextKey("a")) || page.Items[0].Value.Type != kv.ValueNone {
		t.Fatalf("reverse keys-only Page = %+v, %v", page, err)
	}

	if v, err := x.SetDefault(ctx, kv.TextKey("a"), kv.Text("default")); err != nil || !v.Equal(kv.Float(0.5)) {
		t.Fatalf("SetDefault on existing = %s, %v", v, err)
	}
	if v, err := x.SetDefault(ctx, kv.TextKey("new"), kv.Text("default")); err != nil || !v.Equal(kv.Text("default")) {
		t.Fatalf("SetDefault on missing = %s, %v", v, err)
	}
	if it, err := x.PeekItem(ctx, true); err != nil || !it.Key.Equal(kv.TextKey("new")) {
		t.Fatalf("PeekItem(last) = %+v, %v", it, err)
	}
	if it, err := x.PopItem(ctx, false); err != nil || !it.Key.Equal(keys[0]) || !it.Value.Equal(vals[0]) {
		t.Fatalf("PopItem(first) = %+v, %v", it, err)
	}
	if it, err := x.PopItem(ctx, true); err != nil || !it.Key.Equal(kv.TextKey("new")) {
		t.Fatalf("PopItem(last) = %+v, %v", it, err)
	}
	if it, ok, err := x.Pop(ctx, keys[2]); err != nil || !ok || !bytes.Equal(it.Value.Data, big) {
		t.Fatalf("Pop(bytes key) = %v %v", ok, err)
	}
	if _, ok, err := x.Pop(ctx, keys[2]); err != nil || ok {
		t.Fatalf("second Pop = %v, %v", ok, err)
	}
	if del, err := x.Delete(ctx, kv.TextKey("a")); err != nil || !del {
		t.Fatalf("Delete = %v, %v", del, err)
	}
	if del, err := x.Delete(ctx, kv.TextKey("a")); err != nil || del {
		t.Fatalf("second Delete = %v, %v", del, err)
	}

	// Queues inside the index. Integer keys are the prefix-less queue, as
	// in python-diskcache, so drop the one left.
	if del, err := x.Delete(ctx, kv.IntKey(7)); err != nil || !del {
		t.Fatalf("Delete(7) = %v, %v", del, err)
	}
	k1, err := x.Push(ctx, kv.Text("first"), "", "")
	if err != nil || k1.Kind() != kv.KeyInt {
		t.Fatalf("Push = %s, %v", k1, err)
	}
	k0, err := x.Push(ctx, kv.Text("zeroth"), "", client.Front)
	if err != nil || k0.Int() != k1.Int()-1 {
		t.Fatalf("Push front = %s, %v", k0, err)
	}
	kp, err := x.Push(ctx, kv.Int(5), "jobs", "")
	if err != nil || kp.Kind() != kv.KeyText || !strings.HasPrefix(kp.Text(), "jobs-") {
		t.Fatalf("Push with prefix = %s, %v", kp, err)
	}
	if it, err := x.Pull(ctx, "", ""); err != nil || !it.Key.Equal(k0) || !it.Value.Equal(kv.Text("zeroth")) {
		t.Fatalf("Pull = %+v, %v", it, err)
	}
	if it, err := x.Pull(ctx, "", client.Back); err != nil || !it.Key.Equal(k1) {
		t.Fatalf("Pull back = %+v, %v", it, err)
	}
	if it, err := x.Pull(ctx, "jobs", ""); err != nil || !it.Key.Equal(kp) || !it.Value.Equal(kv.Int(5)) {
		t.Fatalf("Pull jobs = %+v, %v", it, err)
	}
	if _, err := x.Pull(ctx, "jobs", ""); !errors.Is(err, client.ErrEmpty) {
		t.Fatalf("Pull of an empty prefix queue: %v", err)
	}
	if err := x.Set(ctx, kv.TextKey("left"), kv.Text("over")); err != nil {
		t.Fatal(err)
	}
	if n, err := x.Len(ctx); err != nil || n != 1 {
		t.Fatalf("Len = %d, %v", n, err)
	}
	if n, err := x.Clear(ctx); err != nil || n != 1 {
		t.Fatalf("Clear = %d, %v", n, err)
	}
	// An index is not the cache of the same name.
	if _, ok, err := c.Cache("users").Get(ctx, kv.IntKey(7)); err != nil || ok {
		t.Fatalf("index leaked into the named cache: %v %v", ok, err)
	}
}

// TestIndexPagingUnderConcurrentWrites pages through an index while items
// are added (between pages and concurrently) and existing ones are
// overwritten: every item that was there at the start is seen exactly once,
// in order, forwards and backwards.
func TestIndexPagingUnderConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	x := c.Index("paging")
	const pre = 120
	for i := 0; i < pre; i++ {
		if err := x.Set(ctx, kv.TextKey(fmt.Sprintf("pre-%03d", i)), kv.Int(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var added atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := x.Set(ctx, kv.TextKey(fmt.Sprintf("bg-%d", i)), kv.Int(-1)); err != nil {
				t.Error(err)
				return
			}
			added.Add(1)
		}
	}()

	for _, reverse := range []bool{false, true} {
		seen := map[string]int{}
		var order []int
		cursor, pages := "", 0
		for {
			page, err := x.Page(ctx, cursor, client.ItemsOptions{Reverse: reverse, Limit: 7, KeysOnly: pages%2 == 1})
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range page.Items {
				k := it.Key.Text()
				seen[k]++
				if n, ok := strings.CutPrefix(k, "pre-"); ok {
					i, _ := strconv.Atoi(n)
					order = append(order, i)
				}
			}
			// Writes between pages: a new key, and an overwrite of a
			// pre-existing key not yet listed (it keeps its place).
			if err := x.Set(ctx, kv.TextKey(fmt.Sprintf("between-%v-%d", reverse, pages)), kv.Int(0)); err != nil {
				t.Fatal(err)
			}
			if next := pre - 1 - len(order); reverse && next >= 0 {
				err = x.Set(ctx, kv.TextKey(fmt.Sprintf("pre-%03d", next)), kv.Int(int64(1000+next)))
			} else if next := len(order); !reverse && next < pre {
				err = x.Set(ctx, kv.TextKey(fmt.Sprintf("pre-%03d", next)), kv.Int(int64(1000+next)))
			}
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if page.Next == "" {
				break
			}
			cursor = page.Next
		}
		for k, n := range seen {
			if n != 1 {
				t.Fatalf("reverse=%v: %s listed %d times", reverse, k, n)
			}
		}
		if len(order) != pre {
			t.Fatalf("reverse=%v: %d of %d pre-existing items listed", reverse, len(order), pre)
		}
		for i, got := range order {
			want := i
			if reverse {
				want = pre - 1 - i
			}
			if got != want {
				t.Fatalf("reverse=%v: pre-existing items out of order: %v", reverse, order)
			}
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d items added concurrently", added.Load())
}
