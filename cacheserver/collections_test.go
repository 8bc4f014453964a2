package cacheserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// dequeValues lists a deque front to back through the paged listing.
func dequeValues(t *testing.T, d *client.Deque, pageSize int) []kv.Value {
	t.Helper()
	var out []kv.Value
	i := int64(0)
	for it, err := range d.Items(context.Background(), false, pageSize) {
		if err != nil {
			t.Fatalf("Items: %v", err)
		}
		if it.Index != i {
			t.Fatalf("Items: item %d has index %d", i, it.Index)
		}
		out = append(out, it.Value)
		i++
	}
	return out
}

func texts(vs ...string) []kv.Value {
	out := make([]kv.Value, len(vs))
	for i, v := range vs {
		out[i] = kv.Text(v)
	}
	return out
}

func sameValues(t *testing.T, what string, got, want []kv.Value) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			t.Fatalf("%s = %v, want %v", what, got, want)
		}
	}
}

func TestDequeOverHTTP(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	d := c.Deque("jobs/nested")

	if n, err := d.Len(ctx); err != nil || n != 0 {
		t.Fatalf("Len of a new deque = %d, %v", n, err)
	}
	for name, take := range map[string]func(context.Context) (kv.Value, error){
		"Pop": d.Pop, "PopLeft": d.PopLeft, "Peek": d.Peek, "PeekLeft": d.PeekLeft,
	} {
		if _, err := take(ctx); !errors.Is(err, client.ErrEmpty) {
			t.Fatalf("%s on an empty deque: %v, want ErrEmpty", name, err)
		}
	}

	for i, v := range []string{"a", "b", "c"} {
		if n, err := d.Append(ctx, kv.Text(v)); err != nil || n != int64(i+1) {
			t.Fatalf("Append(%s) = %d, %v", v, n, err)
		}
	}
	if n, err := d.AppendLeft(ctx, kv.Text("z")); err != nil || n != 4 {
		t.Fatalf("AppendLeft = %d, %v", n, err)
	}
	sameValues(t, "after appends", dequeValues(t, d, 0), texts("z", "a", "b", "c"))

	// maxlen trims the other end, in the same request.
	if n, err := d.Append(ctx, kv.Text("d"), client.Maxlen(3)); err != nil || n != 3 {
		t.Fatalf("Append maxlen 3 = %d, %v", n, err)
	}
	sameValues(t, "after bounded append", dequeValues(t, d, 0), texts("b", "c", "d"))
	if n, err := d.AppendLeft(ctx, kv.Text("y"), client.Maxlen(2)); err != nil || n != 2 {
		t.Fatalf("AppendLeft maxlen 2 = %d, %v", n, err)
	}
	sameValues(t, "after bounded appendleft", dequeValues(t, d, 0), texts("y", "b"))

	// Extend and ExtendLeft, with every value type and a file-backed value.
	big := bytes.Repeat([]byte("0123456789"), 10_000)
	if n, err := d.Extend(ctx, []kv.Value{kv.Int(1), kv.Float(2.5), kv.Bytes(big), kv.Pickle([]byte("\x80\x05N."))}); err != nil || n != 6 {
		t.Fatalf("Extend = %d, %v", n, err)
	}
	if n, err := d.ExtendLeft(ctx, texts("q", "p")); err != nil || n != 8 {
		t.Fatalf("ExtendLeft = %d, %v", n, err)
	}
	want := []kv.Value{kv.Text("p"), kv.Text("q"), kv.Text("y"), kv.Text("b"),
		kv.Int(1), kv.Float(2.5), kv.Bytes(big), kv.Pickle([]byte("\x80\x05N."))}
	sameValues(t, "after extends", dequeValues(t, d, 3), want)

	// A page from the back: positions still count from the front.
	page, err := d.Page(ctx, true, 1, 3)
	if err != nil || page.Total != 8 || len(page.Items) != 3 {
		t.Fatalf("reverse Page = %+v, %v", page, err)
	}
	for i, it := range page.Items {
		if wantIndex := int64(6 - i); it.Index != wantIndex || !it.Value.Equal(want[wantIndex]) {
			t.Fatalf("reverse page item %d = %+v, want index %d value %s", i, it, wantIndex, want[wantIndex])
		}
	}
	if page, err := d.Page(ctx, false, 100, 0); err != nil || len(page.Items) != 0 || page.Total != 8 {
		t.Fatalf("Page past the end = %+v, %v", page, err)
	}
	if v, err := d.Peek(ctx); err != nil || !v.Equal(want[7]) {
		t.Fatalf("Peek = %s, %v", v, err)
	}
	if v, err := d.PeekLeft(ctx); err != nil || !v.Equal(want[0]) {
		t.Fatalf("PeekLeft = %s, %v", v, err)
	}

	// Indexing, negative from the back.
	for i, w := range map[int]kv.Value{0: want[0], 6: want[6], -2: want[6], -8: want[0]} {
		if v, err := d.At(ctx, i); err != nil || !v.Equal(w) {
			t.Fatalf("At(%d) = %s, %v; want %s", i, v, err, w)
		}
	}
	for _, i := range []int{8, -9, 1000} {
		if _, err := d.At(ctx, i); !errors.Is(err, client.ErrIndexOutOfRange) {
			t.Fatalf("At(%d): %v, want ErrIndexOutOfRange", i, err)
		}
		if err := d.SetAt(ctx, i, kv.Text("x")); !errors.Is(err, client.ErrIndexOutOfRange) {
			t.Fatalf("SetAt(%d): %v, want ErrIndexOutOfRange", i, err)
		}
		if err := d.DeleteAt(ctx, i); !errors.Is(err, client.ErrIndexOutOfRange) {
			t.Fatalf("DeleteAt(%d): %v, want ErrIndexOutOfRange", i, err)
		}
	}
	big2 := bytes.Repeat([]byte("x"), 70_000)
	if err := d.SetAt(ctx, -1, kv.Bytes(big2)); err != nil {
		t.Fatal(err)
	}
	if err := d.SetAt(ctx, 6, kv.Text("six")); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteAt(ctx, 2); err != nil {
		t.Fatal(err)
	}
	want = []kv.Value{want[0], want[1], want[3], want[4], want[5], kv.Text("six"), kv.Bytes(big2)}
	sameValues(t, "after SetAt and DeleteAt", dequeValues(t, d, 0), want)
	if v, err := d.Pop(ctx); err != nil || !v.Equal(kv.Bytes(big2)) {
		t.Fatalf("Pop of a file-backed value = %d bytes, %v", len(v.Data), err)
	}
	if v, err := d.PopLeft(ctx); err != nil || !v.Equal(kv.Text("p")) {
		t.Fatalf("PopLeft = %s, %v", v, err)
	}
	want = want[1:6] // q b 1 2.5 six

	// Rotate and reverse.
	if err := d.Rotate(ctx, 2); err != nil {
		t.Fatal(err)
	}
	sameValues(t, "after Rotate(2)", dequeValues(t, d, 0), []kv.Value{want[3], want[4], want[0], want[1], want[2]})
	if err := d.Rotate(ctx, -2); err != nil {
		t.Fatal(err)
	}
	if err := d.Reverse(ctx); err != nil {
		t.Fatal(err)
	}
	sameValues(t, "after Reverse", dequeValues(t, d, 2), []kv.Value{want[4], want[3], want[2], want[1], want[0]})

	// Remove and count use python's equality: 1.0 == 1.
	if _, err := d.Append(ctx, kv.Int(1)); err != nil {
		t.Fatal(err)
	}
	if n, err := d.Count(ctx, kv.Float(1)); err != nil || n != 2 {
		t.Fatalf("Count(1.0) = %d, %v", n, err)
	}
	if ok, err := d.Remove(ctx, kv.Float(1)); err != nil || !ok {
		t.Fatalf("Remove(1.0) = %v, %v", ok, err)
	}
	if n, err := d.Count(ctx, kv.Int(1)); err != nil || n != 1 {
		t.Fatalf("Count(1) after Remove = %d, %v", n, err)
	}
	if ok, err := d.Remove(ctx, kv.Text("absent")); err != nil || ok {
		t.Fatalf("Remove(absent) = %v, %v", ok, err)
	}
	if n, err := d.Count(ctx, kv.Bytes([]byte("six"))); err != nil || n != 0 {
		t.Fatalf("Count(bytes six) = %d, %v (text and bytes differ)", n, err)
	}

	if n, err := d.Clear(ctx); err != nil || n != 5 {
		t.Fatalf("Clear = %d, %v", n, err)
	}
	if n, err := d.Len(ctx); err != nil || n != 0 {
		t.Fatalf("Len after Clear = %d, %v", n, err)
	}
	// maxlen=0 keeps the deque empty, as python's Deque(maxlen=0).
	if n, err := d.Append(ctx, kv.Text("gone"), client.Maxlen(0)); err != nil || n != 0 {
		t.Fatalf("Append maxlen 0 = %d, %v", n, err)
	}
	// Deques are separate from each other and from the caches.
	if n, err := c.Deque("jobs").Len(ctx); err != nil || n != 0 {
		t.Fatalf("parent deque Len = %d, %v", n, err)
	}
}

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

