package engine

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
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
func ixExpect(t *testing.T, x *Index, keys []kv.Key, values []kv.Value) {
	t.Helper()
	ctx := context.Background()
	var gotK []kv.Key
	var gotV []kv.Value
	for it, err := range x.Items(ctx, false) {
		if err != nil {
			t.Fatal(err)
		}
		gotK = append(gotK, it.Key)
		gotV = append(gotV, it.Value)
	}
	if !slices.EqualFunc(gotK, keys, kv.Key.Equal) || !slices.EqualFunc(gotV, values, kv.Value.Equal) {
		t.Fatalf("items = %v %v, want %v %v", gotK, gotV, keys, values)
	}
	var revK []kv.Key
	for k, err := range x.Keys(ctx, true) {
		if err != nil {
			t.Fatal(err)
		}
		revK = append(revK, k)
	}
	slices.Reverse(revK)
	if !slices.EqualFunc(revK, keys, kv.Key.Equal) {
		t.Fatalf("reversed keys = %v, want reversed %v", revK, keys)
	}
	var vals []kv.Value
	for v, err := range x.Values(ctx, false) {
		if err != nil {
			t.Fatal(err)
		}
		vals = append(vals, v)
	}
	if !slices.EqualFunc(vals, values, kv.Value.Equal) {
		t.Fatalf("values = %v, want %v", vals, values)
	}
	if n, err := x.Len(ctx); err != nil || n != int64(len(keys)) {
		t.Fatalf("Len = %d %v, want %d", n, err, len(keys))
	}
}

