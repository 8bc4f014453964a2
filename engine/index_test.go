package engine

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

func openIndexTest(t *testing.T) *Index {
	t.Helper()
	x, err := OpenIndex(context.Background(), t.TempDir())
	if err != nil {
		t.Fatalf("OpenIndex: %v", err)
	}
	t.Cleanup(func() { _ = x.Close() })
	return x
}

// ixExpect checks the index's items in both directions and its length.
func ixExpect(t *testing.T, x *Index, keys []Key, values []Value) {
	t.Helper()
	ctx := context.Background()
	var gotK []Key
	var gotV []Value
	for it, err := range x.Items(ctx, false) {
		if err != nil {
			t.Fatal(err)
		}
		gotK = append(gotK, it.Key)
		gotV = append(gotV, it.Value)
	}
	if !slices.EqualFunc(gotK, keys, Key.Equal) || !slices.EqualFunc(gotV, values, Value.Equal) {
		t.Fatalf("items = %v %v, want %v %v", gotK, gotV, keys, values)
	}
	var revK []Key
	for k, err := range x.Keys(ctx, true) {
		if err != nil {
			t.Fatal(err)
		}
		revK = append(revK, k)
	}
	slices.Reverse(revK)
	if !slices.EqualFunc(revK, keys, Key.Equal) {
		t.Fatalf("reversed keys = %v, want reversed %v", revK, keys)
	}
	var vals []Value
	for v, err := range x.Values(ctx, false) {
		if err != nil {
			t.Fatal(err)
		}
		vals = append(vals, v)
	}
	if !slices.EqualFunc(vals, values, Value.Equal) {
		t.Fatalf("values = %v, want %v", vals, values)
	}
	if n, err := x.Len(ctx); err != nil || n != int64(len(keys)) {
		t.Fatalf("Len = %d %v, want %d", n, err, len(keys))
	}
}

