package engine

import (
	"context"
	"fmt"
	"iter"
	"math"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
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
	c, err := Open(ctx, dir, Options{Settings: map[settings.Name]any{settings.NameEvictionPolicy: string(settings.PolicyNone)}})
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
func (x *Index) Get(ctx context.Context, key kv.Key) (kv.Value, bool, error) {
	it, ok, err := x.c.Get(ctx, key, GetOptions{})
	return it.Value, ok, err
}

// Set stores value under key: at the end of the iteration order for a new
// key, in its place for an existing one.
func (x *Index) Set(ctx context.Context, key kv.Key, value kv.Value) error {
	return x.c.Set(ctx, key, value, kv.SetOptions{})
}

// Delete removes key and reports whether it was there (python raises
// KeyError when it was not).
func (x *Index) Delete(ctx context.Context, key kv.Key) (bool, error) {
	return x.c.Delete(ctx, key)
}

// Contains reports whether key is in the index.
func (x *Index) Contains(ctx context.Context, key kv.Key) (bool, error) {
	return x.c.Contains(ctx, key)
}

// SetDefault returns the value under key, first storing def there when the
// key is missing, atomically.
func (x *Index) SetDefault(ctx context.Context, key kv.Key, def kv.Value) (kv.Value, error) {
	var out kv.Value
	err := x.c.Transact(ctx, func(tx *Tx) error {
		it, ok, err := tx.Get(key, GetOptions{})
		if err != nil {
			return err
		}
		if ok {
			out = it.Value
			return nil
		}
		if _, err := tx.Add(key, def, kv.SetOptions{}); err != nil {
			return err
		}
		out = def
		return nil
	})
	return out, err
}

// Pop removes key and returns its value; ok is false when it was missing.
func (x *Index) Pop(ctx context.Context, key kv.Key) (kv.Value, bool, error) {
	it, ok, err := x.c.Pop(ctx, key, GetOptions{})
	return it.Value, ok, err
}

// PeekItem returns the last item in iteration order (the first when last
// is false), or ErrEmpty.
func (x *Index) PeekItem(ctx context.Context, last bool) (kv.Key, kv.Value, error) {
	it, err := x.c.PeekItem(ctx, last, GetOptions{})
	if err != nil {
		return kv.Key{}, kv.Value{}, err
	}
	return it.Key, it.Value, nil
}

// PopItem removes and returns the last item in iteration order (LIFO), or
// the first when last is false (FIFO), atomically; ErrEmpty when the index
// is empty.
func (x *Index) PopItem(ctx context.Context, last bool) (kv.Key, kv.Value, error) {
	var it Item
	err := x.c.Transact(ctx, func(tx *Tx) error {
		var ok bool
		var err error
		if it, ok, err = tx.PeekItem(last, GetOptions{}); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: dictionary is empty", kv.ErrEmpty)
		}
		_, err = tx.Delete(it.Key)
		return err
	})
	if err != nil {
		return kv.Key{}, kv.Value{}, err
	}
	return it.Key, it.Value, nil
}

// Push adds value to a queue inside the index, python's Index.push:
// integer keys when prefix is empty, else text keys "<prefix>-%015d"; side
// is Back (the default) or Front. It returns the new key.
func (x *Index) Push(ctx context.Context, value kv.Value, prefix string, side Side) (kv.Key, error) {
	return x.c.Push(ctx, value, QueueOptions{Prefix: prefix, Side: side}, kv.SetOptions{})
}

