package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

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
