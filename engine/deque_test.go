package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

func openDequeTest(t *testing.T, maxlen int) *Deque {
	t.Helper()
	d, err := OpenDeque(context.Background(), t.TempDir(), maxlen)
	if err != nil {
		t.Fatalf("OpenDeque: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// dqTexts turns single-letter strings into text values.
func dqTexts(s string) []kv.Value {
	var out []kv.Value
	for _, r := range s {
		out = append(out, kv.Text(string(r)))
	}
	return out
}

func dqInts(ns ...int64) []kv.Value {
	var out []kv.Value
	for _, n := range ns {
		out = append(out, kv.Int(n))
	}
	return out
}

// dqExpect checks the deque's contents in both directions and its length.
func dqExpect(t *testing.T, d *Deque, want []kv.Value) {
	t.Helper()
	ctx := context.Background()
	got, err := d.Slice(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, want, kv.Value.Equal) {
		t.Fatalf("deque = %v, want %v", got, want)
	}
	var back []kv.Value
	for v, err := range d.Values(ctx, true) {
		if err != nil {
			t.Fatal(err)
		}
		back = append(back, v)
	}
	slices.Reverse(back)
	if !slices.EqualFunc(back, want, kv.Value.Equal) {
		t.Fatalf("reversed deque = %v, want reversed %v", back, want)
	}
	if n, err := d.Len(ctx); err != nil || n != int64(len(want)) {
		t.Fatalf("Len = %d %v, want %d", n, err, len(want))
	}
}

func TestDequeAppendPopPeek(t *testing.T) {
	ctx := context.Background()
	d := openDequeTest(t, 0)
	if d.Cache().Settings().EvictionPolicy != settings.PolicyNone {
		t.Fatalf("policy %s", d.Cache().Settings().EvictionPolicy)
	}
	for _, op := range []func(context.Context) (kv.Value, error){d.Pop, d.PopLeft, d.Peek, d.PeekLeft} {
		if _, err := op(ctx); !errors.Is(err, kv.ErrEmpty) {
			t.Fatalf("on an empty deque: %v", err)
		}
	}
	// python: deque += range(5); appendleft(-value) for value in range(5)
	if err := d.Extend(ctx, dqInts(0, 1, 2, 3, 4)); err != nil {
		t.Fatal(err)
	}
	for v := range int64(5) {
		if err := d.AppendLeft(ctx, kv.Int(-v)); err != nil {
			t.Fatal(err)
		}
	}
	dqExpect(t, d, dqInts(-4, -3, -2, -1, 0, 0, 1, 2, 3, 4))
	if v, err := d.Pop(ctx); err != nil || !v.Equal(kv.Int(4)) {
		t.Fatalf("Pop = %v %v", v, err)
	}
	if v, err := d.PopLeft(ctx); err != nil || !v.Equal(kv.Int(-4)) {
		t.Fatalf("PopLeft = %v %v", v, err)
	}
	if v, err := d.Peek(ctx); err != nil || !v.Equal(kv.Int(3)) {
		t.Fatalf("Peek = %v %v", v, err)
	}
	if v, err := d.PeekLeft(ctx); err != nil || !v.Equal(kv.Int(-3)) {
		t.Fatalf("PeekLeft = %v %v", v, err)
	}
	if err := d.Reverse(ctx); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqInts(3, 2, 1, 0, 0, -1, -2, -3))
	if err := d.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, nil)

	// Keys are python-diskcache's queue keys.
	if err := d.Append(ctx, kv.Text("a")); err != nil {
		t.Fatal(err)
	}
	if err := d.AppendLeft(ctx, kv.Text("b")); err != nil {
		t.Fatal(err)
	}
	var keys []kv.Key
	for k, err := range d.Cache().SortedKeys(ctx, false) {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	if !slices.EqualFunc(keys, []kv.Key{kv.IntKey(queueStart - 1), kv.IntKey(queueStart)}, kv.Key.Equal) {
		t.Fatalf("keys = %v", keys)
	}
}

func TestDequeExtendLeftAndIndexing(t *testing.T) {
	ctx := context.Background()
	d := openDequeTest(t, 0)
	if err := d.ExtendLeft(ctx, dqTexts("abc")); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqTexts("cba"))
	if err := d.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Extend(ctx, dqTexts("abcde")); err != nil {
		t.Fatal(err)
	}
	for i, want := range map[int]string{0: "a", 1: "b", 4: "e", -1: "e", -2: "d", -5: "a"} {
		v, err := d.At(ctx, i)
		if err != nil || !v.Equal(kv.Text(want)) {
			t.Fatalf("At(%d) = %v %v, want %s", i, v, err, want)
		}
	}
	for _, i := range []int{5, 100, -6, -100} {
		if _, err := d.At(ctx, i); !errors.Is(err, kv.ErrIndexOutOfRange) {
			t.Fatalf("At(%d) = %v", i, err)
		}
		if err := d.SetAt(ctx, i, kv.Int(1)); !errors.Is(err, kv.ErrIndexOutOfRange) {
			t.Fatalf("SetAt(%d) = %v", i, err)
		}
		if err := d.DeleteAt(ctx, i); !errors.Is(err, kv.ErrIndexOutOfRange) {
			t.Fatalf("DeleteAt(%d) = %v", i, err)
		}
	}
	// python: deque[0] = 'A'; deque[-1] = 'E'; del deque[1]; del deque[-2]
	if err := d.SetAt(ctx, 0, kv.Text("A")); err != nil {
		t.Fatal(err)
	}
	if err := d.SetAt(ctx, -1, kv.Text("E")); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqTexts("AbcdE"))
	if err := d.DeleteAt(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteAt(ctx, -2); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqTexts("AcE"))
}

