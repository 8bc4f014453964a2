package engine

import (
	"context"
	"fmt"
	"iter"
)

// Index is python-diskcache's Index: a persistent mapping that iterates in
// insertion order, kept in a Cache with eviction policy none. Overwriting a
// key keeps its place; deleting and adding it again moves it to the end.
// It is safe for concurrent use.
type Index struct {
	c     *Cache
	owned bool
}

// OpenIndex opens or creates the index in dir, a cache with eviction
// policy none.
func OpenIndex(ctx context.Context, dir string) (*Index, error) {
	c, err := Open(ctx, dir, Options{Settings: map[string]any{SettingEvictionPolicy: string(PolicyNone)}})
	if err != nil {
		return nil, err
	}
	return &Index{c: c, owned: true}, nil
}

// NewIndex returns an index kept in c, python-diskcache's Index.fromcache.
// The caller keeps ownership of c: Close does not close it.
func NewIndex(c *Cache) *Index { return &Index{c: c} }

// Cache returns the cache that holds the index, for Memoize and for every
// Cache operation python-diskcache's Index does not have.
func (x *Index) Cache() *Cache { return x.c }

// Directory returns the index's directory.
func (x *Index) Directory() string { return x.c.Directory() }

// Close closes the cache if OpenIndex opened it; otherwise it does nothing.
func (x *Index) Close() error {
	if x.owned {
		return x.c.Close()
	}
	return nil
}

// Transact runs fn in one transaction of the index's cache (see
// Cache.Transact), python's Index.transact.
func (x *Index) Transact(ctx context.Context, fn func(tx *Tx) error) error {
	return x.c.Transact(ctx, fn)
}

// Get returns the value under key; ok is false when there is none.
func (x *Index) Get(ctx context.Context, key Key) (Value, bool, error) {
	it, ok, err := x.c.Get(ctx, key, GetOptions{})
	return it.Value, ok, err
}

// Set stores value under key: at the end of the iteration order for a new
// key, in its place for an existing one.
func (x *Index) Set(ctx context.Context, key Key, value Value) error {
	return x.c.Set(ctx, key, value, SetOptions{})
}

// Delete removes key and reports whether it was there (python raises
// KeyError when it was not).
func (x *Index) Delete(ctx context.Context, key Key) (bool, error) {
	return x.c.Delete(ctx, key)
}

// Contains reports whether key is in the index.
func (x *Index) Contains(ctx context.Context, key Key) (bool, error) {
	return x.c.Contains(ctx, key)
}

// SetDefault returns the value under key, first storing def there when the
// key is missing, atomically.
func (x *Index) SetDefault(ctx context.Context, key Key, def Value) (Value, error) {
	var out Value
	err := x.c.Transact(ctx, func(tx *Tx) error {
		it, ok, err := tx.Get(key, GetOptions{})
		if err != nil {
			return err
		}
		if ok {
			out = it.Value
			return nil
		}
		if _, err := tx.Add(key, def, SetOptions{}); err != nil {
			return err
		}
		out = def
		return nil
	})
	return out, err
}

// Pop removes key and returns its value; ok is false when it was missing.
func (x *Index) Pop(ctx context.Context, key Key) (Value, bool, error) {
	it, ok, err := x.c.Pop(ctx, key, GetOptions{})
	return it.Value, ok, err
}

// PeekItem returns the last item in iteration order (the first when last
// is false), or ErrEmpty.
func (x *Index) PeekItem(ctx context.Context, last bool) (Key, Value, error) {
	it, err := x.c.PeekItem(ctx, last, GetOptions{})
	if err != nil {
		return Key{}, Value{}, err
	}
	return it.Key, it.Value, nil
}

// PopItem removes and returns the last item in iteration order (LIFO), or
// the first when last is false (FIFO), atomically; ErrEmpty when the index
// is empty.
func (x *Index) PopItem(ctx context.Context, last bool) (Key, Value, error) {
	var it Item
	err := x.c.Transact(ctx, func(tx *Tx) error {
		var ok bool
		var err error
		if it, ok, err = tx.PeekItem(last, GetOptions{}); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: dictionary is empty", ErrEmpty)
		}
		_, err = tx.Delete(it.Key)
		return err
	})
	if err != nil {
		return Key{}, Value{}, err
	}
	return it.Key, it.Value, nil
}

// Push adds value to a queue inside the index, python's Index.push:
// integer keys when prefix is empty, else text keys "<prefix>-%015d"; side
// is Back (the default) or Front. It returns the new key.
func (x *Index) Push(ctx context.Context, value Value, prefix string, side Side) (Key, error) {
	return x.c.Push(ctx, value, QueueOptions{Prefix: prefix, Side: side}, SetOptions{})
}

// Pull removes and returns the item at one end (Front by default) of the
// queue selected by prefix, python's Index.pull; ok is false when it is
// empty.
func (x *Index) Pull(ctx context.Context, prefix string, side Side) (Key, Value, bool, error) {
	it, ok, err := x.c.Pull(ctx, QueueOptions{Prefix: prefix, Side: side}, GetOptions{})
	return it.Key, it.Value, ok, err
}

// Len returns the number of items.
func (x *Index) Len(ctx context.Context) (int64, error) { return x.c.Len(ctx) }

// Clear removes every item.
func (x *Index) Clear(ctx context.Context) error {
	_, err := x.c.Clear(ctx)
	return err
}

// Keys yields the keys in insertion order, or the reverse.
func (x *Index) Keys(ctx context.Context, reverse bool) iter.Seq2[Key, error] {
	return x.c.Keys(ctx, reverse)
}

// Items yields the items (Key and Value set) in insertion order, or the
// reverse, skipping keys removed meanwhile.
func (x *Index) Items(ctx context.Context, reverse bool) iter.Seq2[Item, error] {
	return func(yield func(Item, error) bool) {
		for key, err := range x.c.Keys(ctx, reverse) {
			if err != nil {
				yield(Item{}, err)
				return
			}
			it, ok, err := x.c.Get(ctx, key, GetOptions{})
			if err != nil {
				yield(Item{}, err)
				return
			}
			if ok && !yield(it, nil) {
				return
			}
		}
	}
}

// Values yields the values in insertion order, or the reverse.
func (x *Index) Values(ctx context.Context, reverse bool) iter.Seq2[Value, error] {
	return func(yield func(Value, error) bool) {
		for it, err := range x.Items(ctx, reverse) {
			if !yield(it.Value, err) || err != nil {
				return
			}
		}
	}
}
