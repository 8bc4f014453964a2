package engine

import (
	"context"
	"database/sql/driver"
	"fmt"
	"iter"
	"math"
	"strings"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

const iterPage = 100

// Keys yields the keys in insertion (rowid) order, or the reverse, bounded
// by the largest rowid when iteration starts: items added later are not
// seen. Expired items are included, as in python-diskcache.
func (c *Cache) Keys(ctx context.Context, reverse bool) iter.Seq2[kv.Key, error] {
	return func(yield func(kv.Key, error) bool) {
		maxRowid, err := c.queryValue(ctx, `SELECT MAX(rowid) FROM Cache`)
		if err != nil {
			yield(kv.Key{}, err)
			return
		}
		if maxRowid == nil {
			return
		}
		bound := toInt(maxRowid) + 1
		q := `SELECT rowid, key, raw FROM Cache WHERE ? < rowid AND rowid < ? ORDER BY rowid ASC LIMIT ?`
		lo, hi := int64(0), bound
		if reverse {
			q = `SELECT rowid, key, raw FROM Cache WHERE ? < rowid AND rowid < ? ORDER BY rowid DESC LIMIT ?`
		}
		for {
			rows, err := c.queryPage(ctx, q, 3, lo, hi, int64(iterPage))
			if err != nil {
				yield(kv.Key{}, err)
				return
			}
			for _, r := range rows {
				if !yield(keyFromDB(r[1], toInt(r[2])), nil) {
					return
				}
			}
			if len(rows) < iterPage {
				return
			}
			last := toInt(rows[len(rows)-1][0])
			if reverse {
				hi = last
			} else {
				lo = last
			}
		}
	}
}

// sortedKeysQueries are SortedKeys' first page and the next (the last key
// and raw, limit): a range of the (key, raw) index, see dequeScanNext.
func sortedKeysQueries(reverse bool) (first, next string) {
	if reverse {
		return `SELECT key, raw FROM Cache ORDER BY key DESC, raw DESC LIMIT 1`,
			`SELECT key, raw FROM Cache WHERE (key, raw) < (?, ?) ORDER BY key DESC, raw DESC LIMIT ?`
	}
	return `SELECT key, raw FROM Cache ORDER BY key ASC, raw ASC LIMIT 1`,
		`SELECT key, raw FROM Cache WHERE (key, raw) > (?, ?) ORDER BY key ASC, raw ASC LIMIT ?`
}

// SortedKeys yields the keys in SQLite's sort order of (key, raw):
// numbers, then text, then blobs; python-diskcache's iterkeys.
func (c *Cache) SortedKeys(ctx context.Context, reverse bool) iter.Seq2[kv.Key, error] {
	return func(yield func(kv.Key, error) bool) {
		first, next := sortedKeysQueries(reverse)
		rows, err := c.queryPage(ctx, first, 2)
		if err != nil {
			yield(kv.Key{}, err)
			return
		}
		for len(rows) > 0 {
			for _, r := range rows {
				if !yield(keyFromDB(r[0], toInt(r[1])), nil) {
					return
				}
			}
			last := rows[len(rows)-1]
			rows, err = c.queryPage(ctx, next, 2, last[0], last[1], int64(iterPage))
			if err != nil {
				yield(kv.Key{}, err)
				return
			}
		}
	}
}

func (c *Cache) queryPage(ctx context.Context, q string, ncol int, args ...any) ([][]driver.Value, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cn, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.release(cn)
	rows, err := cn.queryRows(q, ncol, args...)
	if err != nil {
		return nil, fmt.Errorf("engine: iterate: %w", err)
	}
	return rows, nil
}

func (c *Cache) queryValue(ctx context.Context, q string, args ...any) (driver.Value, error) {
	rows, err := c.queryPage(ctx, q, 1, args...)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	return rows[0][0], nil
}

// KeyPage is a page of keys: the keys, the position after the last row
// looked at, whether rows follow, and how many rows it looked at.
type KeyPage struct {
	Keys   []kv.Key
	Next   PagePosition
	More   bool
	Looked int
}

// KeyPage returns the keys of up to limit rows in insertion order (the
// reverse with reverse) after at, expired ones included, with the position
// after the last row looked at and whether rows follow: Keys in pages, for
// a client that iterates over several requests. With match (an SQLite GLOB
// pattern) only text keys that match are returned, from the same limit of
// rows, so a page may hold fewer keys, or none, and still not be the last
// (as Redis's SCAN). A forward run is bounded by the largest rowid when it
// started (at.Bound 0: this page sets it), so keys added meanwhile are not
// yielded, as python-diskcache's iteration.
func (c *Cache) KeyPage(ctx context.Context, at PagePosition, reverse bool, limit int, match string) (KeyPage, error) {
	if limit < 1 {
		return KeyPage{}, fmt.Errorf("%w: page limit must be at least 1, got %d", kv.ErrInvalidValue, limit)
	}
	// The match column is 1 for every row without a pattern.
	q := `SELECT rowid, key, raw, (? = '' OR (raw = 1 AND typeof(key) = 'text' AND key GLOB ?)) FROM Cache WHERE rowid > ? AND rowid <= ? ORDER BY rowid ASC LIMIT ?`
	lo, hi := at.After, at.Bound
	if reverse {
		// Going down from where the run started, it never meets a key
		// added later.
		q = `SELECT rowid, key, raw, (? = '' OR (raw = 1 AND typeof(key) = 'text' AND key GLOB ?)) FROM Cache WHERE rowid >= ? AND rowid < ? ORDER BY rowid DESC LIMIT ?`
		lo, hi = 0, at.After
		if hi <= 0 {
			hi = math.MaxInt64
		}
	} else if hi <= 0 {
		top, err := c.queryValue(ctx, `SELECT MAX(rowid) FROM Cache`)
		if err != nil {
			return KeyPage{}, err
		}
		hi = toInt(top)
	}
	rows, err := c.queryPage(ctx, q, 4, match, match, lo, hi, int64(limit)+1)
	if err != nil {
		return KeyPage{}, err
	}
	more := len(rows) > limit
	rows = rows[:min(len(rows), limit)]
	keys := make([]kv.Key, 0, len(rows))
	for _, r := range rows {
		if toInt(r[3]) != 0 {
			keys = append(keys, keyFromDB(r[1], toInt(r[2])))
		}
	}
	next := PagePosition{After: at.After, Bound: hi}
	if reverse {
		next.Bound = 0
	}
	if len(rows) > 0 {
		next.After = toInt(rows[len(rows)-1][0])
	}
	return KeyPage{Keys: keys, Next: next, More: more, Looked: len(rows)}, nil
}

// SortedKeyPage returns up to limit keys in SQLite's sort order of (key,
// raw) (python-diskcache's iterkeys; the reverse with reverse) that come
// after the key after (nil: from the start), and whether keys follow.
func (c *Cache) SortedKeyPage(ctx context.Context, after *kv.Key, reverse bool, limit int) ([]kv.Key, bool, error) {
	if limit < 1 {
		return nil, false, fmt.Errorf("%w: page limit must be at least 1, got %d", kv.ErrInvalidValue, limit)
	}
	first, next := sortedKeysQueries(reverse)
	var rows [][]driver.Value
	var err error
	if after == nil {
		first = strings.Replace(first, "LIMIT 1", "LIMIT ?", 1)
		rows, err = c.queryPage(ctx, first, 2, int64(limit)+1)
	} else {
		v, raw := dbKey(*after)
		rows, err = c.queryPage(ctx, next, 2, v, raw, int64(limit)+1)
	}
	if err != nil {
		return nil, false, err
	}
	more := len(rows) > limit
	rows = rows[:min(len(rows), limit)]
	keys := make([]kv.Key, len(rows))
	for i, r := range rows {
		keys[i] = keyFromDB(r[0], toInt(r[1]))
	}
	return keys, more, nil
}