func TestDequeRemoveCount(t *testing.T) {
	ctx := context.Background()
	d := openDequeTest(t, 0)
	// python: deque += 'aab'; remove('a') -> ['a', 'b']; remove('b'); remove('c') raises
	if err := d.Extend(ctx, dqTexts("aab")); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(ctx, kv.Text("a")); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqTexts("ab"))
	if err := d.Remove(ctx, kv.Text("b")); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqTexts("a"))
	if err := d.Remove(ctx, kv.Text("c")); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Remove absent = %v", err)
	}
	if err := d.Remove(ctx, kv.Bytes([]byte("a"))); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Remove b'a' matched 'a': %v", err)
	}

	// python: deque += [num for num in range(1, 5) for _ in range(num)]
	if err := d.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	for n := int64(1); n < 5; n++ {
		for range n {
			if err := d.Append(ctx, kv.Int(n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for v, want := range map[int64]int64{0: 0, 1: 1, 2: 2, 4: 4} {
		if n, err := d.Count(ctx, kv.Int(v)); err != nil || n != want {
			t.Fatalf("Count(%d) = %d %v, want %d", v, n, err, want)
		}
	}
	// Python equality: 3 == 3.0.
	if n, _ := d.Count(ctx, kv.Float(3)); n != 3 {
		t.Fatalf("Count(3.0) = %d", n)
	}
	if n, _ := d.Count(ctx, kv.Text("3")); n != 0 {
		t.Fatalf("Count('3') = %d", n)
	}
	if err := d.Remove(ctx, kv.Float(2)); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqInts(1, 2, 3, 3, 3, 4, 4, 4, 4))
}

func TestDequeFileValues(t *testing.T) {
	ctx := context.Background()
	c, err := Open(ctx, t.TempDir(), Options{Settings: map[settings.Name]any{settings.NameEvictionPolicy: "none", settings.NameDiskMinFileSize: 16}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := NewDeque(c, 0)
	big := func(s string) kv.Value { return kv.Text(strings.Repeat(s, 40)) }
	vals := []kv.Value{big("a"), big("b"), kv.Bytes([]byte(strings.Repeat("c", 40))), big("d"), kv.Int(5)}
	if err := d.Extend(ctx, vals); err != nil {
		t.Fatal(err)
	}
	if n, err := d.Count(ctx, big("b")); err != nil || n != 1 {
		t.Fatalf("Count(big b) = %d %v", n, err)
	}
	if n, _ := d.Count(ctx, kv.Bytes([]byte(strings.Repeat("b", 40)))); n != 0 {
		t.Fatalf("bytes matched text: %d", n)
	}
	if err := d.Rotate(ctx, 2); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, []kv.Value{big("d"), kv.Int(5), big("a"), big("b"), vals[2]})
	if err := d.Reverse(ctx); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, []kv.Value{vals[2], big("b"), big("a"), kv.Int(5), big("d")})
	if err := d.Remove(ctx, big("a")); err != nil {
		t.Fatal(err)
	}
	if v, err := d.PopLeft(ctx); err != nil || !v.Equal(vals[2]) {
		t.Fatalf("PopLeft = %v %v", v, err)
	}
	dqExpect(t, d, []kv.Value{big("b"), kv.Int(5), big("d")})
	if warns, err := c.Check(ctx, false); err != nil || len(warns) != 0 {
		t.Fatalf("Check = %v %v", warns, err)
	}
	if err := d.Close(); err != nil { // not owned: c stays open
		t.Fatal(err)
	}
	if _, err := c.Len(ctx); err != nil {
		t.Fatalf("NewDeque's Close closed the cache: %v", err)
	}
}

func TestDequeRotate(t *testing.T) {
	ctx := context.Background()
	d := openDequeTest(t, 0)
	if err := d.Rotate(ctx, 3); err != nil { // empty: nothing to do
		t.Fatal(err)
	}
	// python: deque += range(5); rotate(2) -> [3, 4, 0, 1, 2]; rotate(-1) -> [4, 0, 1, 2, 3]
	if err := d.Extend(ctx, dqInts(0, 1, 2, 3, 4)); err != nil {
		t.Fatal(err)
	}
	if err := d.Rotate(ctx, 2); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqInts(3, 4, 0, 1, 2))
	if err := d.Rotate(ctx, -1); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqInts(4, 0, 1, 2, 3))
	for _, tc := range []struct {
		steps int
		want  []kv.Value
	}{
		{0, dqInts(4, 0, 1, 2, 3)},
		{5, dqInts(4, 0, 1, 2, 3)},
		{-10, dqInts(4, 0, 1, 2, 3)},
		{4, dqInts(0, 1, 2, 3, 4)}, // more than half: rotated the other way
		{-3, dqInts(3, 4, 0, 1, 2)},
		{13, dqInts(0, 1, 2, 3, 4)},
		{-7, dqInts(2, 3, 4, 0, 1)},
	} {
		if err := d.Rotate(ctx, tc.steps); err != nil {
			t.Fatal(err)
		}
		dqExpect(t, d, tc.want)
	}
	// Appends keep working at both ends after rotations.
	if err := d.Append(ctx, kv.Int(9)); err != nil {
		t.Fatal(err)
	}
	if err := d.AppendLeft(ctx, kv.Int(-9)); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqInts(-9, 2, 3, 4, 0, 1, 9))
}