// Pull removes and returns the item at one end (Front by default) of the
// queue selected by prefix, python's Index.pull; ok is false when it is
// empty.
func (x *Index) Pull(ctx context.Context, prefix string, side Side) (kv.Key, kv.Value, bool, error) {
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
func (x *Index) Keys(ctx context.Context, reverse bool) iter.Seq2[kv.Key, error] {
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
func (x *Index) Values(ctx context.Context, reverse bool) iter.Seq2[kv.Value, error] {
	return func(yield func(kv.Value, error) bool) {
		for it, err := range x.Items(ctx, reverse) {
			if !yield(it.Value, err) || err != nil {
				return
			}
		}
	}
}

// IndexEntry is an item of an index page with its cursor: its place in
// insertion order (its rowid), after which a later page resumes.
type IndexEntry struct {
	Cursor int64
	Item
}

// PagePosition is where a run of index pages stands: After, the rowid of
// the last item yielded (0 before the first page), and, for a forward run,
// Bound, the highest rowid it yields: the end of the index when the run
// started (0: the first page sets it).
type PagePosition struct {
	After, Bound int64
}

// Page returns a page of up to limit live items in insertion order (the
// reverse with reverse) that come after at (the zero position: from the
// start), as an iterator, with the position after the page's last item
// and whether live items follow it. As python-diskcache's iteration, a
// run of pages yields the items that were there when it started, in
// insertion order: items added later come after every existing one, past
// the run's end, so concurrent writes cannot make it skip or repeat one (an
// item deleted and added again moves to the end, and is not seen again). An
// item overwritten meanwhile keeps its place and is yielded with its new
// value; one removed before the iterator reaches it is skipped.
//
// With values the entries carry their values, a file-backed one with Body
// open on its file (the caller closes it); without, only keys. Expired
// items are left out.
func (x *Index) Page(ctx context.Context, at PagePosition, reverse bool, limit int, values bool) (iter.Seq2[IndexEntry, error], PagePosition, bool, error) {
	if limit < 1 {
		return nil, at, false, fmt.Errorf("%w: page limit must be at least 1, got %d", kv.ErrInvalidValue, limit)
	}
	c := x.c
	dir, cmp := "ASC", ">"
	after, bound := at.After, at.Bound
	if reverse {
		// Going down from the end the run started at, it never meets
		// an item added later.
		dir, cmp = "DESC", "<"
		if after <= 0 {
			after = math.MaxInt64
		}
		bound = math.MaxInt64
	} else if bound <= 0 {
		top, err := c.queryValue(ctx, `SELECT MAX(rowid) FROM Cache`)
		if err != nil {
			return nil, at, false, err
		}
		bound = toInt(top)
	}
	live := `(expire_time IS NULL OR expire_time > ?)`
	rows, err := c.queryPage(ctx, `SELECT rowid FROM Cache WHERE rowid `+cmp+` ? AND rowid <= ? AND `+live+` ORDER BY rowid `+dir+` LIMIT 2 OFFSET ?`,
		1, after, bound, c.nowSeconds(), int64(limit-1))
	if err != nil {
		return nil, at, false, err
	}
	var last int64
	more := len(rows) == 2
	switch {
	case len(rows) > 0:
		last = toInt(rows[0][0])
	case reverse:
		last = 0 // fewer than limit items: the page runs to the start
	default: // fewer than limit items: the page runs to the run's end
		last = bound
	}
	lo, hi := after, last+1
	if reverse {
		lo, hi = last-1, after
	}
	next := PagePosition{After: last, Bound: bound}
	if reverse {
		next.Bound = 0
	}
	seq := func(yield func(IndexEntry, error) bool) {
		q := `SELECT rowid, key, raw FROM Cache WHERE ? < rowid AND rowid < ? AND ` + live + ` ORDER BY rowid ` + dir + ` LIMIT ?`
		lo, hi := lo, hi
		for {
			page, err := c.queryPage(ctx, q, 3, lo, hi, c.nowSeconds(), int64(iterPage))
			if err != nil {
				yield(IndexEntry{}, err)
				return
			}
			for _, r := range page {
				e := IndexEntry{Cursor: toInt(r[0]), Item: Item{Key: keyFromDB(r[1], toInt(r[2]))}}
				if values {
					it, ok, err := c.itemAtRowid(ctx, e.Cursor)
					if err != nil {
						yield(IndexEntry{}, err)
						return
					}
					if !ok {
						continue
					}
					e.Item = it
				}
				if !yield(e, nil) {
					if e.Body != nil {
						_ = e.Body.Close()
					}
					return
				}
			}
			if len(page) < iterPage {
				return
			}
			if end := toInt(page[len(page)-1][0]); reverse {
				hi = end
			} else {
				lo = end
			}
		}
	}
	return seq, next, more, nil
}

// itemAtRowid reads the live item in row rowid, its value file left open in
// Item.Body; ok is false when the row is gone or expired. A value file
// replaced between reading the row and opening it is looked up again.
func (c *Cache) itemAtRowid(ctx context.Context, rowid int64) (Item, bool, error) {
	for attempt := 0; attempt < 10; attempt++ {
		rows, err := c.queryPage(ctx, `SELECT key, raw, expire_time, tag, mode, filename, value, size FROM Cache WHERE rowid = ? AND (expire_time IS NULL OR expire_time > ?)`,
			8, rowid, c.nowSeconds())
		if err != nil || len(rows) == 0 {
			return Item{}, false, err
		}
		r := rows[0]
		it, f, err := c.itemFromRow(keyFromDB(r[0], toInt(r[1])), r[2], r[3], r[4], r[5], r[6], r[7])
		if err != nil {
			return Item{}, false, err
		}
		if f == nil && it.Value.Type == kv.ValueNone {
			continue // the file went with an overwrite or a removal: read the row again
		}
		return c.finishRead(it, f, true)
	}
	return Item{}, false, nil
}