// TestDequeMaxlenUnderConcurrentAppends: eight clients append to one deque
// with maxlen; the length never exceeds maxlen and what remains is exactly
// the newest items: for every client, a suffix of what it appended.
func TestDequeMaxlenUnderConcurrentAppends(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	d := c.Deque("bounded")
	const writers, each, maxlen = 8, 25, 10
	var wg sync.WaitGroup
	done := make(chan struct{})
	observed := make(chan error, 1)
	go func() { // watch the length while the writers run
		for {
			select {
			case <-done:
				observed <- nil
				return
			default:
			}
			n, err := d.Len(ctx)
			if err == nil && n > maxlen {
				err = fmt.Errorf("observed length %d > maxlen %d", n, maxlen)
			}
			if err != nil {
				observed <- err
				return
			}
		}
	}()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				v := kv.Text(fmt.Sprintf("%d-%03d", w, i))
				opts := []client.PushOption{client.Maxlen(maxlen)}
				var n int64
				var err error
				if i%5 == 4 {
					n, err = d.Extend(ctx, []kv.Value{v}, opts...)
				} else {
					n, err = d.Append(ctx, v, opts...)
				}
				if err != nil {
					t.Error(err)
					return
				}
				if n > maxlen {
					t.Errorf("append answered length %d > maxlen %d", n, maxlen)
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	if err := <-observed; err != nil {
		t.Fatal(err)
	}
	vals := dequeValues(t, d, 0)
	if len(vals) != maxlen {
		t.Fatalf("final length %d, want %d", len(vals), maxlen)
	}
	last := map[int]int{} // writer → last sequence number seen
	present := map[int][]int{}
	for _, v := range vals {
		var w, i int
		if _, err := fmt.Sscanf(string(v.Data), "%d-%d", &w, &i); err != nil {
			t.Fatalf("value %q: %v", v.Data, err)
		}
		if prev, ok := last[w]; ok && i <= prev {
			t.Fatalf("writer %d's items out of order: %v", w, vals)
		}
		last[w] = i
		present[w] = append(present[w], i)
	}
	for w, seq := range present {
		// Trimming takes the oldest first, so a writer's surviving items are
		// its newest, without gaps.
		for j, i := range seq {
			if want := each - len(seq) + j; i != want {
				t.Fatalf("writer %d kept %v, not a suffix of its appends (item lost)", w, seq)
			}
		}
	}
}

// TestLockMutualExclusion: eight clients take one lock through HTTP with
// wait=; no two are ever inside the critical section at once and no
// increment of the (deliberately non-atomic) counter is lost.
func TestLockMutualExclusion(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	key := kv.TextKey("the-lock")
	const workers, rounds = 8, 12
	var inside atomic.Bool
	var counter atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := c.Lock(key)
			owner := fmt.Sprintf("worker-%d", w)
			for r := 0; r < rounds; r++ {
				st, err := l.Acquire(ctx, owner, time.Minute, 25*time.Second)
				if err != nil || !st.Acquired || st.Holder != owner {
					t.Errorf("%s: Acquire = %+v, %v", owner, st, err)
					return
				}
				if !inside.CompareAndSwap(false, true) {
					t.Errorf("%s: entered the critical section while another client was in it", owner)
				}
				v := counter.Load()
				runtime.Gosched()
				counter.Store(v + 1)
				inside.Store(false)
				if n, err := l.Release(ctx, owner); err != nil || n != 0 {
					t.Errorf("%s: Release = %d, %v", owner, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := counter.Load(); got != workers*rounds {
		t.Fatalf("counter = %d, want %d", got, workers*rounds)
	}
	if st, err := c.Lock(key).Status(ctx); err != nil || st.Locked {
		t.Fatalf("Status after all released = %+v, %v", st, err)
	}
}

func TestLockAndRLockOverHTTP(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	l := c.Lock(kv.IntKey(42))
	st, err := l.Acquire(ctx, "alice", time.Hour, 0)
	if err != nil || !st.Acquired || st.Holder != "alice" || st.Count != 1 || st.Remaining <= 0 {
		t.Fatalf("Acquire = %+v, %v", st, err)
	}
	if st, err := l.Acquire(ctx, "bob", 0, 0); err != nil || st.Acquired || st.Holder != "alice" {
		t.Fatalf("Acquire by bob = %+v, %v", st, err)
	}
	if _, err := l.Release(ctx, "bob"); !errors.Is(err, client.ErrNotOwner) {
		t.Fatalf("Release by bob: %v, want ErrNotOwner", err)
	}
	if err := l.Refresh(ctx, "bob", time.Hour); !errors.Is(err, client.ErrNotOwner) {
		t.Fatalf("Refresh by bob: %v, want ErrNotOwner", err)
	}
	if err := l.Refresh(ctx, "alice", 0); err != nil {
		t.Fatal(err)
	}
	if st, err := l.Status(ctx); err != nil || !st.Locked || st.Holder != "alice" || st.Remaining != 0 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	if _, err := l.Release(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Release(ctx, "alice"); !errors.Is(err, client.ErrNotOwner) {
		t.Fatalf("second Release: %v, want ErrNotOwner", err)
	}
	// A claim that expires frees the lock for a waiter: the server waits
	// for the expiry the engine reports.
	if st, err := l.Acquire(ctx, "alice", 50*time.Millisecond, 0); err != nil || !st.Acquired {
		t.Fatalf("short Acquire = %+v, %v", st, err)
	}
	if st, err := l.Acquire(ctx, "bob", 0, 20*time.Second); err != nil || !st.Acquired || st.Holder != "bob" {
		t.Fatalf("waiting Acquire = %+v, %v", st, err)
	}

	rl := c.RLock(kv.TextKey("re"))
	for depth := 1; depth <= 2; depth++ {
		if st, err := rl.Acquire(ctx, "alice", 0, 0); err != nil || !st.Acquired || st.Count != depth {
			t.Fatalf("RLock Acquire #%d = %+v, %v", depth, st, err)
		}
	}
	if st, err := rl.Acquire(ctx, "bob", 0, 0); err != nil || st.Acquired || st.Holder != "alice" || st.Count != 2 {
		t.Fatalf("RLock Acquire by bob = %+v, %v", st, err)
	}
	if st, err := rl.Status(ctx); err != nil || !st.Locked || st.Count != 2 {
		t.Fatalf("RLock Status = %+v, %v", st, err)
	}
	for want := 1; want >= 0; want-- {
		if n, err := rl.Release(ctx, "alice"); err != nil || n != want {
			t.Fatalf("RLock Release = %d, %v; want %d", n, err, want)
		}
	}
	if _, err := rl.Release(ctx, "alice"); !errors.Is(err, client.ErrNotOwner) {
		t.Fatalf("RLock over-release: %v", err)
	}
}

// TestSemaphoreBound: eight clients share three permits; never more than
// three are inside at once.
func TestSemaphoreBound(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	key := kv.TextKey("pool")
	const workers, rounds, permits = 8, 6, 3
	var inUse, peak, total atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := c.Semaphore(key, permits)
			owner := fmt.Sprintf("w%d", w)
			for r := 0; r < rounds; r++ {
				st, err := s.Acquire(ctx, owner, time.Minute, 25*time.Second)
				if err != nil || !st.Acquired || st.InUse > permits {
					t.Errorf("%s: Acquire = %+v, %v", owner, st, err)
					return
				}
				n := inUse.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				total.Add(1)
				runtime.Gosched()
				inUse.Add(-1)
				if _, err := s.Release(ctx, owner); err != nil {
					t.Errorf("%s: Release: %v", owner, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > permits || total.Load() != workers*rounds {
		t.Fatalf("peak %d permits in use (bound %d), %d acquisitions", p, permits, total.Load())
	}

	s := c.Semaphore(key, 2)
	for _, owner := range []string{"a", "b"} {
		if st, err := s.Acquire(ctx, owner, 0, 0); err != nil || !st.Acquired {
			t.Fatalf("Acquire %s = %+v, %v", owner, st, err)
		}
	}
	if st, err := s.Acquire(ctx, "c", 0, 0); err != nil || st.Acquired || st.InUse != 2 || st.RetryAfter != 0 {
		t.Fatalf("Acquire beyond the bound = %+v, %v", st, err)
	}
	if holders, n, err := s.Holders(ctx); err != nil || n != 2 || holders["a"] != 1 || holders["b"] != 1 {
		t.Fatalf("Holders = %v %d %v", holders, n, err)
	}
	if _, err := s.Release(ctx, "c"); !errors.Is(err, client.ErrNotOwner) {
		t.Fatalf("Release by a non-holder: %v, want ErrNotOwner", err)
	}
	if err := s.Refresh(ctx, "c", time.Minute); !errors.Is(err, client.ErrNotOwner) {
		t.Fatalf("Refresh by a non-holder: %v, want ErrNotOwner", err)
	}
	if err := s.Refresh(ctx, "a", time.Minute); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Release(ctx, "a"); err != nil || n != 1 {
		t.Fatalf("Release a = %d, %v", n, err)
	}
}

func TestAveragerAndRateLimitOverHTTP(t *testing.T) {
	ctx := context.Background()
	srv, c := startServer(t)
	a := c.Averager(kv.TextKey("latency"))
	if _, _, err := a.Get(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Get of no average: %v", err)
	}
	for i, x := range []float64{1, 2, 6} {
		avg, n, err := a.Add(ctx, x)
		if err != nil || n != int64(i+1) {
			t.Fatalf("Add(%v) = %v %d %v", x, avg, n, err)
		}
	}
	if avg, n, err := a.Get(ctx); err != nil || avg != 3 || n != 3 {
		t.Fatalf("Get = %v %d %v", avg, n, err)
	}
	if avg, n, err := a.Pop(ctx); err != nil || avg != 3 || n != 3 {
		t.Fatalf("Pop = %v %d %v", avg, n, err)
	}
	if _, _, err := a.Pop(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Pop of no average: %v", err)
	}

	rl := c.RateLimit(kv.TextKey("api"), 3, time.Hour)
	for i := 0; i < 3; i++ {
		if res, err := rl.Take(ctx, 1); err != nil || !res.Allowed {
			t.Fatalf("Take #%d = %+v, %v", i, res, err)
		}
	}
	res, err := rl.Take(ctx, 1)
	if !errors.Is(err, client.ErrRateLimited) || res.Allowed || res.RetryAfter <= 0 {
		t.Fatalf("Take after the burst = %+v, %v; want ErrRateLimited", res, err)
	}
	// The raw answer: 429, Retry-After in whole seconds, the JSON body.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/ratelimits/api?count=3&per=3600", nil)
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusTooManyRequests || err != nil || ra < 1 ||
		body["error"] != wire.CodeRateLimited || body["allowed"] != false || body["retry_after"] == nil || body["remaining"] == nil {
		t.Fatalf("raw 429 = %d Retry-After %q body %v", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if res, err := c.RateLimit(kv.TextKey("other"), 3, time.Hour).Take(ctx, 3); err != nil || !res.Allowed {
		t.Fatalf("another key's bucket = %+v, %v", res, err)
	}
}

func TestCollectionBadInput(t *testing.T) {
	srv, c := startServer(t)
	ctx := context.Background()
	// State for the conflict cases.
	if st, err := c.Lock(kv.TextKey("held")).Acquire(ctx, "alice", 0, 0); err != nil || !st.Acquired {
		t.Fatalf("Acquire = %+v, %v", st, err)
	}
	if _, err := c.Deque("d").Append(ctx, kv.Text("x")); err != nil {
		t.Fatal(err)
	}
	do := func(method, path, token, vtype, body string) (int, wire.Error) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if vtype != "" {
			req.Header.Set(wire.HeaderValueType, vtype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e wire.Error
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e
	}
	tok := srv.Token
	for _, tc := range []struct {
		method, path, token, vtype, body string
		status                           int
		code                             string
	}{
		{"GET", "/v1/deques/d", "", "", "", 401, wire.CodeUnauthorized},
		{"POST", "/v1/locks/k/acquire?owner=a", "wrong", "", "", 401, wire.CodeUnauthorized},
		// Names: traversal, absolute, empty segments, control characters.
		{"GET", "/v1/deques/..%2F..%2Fetc", tok, "", "", 400, wire.CodeBadName},
		{"GET", "/v1/deques/%2Fabs", tok, "", "", 400, wire.CodeBadName},
		{"POST", "/v1/deques/a%2F%2Fb/push", tok, "", "v", 400, wire.CodeBadName},
		{"GET", "/v1/deques/a%2F..%2F..%2Fx/items", tok, "", "", 400, wire.CodeBadName},
		{"GET", "/v1/indexes/..%2Fcache%2Fx", tok, "", "", 400, wire.CodeBadName},
		{"PUT", "/v1/indexes/a%5Cb/keys/k", tok, "", "v", 400, wire.CodeBadName},
		{"GET", "/v1/indexes/a%00b/keys/k", tok, "", "", 400, wire.CodeBadName},
		// Empty, out of range.
		{"POST", "/v1/deques/empty/pop", tok, "", "", 404, wire.CodeEmpty},
		{"GET", "/v1/deques/empty/peek?side=front", tok, "", "", 404, wire.CodeEmpty},
		{"GET", "/v1/deques/d/items/1", tok, "", "", 404, wire.CodeIndexOutOfRange},
		{"GET", "/v1/deques/d/items/-2", tok, "", "", 404, wire.CodeIndexOutOfRange},
		{"PUT", "/v1/deques/d/items/5", tok, "", "v", 404, wire.CodeIndexOutOfRange},
		{"DELETE", "/v1/deques/empty/items/0", tok, "", "", 404, wire.CodeIndexOutOfRange},
		{"POST", "/v1/indexes/i/popitem", tok, "", "", 404, wire.CodeEmpty},
		{"GET", "/v1/indexes/i/peekitem?last=false", tok, "", "", 404, wire.CodeEmpty},
		{"POST", "/v1/indexes/i/pull?prefix=p", tok, "", "", 404, wire.CodeEmpty},
		{"GET", "/v1/indexes/i/keys/nope", tok, "", "", 404, wire.CodeNotFound},
		{"POST", "/v1/indexes/i/keys/nope/pop", tok, "", "", 404, wire.CodeNotFound},
		{"GET", "/v1/averages/none", tok, "", "", 404, wire.CodeNotFound},
		{"DELETE", "/v1/averages/none", tok, "", "", 404, wire.CodeNotFound},
		// Bad numbers and parameters.
		{"POST", "/v1/deques/d/push?maxlen=x", tok, "", "v", 400, wire.CodeBadRequest},
		{"POST", "/v1/deques/d/push?maxlen=-1", tok, "", "v", 400, wire.CodeBadRequest},
		{"POST", "/v1/deques/d/push?side=middle", tok, "", "v", 400, wire.CodeBadRequest},
		{"POST", "/v1/deques/d/push", tok, "int", "1.5", 400, wire.CodeBadValue},
		{"GET", "/v1/deques/d/items?limit=0", tok, "", "", 400, wire.CodeBadRequest},
		{"GET", "/v1/deques/d/items?limit=10001", tok, "", "", 400, wire.CodeBadRequest},
		{"GET", "/v1/deques/d/items?offset=-1", tok, "", "", 400, wire.CodeBadRequest},
		{"GET", "/v1/deques/d/items?reverse=maybe", tok, "", "", 400, wire.CodeBadRequest},
		{"GET", "/v1/deques/d/items/first", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/deques/d/rotate?steps=1.5", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/deques/d/items", tok, "", "{\"key\":\"\",\"len\":5}\nab", 400, wire.CodeBadRequest},
		{"POST", "/v1/deques/d/items", tok, "", "{\"key\":\"\",\"type\":\"text\",\"len\":1}\na{\"key\":\"\",\"type\":\"int\",\"len\":1}\nx", 400, wire.CodeBadValue},
		{"POST", "/v1/deques/d/items", tok, "", "not a record stream", 400, wire.CodeBadRequest},
		{"GET", "/v1/indexes/i/items?cursor=bogus", tok, "", "", 400, wire.CodeBadRequest},
		{"GET", "/v1/indexes/i/items?limit=-5", tok, "", "", 400, wire.CodeBadRequest},
		{"GET", "/v1/indexes/i/keys/k?kt=int", tok, "", "", 400, wire.CodeBadKey},
		{"POST", "/v1/indexes/i/popitem?last=sometimes", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/indexes/i/push?prefix=%FF", tok, "", "v", 400, wire.CodeBadKey},
		{"POST", "/v1/locks/k/acquire", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/locks/k/acquire?owner=a&ttl=-1", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/locks/k/acquire?owner=a&wait=soon", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/locks/k/acquire?owner=a&reentrant=perhaps", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/locks/held/release?owner=bob", tok, "", "", 409, wire.CodeNotOwner},
		{"POST", "/v1/locks/held/refresh?owner=bob&ttl=5", tok, "", "", 409, wire.CodeNotOwner},
		{"POST", "/v1/locks/free/release?owner=bob&reentrant=true", tok, "", "", 409, wire.CodeNotOwner},
		{"POST", "/v1/semaphores/s/acquire?owner=a&value=0", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/semaphores/s/acquire?owner=a&value=two", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/semaphores/s/release?owner=a", tok, "", "", 409, wire.CodeNotOwner},
		{"POST", "/v1/semaphores/s/refresh?owner=a", tok, "", "", 409, wire.CodeNotOwner},
		{"POST", "/v1/averages/avg", tok, "", "fast", 400, wire.CodeBadValue},
		{"POST", "/v1/averages/avg", tok, "", "nan", 400, wire.CodeBadValue},
		{"POST", "/v1/averages/held", tok, "", "1", 409, wire.CodeWrongType},
		{"POST", "/v1/ratelimits/r", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/ratelimits/r?count=0&per=1", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/ratelimits/r?count=5&per=0", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/ratelimits/r?count=5&per=x", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/ratelimits/r?count=5&per=1&cost=6", tok, "", "", 400, wire.CodeBadRequest},
	} {
		status, e := do(tc.method, tc.path, tc.token, tc.vtype, tc.body)
		if status != tc.status || e.Code != tc.code || e.Message == "" {
			t.Errorf("%s %s (%q) = %d %+v, want %d %s", tc.method, tc.path, tc.body, status, e, tc.status, tc.code)
		}
	}
	// Nothing of the rejected writes was stored: the deque still holds
	// exactly its one item, and no rejected name made a directory.
	if vals := dequeValues(t, c.Deque("d"), 0); len(vals) != 1 || !vals[0].Equal(kv.Text("x")) {
		t.Fatalf("deque after rejected writes = %v", vals)
	}
}