func TestDequeMaxlen(t *testing.T) {
	ctx := context.Background()
	d := openDequeTest(t, 3)
	if d.Maxlen() != 3 {
		t.Fatalf("Maxlen = %d", d.Maxlen())
	}
	if err := d.Extend(ctx, dqInts(1, 2, 3, 4, 5)); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqInts(3, 4, 5))
	if err := d.AppendLeft(ctx, kv.Int(0)); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqInts(0, 3, 4))
	if err := d.ExtendLeft(ctx, dqInts(-1, -2)); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqInts(-2, -1, 0))
	if err := d.SetMaxlen(ctx, 2); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqInts(-1, 0))
	if err := d.SetMaxlen(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Extend(ctx, dqInts(1, 2, 3)); err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d, dqInts(-1, 0, 1, 2, 3))
}

func TestDequePersistsAndConcurrentAppends(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, err := OpenDeque(ctx, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	const workers, per = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				var err error
				if i%2 == 0 {
					err = d.Append(ctx, kv.Text(fmt.Sprintf("%d-%d", w, i)))
				} else {
					err = d.AppendLeft(ctx, kv.Text(fmt.Sprintf("%d-%d", w, i)))
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want, err := d.Slice(ctx)
	if err != nil || len(want) != workers*per {
		t.Fatalf("Slice = %d items, %v", len(want), err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Len(ctx); !errors.Is(err, kv.ErrClosed) {
		t.Fatalf("Len after Close = %v", err)
	}
	d2, err := OpenDeque(ctx, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	dqExpect(t, d2, want)

	// Transact: rotate one item by hand, atomically (python's example).
	err = d2.Transact(ctx, func(tx *Tx) error {
		it, ok, err := tx.Pull(QueueOptions{Side: Back}, GetOptions{})
		if err != nil || !ok {
			return fmt.Errorf("pull: %v %w", ok, err)
		}
		_, err = tx.Push(it.Value, QueueOptions{Side: Front}, kv.SetOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	dqExpect(t, d2, append([]kv.Value{want[len(want)-1]}, want[:len(want)-1]...))
}

func TestPyEqual(t *testing.T) {
	for _, tc := range []struct {
		a, b kv.Value
		eq   bool
	}{
		{kv.Int(1), kv.Int(1), true},
		{kv.Int(1), kv.Float(1), true},
		{kv.Float(1), kv.Int(1), true},
		{kv.Int(1), kv.Float(1.5), false},
		{kv.Int(1 << 53), kv.Float(1 << 53), true},
		{kv.Int(1<<53 + 1), kv.Float(1 << 53), false},
		{kv.Float(nan()), kv.Float(nan()), false},
		{kv.Text("a"), kv.Text("a"), true},
		{kv.Text("a"), kv.Bytes([]byte("a")), false},
		{kv.Bytes(nil), kv.Bytes([]byte{}), true},
		{kv.Pickle([]byte{1}), kv.Pickle([]byte{1}), true},
		{kv.Int(1), kv.Text("1"), false},
	} {
		if got := pyEqual(tc.a, tc.b); got != tc.eq {
			t.Errorf("pyEqual(%v, %v) = %v", tc.a, tc.b, got)
		}
	}
}

func nan() float64 {
	var zero float64
	return zero / zero
}