func TestIndexMappingOrder(t *testing.T) {
	ctx := context.Background()
	x := openIndexTest(t)
	if x.Cache().Settings().EvictionPolicy != PolicyNone {
		t.Fatalf("policy %s", x.Cache().Settings().EvictionPolicy)
	}
	a, b, c := TextKey("a"), TextKey("b"), TextKey("c")
	for i, k := range []Key{a, b, c} {
		if err := x.Set(ctx, k, Int(int64(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	ixExpect(t, x, []Key{a, b, c}, dqInts(1, 2, 3))
	// Overwriting keeps the place; delete and re-add moves to the end.
	if err := x.Set(ctx, a, Int(10)); err != nil {
		t.Fatal(err)
	}
	ixExpect(t, x, []Key{a, b, c}, dqInts(10, 2, 3))
	if ok, err := x.Delete(ctx, a); !ok || err != nil {
		t.Fatalf("Delete = %v %v", ok, err)
	}
	if ok, err := x.Delete(ctx, a); ok || err != nil {
		t.Fatalf("Delete absent = %v %v", ok, err)
	}
	if err := x.Set(ctx, a, Int(11)); err != nil {
		t.Fatal(err)
	}
	ixExpect(t, x, []Key{b, c, a}, dqInts(2, 3, 11))

	if v, ok, err := x.Get(ctx, b); !ok || err != nil || !v.Equal(Int(2)) {
		t.Fatalf("Get = %v %v %v", v, ok, err)
	}
	if _, ok, err := x.Get(ctx, TextKey("zz")); ok || err != nil {
		t.Fatalf("Get absent = %v %v", ok, err)
	}
	if ok, _ := x.Contains(ctx, c); !ok {
		t.Fatal("Contains")
	}
	// python: setdefault('d', 0) -> 0; setdefault('d', 1) -> 0
	if v, err := x.SetDefault(ctx, TextKey("d"), Int(0)); err != nil || !v.Equal(Int(0)) {
		t.Fatalf("SetDefault = %v %v", v, err)
	}
	if v, err := x.SetDefault(ctx, TextKey("d"), Int(1)); err != nil || !v.Equal(Int(0)) {
		t.Fatalf("SetDefault again = %v %v", v, err)
	}
	if v, ok, err := x.Pop(ctx, TextKey("d")); !ok || err != nil || !v.Equal(Int(0)) {
		t.Fatalf("Pop = %v %v %v", v, ok, err)
	}
	if _, ok, err := x.Pop(ctx, TextKey("d")); ok || err != nil {
		t.Fatalf("Pop absent = %v %v", ok, err)
	}
	ixExpect(t, x, []Key{b, c, a}, dqInts(2, 3, 11))
	if err := x.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	ixExpect(t, x, nil, nil)
}

func TestIndexPeekPopItem(t *testing.T) {
	ctx := context.Background()
	x := openIndexTest(t)
	if _, _, err := x.PeekItem(ctx, true); !errors.Is(err, ErrEmpty) {
		t.Fatalf("PeekItem empty = %v", err)
	}
	if _, _, err := x.PopItem(ctx, true); !errors.Is(err, ErrEmpty) {
		t.Fatalf("PopItem empty = %v", err)
	}
	// python: for num, letter in enumerate('xyz'): index[letter] = num
	for i, l := range []string{"x", "y", "z"} {
		if err := x.Set(ctx, TextKey(l), Int(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	if k, v, err := x.PeekItem(ctx, true); err != nil || !k.Equal(TextKey("z")) || !v.Equal(Int(2)) {
		t.Fatalf("PeekItem last = %v %v %v", k, v, err)
	}
	if k, v, err := x.PeekItem(ctx, false); err != nil || !k.Equal(TextKey("x")) || !v.Equal(Int(0)) {
		t.Fatalf("PeekItem first = %v %v %v", k, v, err)
	}
	// python: update a, b, c; popitem() -> c; popitem(last=False) -> a; popitem() -> b
	if err := x.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	for i, l := range []string{"a", "b", "c"} {
		if err := x.Set(ctx, TextKey(l), Int(int64(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		last bool
		key  string
		val  int64
	}{{true, "c", 3}, {false, "a", 1}, {true, "b", 2}} {
		k, v, err := x.PopItem(ctx, step.last)
		if err != nil || !k.Equal(TextKey(step.key)) || !v.Equal(Int(step.val)) {
			t.Fatalf("PopItem(%v) = %v %v %v, want %s %d", step.last, k, v, err, step.key, step.val)
		}
	}
	if _, _, err := x.PopItem(ctx, false); !errors.Is(err, ErrEmpty) {
		t.Fatalf("PopItem drained = %v", err)
	}
}

func TestIndexPushPull(t *testing.T) {
	ctx := context.Background()
	x := openIndexTest(t)
	// python: push('apples') -> 500000000000000; push('beans') -> …001;
	// push('cherries', side='front') -> 499999999999999;
	// push('dates', prefix='fruit') -> 'fruit-500000000000000'
	steps := []struct {
		v      string
		prefix string
		side   Side
		key    Key
	}{
		{"apples", "", 0, IntKey(500000000000000)},
		{"beans", "", Back, IntKey(500000000000001)},
		{"cherries", "", Front, IntKey(499999999999999)},
		{"dates", "fruit", 0, TextKey("fruit-500000000000000")},
	}
	for _, s := range steps {
		k, err := x.Push(ctx, Text(s.v), s.prefix, s.side)
		if err != nil || !k.Equal(s.key) {
			t.Fatalf("Push(%s) = %v %v, want %v", s.v, k, err, s.key)
		}
	}
	if v, ok, _ := x.Get(ctx, IntKey(500000000000001)); !ok || !v.Equal(Text("beans")) {
		t.Fatalf("index[500000000000001] = %v", v)
	}
	k, v, ok, err := x.Pull(ctx, "", 0)
	if err != nil || !ok || !k.Equal(IntKey(499999999999999)) || !v.Equal(Text("cherries")) {
		t.Fatalf("Pull = %v %v %v %v", k, v, ok, err)
	}
	k, v, ok, err = x.Pull(ctx, "", Back)
	if err != nil || !ok || !k.Equal(IntKey(500000000000001)) || !v.Equal(Text("beans")) {
		t.Fatalf("Pull back = %v %v %v %v", k, v, ok, err)
	}
	if _, _, ok, err := x.Pull(ctx, "veg", 0); ok || err != nil {
		t.Fatalf("Pull empty queue = %v %v", ok, err)
	}
	k, v, ok, err = x.Pull(ctx, "fruit", 0)
	if err != nil || !ok || !k.Equal(TextKey("fruit-500000000000000")) || !v.Equal(Text("dates")) {
		t.Fatalf("Pull fruit = %v %v %v %v", k, v, ok, err)
	}
	ixExpect(t, x, []Key{IntKey(500000000000000)}, []Value{Text("apples")})
}

func TestIndexTransactAndReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	x, err := OpenIndex(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	total, count := TextKey("total"), TextKey("count")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				// python: with mapping.transact(): mapping['total'] = mapping.get('total', 0) + 123.4 …
				err := x.Transact(ctx, func(tx *Tx) error {
					for _, kv := range []struct {
						k Key
						d float64
					}{{total, 123.4}, {count, 1}} {
						cur := 0.0
						it, ok, err := tx.Get(kv.k, GetOptions{})
						if err != nil {
							return err
						}
						if ok {
							cur = it.Value.Float
						}
						if err := tx.Set(kv.k, Float(cur+kv.d), SetOptions{}); err != nil {
							return err
						}
					}
					return nil
				})
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
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	y, err := OpenIndex(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer y.Close()
	c, _, _ := y.Get(ctx, count)
	tot, _, _ := y.Get(ctx, total)
	want := 0.0
	for range 80 {
		want += 123.4
	}
	if c.Float != 80 || tot.Float != want {
		t.Fatalf("count %v total %v", c, tot)
	}
	ixExpect(t, y, []Key{total, count}, []Value{tot, c})

	// NewIndex over a cache the caller owns: Close leaves it open.
	z := NewIndex(y.Cache())
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := y.Len(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestDequeIndexSkipExpired(t *testing.T) {
	ctx := context.Background()
	clk := newFoClock()
	c, err := Open(ctx, t.TempDir(), Options{Now: clk.Now, Settings: map[string]any{SettingEvictionPolicy: "none"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := NewDeque(c, 0)
	if err := d.Extend(ctx, dqInts(1, 2)); err != nil {
		t.Fatal(err)
	}
	// An item with an expiry written by someone else, in the middle.
	if _, err := c.Push(ctx, Int(99), QueueOptions{}, SetOptions{Expire: ExpireAfter(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := d.Append(ctx, Int(3)); err != nil {
		t.Fatal(err)
	}
	if v, err := d.At(ctx, 2); err != nil || !v.Equal(Int(99)) {
		t.Fatalf("At(2) before expiry = %v %v", v, err)
	}
	clk.Advance(time.Hour)
	got, err := d.Slice(ctx)
	if err != nil || !slices.EqualFunc(got, dqInts(1, 2, 3), Value.Equal) {
		t.Fatalf("Slice = %v %v", got, err)
	}
	if v, err := d.At(ctx, 2); err != nil || !v.Equal(Int(3)) {
		t.Fatalf("At(2) after expiry = %v %v", v, err)
	}
	if n, _ := d.Count(ctx, Int(99)); n != 0 {
		t.Fatal("Count saw an expired item")
	}
	if err := d.Reverse(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ = d.Slice(ctx)
	if !slices.EqualFunc(got, dqInts(3, 2, 1), Value.Equal) {
		t.Fatalf("after Reverse = %v", got)
	}
	if n, _ := d.Len(ctx); n != 3 {
		t.Fatalf("Reverse kept the expired item: Len %d", n)
	}

	x := NewIndex(c)
	if err := x.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if err := x.Set(ctx, TextKey("a"), Int(1)); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, TextKey("b"), Int(2), SetOptions{Expire: ExpireAfter(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	var items []Key
	for it, err := range x.Items(ctx, false) {
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, it.Key)
	}
	if !slices.EqualFunc(items, []Key{TextKey("a")}, Key.Equal) {
		t.Fatalf("Items = %v", items)
	}
	if k, _, err := x.PopItem(ctx, true); err != nil || !k.Equal(TextKey("a")) {
		t.Fatalf("PopItem skipped the expired item? %v %v", k, err)
	}
}