func TestIndexMappingOrder(t *testing.T) {
	ctx := context.Background()
	x := openIndexTest(t)
	if x.Cache().Settings().EvictionPolicy != settings.PolicyNone {
		t.Fatalf("policy %s", x.Cache().Settings().EvictionPolicy)
	}
	a, b, c := kv.TextKey("a"), kv.TextKey("b"), kv.TextKey("c")
	for i, k := range []kv.Key{a, b, c} {
		if err := x.Set(ctx, k, kv.Int(int64(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	ixExpect(t, x, []kv.Key{a, b, c}, dqInts(1, 2, 3))
	// Overwriting keeps the place; delete and re-add moves to the end.
	if err := x.Set(ctx, a, kv.Int(10)); err != nil {
		t.Fatal(err)
	}
	ixExpect(t, x, []kv.Key{a, b, c}, dqInts(10, 2, 3))
	if ok, err := x.Delete(ctx, a); !ok || err != nil {
		t.Fatalf("Delete = %v %v", ok, err)
	}
	if ok, err := x.Delete(ctx, a); ok || err != nil {
		t.Fatalf("Delete absent = %v %v", ok, err)
	}
	if err := x.Set(ctx, a, kv.Int(11)); err != nil {
		t.Fatal(err)
	}
	ixExpect(t, x, []kv.Key{b, c, a}, dqInts(2, 3, 11))

	if v, ok, err := x.Get(ctx, b); !ok || err != nil || !v.Equal(kv.Int(2)) {
		t.Fatalf("Get = %v %v %v", v, ok, err)
	}
	if _, ok, err := x.Get(ctx, kv.TextKey("zz")); ok || err != nil {
		t.Fatalf("Get absent = %v %v", ok, err)
	}
	if ok, _ := x.Contains(ctx, c); !ok {
		t.Fatal("Contains")
	}
	// python: setdefault('d', 0) -> 0; setdefault('d', 1) -> 0
	if v, err := x.SetDefault(ctx, kv.TextKey("d"), kv.Int(0)); err != nil || !v.Equal(kv.Int(0)) {
		t.Fatalf("SetDefault = %v %v", v, err)
	}
	if v, err := x.SetDefault(ctx, kv.TextKey("d"), kv.Int(1)); err != nil || !v.Equal(kv.Int(0)) {
		t.Fatalf("SetDefault again = %v %v", v, err)
	}
	if v, ok, err := x.Pop(ctx, kv.TextKey("d")); !ok || err != nil || !v.Equal(kv.Int(0)) {
		t.Fatalf("Pop = %v %v %v", v, ok, err)
	}
	if _, ok, err := x.Pop(ctx, kv.TextKey("d")); ok || err != nil {
		t.Fatalf("Pop absent = %v %v", ok, err)
	}
	ixExpect(t, x, []kv.Key{b, c, a}, dqInts(2, 3, 11))
	if err := x.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	ixExpect(t, x, nil, nil)
}

func TestIndexPeekPopItem(t *testing.T) {
	ctx := context.Background()
	x := openIndexTest(t)
	if _, _, err := x.PeekItem(ctx, true); !errors.Is(err, kv.ErrEmpty) {
		t.Fatalf("PeekItem empty = %v", err)
	}
	if _, _, err := x.PopItem(ctx, true); !errors.Is(err, kv.ErrEmpty) {
		t.Fatalf("PopItem empty = %v", err)
	}
	// python: for num, letter in enumerate('xyz'): index[letter] = num
	for i, l := range []string{"x", "y", "z"} {
		if err := x.Set(ctx, kv.TextKey(l), kv.Int(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	if k, v, err := x.PeekItem(ctx, true); err != nil || !k.Equal(kv.TextKey("z")) || !v.Equal(kv.Int(2)) {
		t.Fatalf("PeekItem last = %v %v %v", k, v, err)
	}
	if k, v, err := x.PeekItem(ctx, false); err != nil || !k.Equal(kv.TextKey("x")) || !v.Equal(kv.Int(0)) {
		t.Fatalf("PeekItem first = %v %v %v", k, v, err)
	}
	// python: update a, b, c; popitem() -> c; popitem(last=False) -> a; popitem() -> b
	if err := x.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	for i, l := range []string{"a", "b", "c"} {
		if err := x.Set(ctx, kv.TextKey(l), kv.Int(int64(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		last bool
		key  string
		val  int64
	}{{true, "c", 3}, {false, "a", 1}, {true, "b", 2}} {
		k, v, err := x.PopItem(ctx, step.last)
		if err != nil || !k.Equal(kv.TextKey(step.key)) || !v.Equal(kv.Int(step.val)) {
			t.Fatalf("PopItem(%v) = %v %v %v, want %s %d", step.last, k, v, err, step.key, step.val)
		}
	}
	if _, _, err := x.PopItem(ctx, false); !errors.Is(err, kv.ErrEmpty) {
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
		key    kv.Key
	}{
		{"apples", "", 0, kv.IntKey(500000000000000)},
		{"beans", "", Back, kv.IntKey(500000000000001)},
		{"cherries", "", Front, kv.IntKey(499999999999999)},
		{"dates", "fruit", 0, kv.TextKey("fruit-500000000000000")},
	}
	for _, s := range steps {
		k, err := x.Push(ctx, kv.Text(s.v), s.prefix, s.side)
		if err != nil || !k.Equal(s.key) {
			t.Fatalf("Push(%s) = %v %v, want %v", s.v, k, err, s.key)
		}
	}
	if v, ok, _ := x.Get(ctx, kv.IntKey(500000000000001)); !ok || !v.Equal(kv.Text("beans")) {
		t.Fatalf("index[500000000000001] = %v", v)
	}
	k, v, ok, err := x.Pull(ctx, "", 0)
	if err != nil || !ok || !k.Equal(kv.IntKey(499999999999999)) || !v.Equal(kv.Text("cherries")) {
		t.Fatalf("Pull = %v %v %v %v", k, v, ok, err)
	}
	k, v, ok, err = x.Pull(ctx, "", Back)
	if err != nil || !ok || !k.Equal(kv.IntKey(500000000000001)) || !v.Equal(kv.Text("beans")) {
		t.Fatalf("Pull back = %v %v %v %v", k, v, ok, err)
	}
	if _, _, ok, err := x.Pull(ctx, "veg", 0); ok || err != nil {
		t.Fatalf("Pull empty queue = %v %v", ok, err)
	}
	k, v, ok, err = x.Pull(ctx, "fruit", 0)
	if err != nil || !ok || !k.Equal(kv.TextKey("fruit-500000000000000")) || !v.Equal(kv.Text("dates")) {
		t.Fatalf("Pull fruit = %v %v %v %v", k, v, ok, err)
	}
	ixExpect(t, x, []kv.Key{kv.IntKey(500000000000000)}, []kv.Value{kv.Text("apples")})
}

func TestIndexTransactAndReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	x, err := OpenIndex(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	total, count := kv.TextKey("total"), kv.TextKey("count")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				// python: with mapping.transact(): mapping['total'] = mapping.get('total', 0) + 123.4 …
				err := x.Transact(ctx, func(tx *Tx) error {
					for _, pair := range []struct {
						k kv.Key
						d float64
					}{{total, 123.4}, {count, 1}} {
						cur := 0.0
						it, ok, err := tx.Get(pair.k, GetOptions{})
						if err != nil {
							return err
						}
						if ok {
							cur = it.Value.Float
						}
						if err := tx.Set(pair.k, kv.Float(cur+pair.d), kv.SetOptions{}); err != nil {
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
	ixExpect(t, y, []kv.Key{total, count}, []kv.Value{tot, c})

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
	c, err := Open(ctx, t.TempDir(), Options{Now: clk.Now, Settings: map[settings.Name]any{settings.NameEvictionPolicy: "none"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := NewDeque(c, 0)
	if err := d.Extend(ctx, dqInts(1, 2)); err != nil {
		t.Fatal(err)
	}
	// An item with an expiry written by someone else, in the middle.
	if _, err := c.Push(ctx, kv.Int(99), QueueOptions{}, kv.SetOptions{Expire: kv.ExpireAfter(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := d.Append(ctx, kv.Int(3)); err != nil {
		t.Fatal(err)
	}
	if v, err := d.At(ctx, 2); err != nil || !v.Equal(kv.Int(99)) {
		t.Fatalf("At(2) before expiry = %v %v", v, err)
	}
	clk.Advance(time.Hour)
	got, err := d.Slice(ctx)
	if err != nil || !slices.EqualFunc(got, dqInts(1, 2, 3), kv.Value.Equal) {
		t.Fatalf("Slice = %v %v", got, err)
	}
	if v, err := d.At(ctx, 2); err != nil || !v.Equal(kv.Int(3)) {
		t.Fatalf("At(2) after expiry = %v %v", v, err)
	}
	if n, _ := d.Count(ctx, kv.Int(99)); n != 0 {
		t.Fatal("Count saw an expired item")
	}
	if err := d.Reverse(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ = d.Slice(ctx)
	if !slices.EqualFunc(got, dqInts(3, 2, 1), kv.Value.Equal) {
		t.Fatalf("after Reverse = %v", got)
	}
	if n, _ := d.Len(ctx); n != 3 {
		t.Fatalf("Reverse kept the expired item: Len %d", n)
	}

	x := NewIndex(c)
	if err := x.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if err := x.Set(ctx, kv.TextKey("a"), kv.Int(1)); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, kv.TextKey("b"), kv.Int(2), kv.SetOptions{Expire: kv.ExpireAfter(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	var items []kv.Key
	for it, err := range x.Items(ctx, false) {
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, it.Key)
	}
	if !slices.EqualFunc(items, []kv.Key{kv.TextKey("a")}, kv.Key.Equal) {
		t.Fatalf("Items = %v", items)
	}
	if k, _, err := x.PopItem(ctx, true); err != nil || !k.Equal(kv.TextKey("a")) {
		t.Fatalf("PopItem skipped the expired item? %v %v", k, err)
	}
}
