package engine

import (
	"bytes"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// Deque is python-diskcache's Deque: a persistent double-ended queue stored
// in a Cache as queue items with integer keys (Cache.Push and Cache.Pull).
// Its order is the order of those keys, so python-diskcache's Deque on the
// same directory sees the same sequence. Items that expire (a deque never
// gives them an expiry, but another writer of the cache might) are skipped
// by reads and dropped by the operations that reorganise the deque.
//
// Every method is atomic: each runs in one transaction of the cache (python
// makes only the single-item ones atomic). It is safe for concurrent use.
type Deque struct {
	c      *Cache
	maxlen atomic.Int64
	owned  bool
}

// OpenDeque opens or creates the deque in dir, a cache with eviction
// policy none. maxlen bounds its length (0 or less means unbounded): once
// it is full, Append drops items from the front and AppendLeft from the
// back. maxlen is not stored on disk, as in python-diskcache.
func OpenDeque(ctx context.Context, dir string, maxlen int) (*Deque, error) {
	c, err := Open(ctx, dir, Options{Settings: map[settings.Name]any{settings.NameEvictionPolicy: string(settings.PolicyNone)}})
	if err != nil {
		return nil, err
	}
	d := NewDeque(c, maxlen)
	d.owned = true
	return d, nil
}

// NewDeque returns a deque kept in c, python-diskcache's Deque.fromcache.
// The caller keeps ownership of c: Close does not close it. See OpenDeque
// for maxlen.
func NewDeque(c *Cache, maxlen int) *Deque {
	d := &Deque{c: c}
	d.maxlen.Store(int64(max(maxlen, 0)))
	return d
}

// Cache returns the cache that holds the deque.
func (d *Deque) Cache() *Cache { return d.c }

// Directory returns the deque's directory.
func (d *Deque) Directory() string { return d.c.Directory() }

// Close closes the cache if OpenDeque opened it; otherwise it does nothing.
func (d *Deque) Close() error {
	if d.owned {
		return d.c.Close()
	}
	return nil
}

// Maxlen returns the maximum length, 0 when unbounded.
func (d *Deque) Maxlen() int { return int(d.maxlen.Load()) }

// SetMaxlen changes the maximum length (0 or less: unbounded) and drops
// items from the front until the deque fits.
func (d *Deque) SetMaxlen(ctx context.Context, maxlen int) error {
	d.maxlen.Store(int64(max(maxlen, 0)))
	return d.c.Transact(ctx, func(tx *Tx) error { return d.trim(tx, Front) })
}

// Transact runs fn in one transaction of the deque's cache (see
// Cache.Transact), python's Deque.transact.
func (d *Deque) Transact(ctx context.Context, fn func(tx *Tx) error) error {
	return d.c.Transact(ctx, fn)
}

// trim drops items from side while the deque is longer than maxlen.
func (d *Deque) trim(tx *Tx, side Side) error {
	limit := d.maxlen.Load()
	if limit <= 0 {
		return nil
	}
	for {
		n, err := tx.cn.queryInt(`SELECT value FROM Settings WHERE key = 'count'`)
		if err != nil || n <= limit {
			return err
		}
		it, ok, err := tx.Pull(QueueOptions{Side: side}, GetOptions{Stream: true})
		_ = it.Close()
		if err != nil || !ok {
			return err
		}
	}
}

func (d *Deque) appendTx(tx *Tx, v kv.Value, side Side) error {
	if _, err := tx.Push(v, QueueOptions{Side: side}, kv.SetOptions{}); err != nil {
		return err
	}
	if side == Back {
		return d.trim(tx, Front)
	}
	return d.trim(tx, Back)
}

// Append adds v at the back, dropping the front item when that makes the
// deque longer than its maxlen.
func (d *Deque) Append(ctx context.Context, v kv.Value) error {
	return d.c.Transact(ctx, func(tx *Tx) error { return d.appendTx(tx, v, Back) })
}

// AppendLeft adds v at the front, dropping the back item when that makes
// the deque longer than its maxlen.
func (d *Deque) AppendLeft(ctx context.Context, v kv.Value) error {
	return d.c.Transact(ctx, func(tx *Tx) error { return d.appendTx(tx, v, Front) })
}

// Extend appends every value at the back, in order, in one transaction.
func (d *Deque) Extend(ctx context.Context, values []kv.Value) error {
	return d.c.Transact(ctx, func(tx *Tx) error {
		for _, v := range values {
			if err := d.appendTx(tx, v, Back); err != nil {
				return err
			}
		}
		return nil
	})
}

// ExtendLeft adds every value at the front, in order (so they end up
// reversed), in one transaction.
func (d *Deque) ExtendLeft(ctx context.Context, values []kv.Value) error {
	return d.c.Transact(ctx, func(tx *Tx) error {
		for _, v := range values {
			if err := d.appendTx(tx, v, Front); err != nil {
				return err
			}
		}
		return nil
	})
}

func (d *Deque) take(ctx context.Context, side Side, remove bool) (kv.Value, error) {
	q := QueueOptions{Side: side}
	var it Item
	var ok bool
	var err error
	if remove {
		it, ok, err = d.c.Pull(ctx, q, GetOptions{})
	} else {
		it, ok, err = d.c.Peek(ctx, q, GetOptions{})
	}
	if err != nil {
		return kv.Value{}, err
	}
	if !ok {
		op := "pop"
		if !remove {
			op = "peek"
		}
		return kv.Value{}, fmt.Errorf("%w: %s from an empty deque", kv.ErrEmpty, op)
	}
	return it.Value, nil
}

// Pop removes and returns the back item; ErrEmpty when there is none.
func (d *Deque) Pop(ctx context.Context) (kv.Value, error) { return d.take(ctx, Back, true) }

// PopLeft removes and returns the front item; ErrEmpty when there is none.
func (d *Deque) PopLeft(ctx context.Context) (kv.Value, error) { return d.take(ctx, Front, true) }

// Peek returns the back item; ErrEmpty when there is none.
func (d *Deque) Peek(ctx context.Context) (kv.Value, error) { return d.take(ctx, Back, false) }

// PeekLeft returns the front item; ErrEmpty when there is none.
func (d *Deque) PeekLeft(ctx context.Context) (kv.Value, error) { return d.take(ctx, Front, false) }

// locate returns the key of the live item at index i (negative counts from
// the back, -1 being the last).
func (d *Deque) locate(tx *Tx, i int) (kv.Key, error) {
	q := `SELECT key, raw FROM Cache WHERE expire_time IS NULL OR expire_time > ? ORDER BY key ASC, raw ASC LIMIT 1 OFFSET ?`
	off := int64(i)
	if i < 0 {
		q = `SELECT key, raw FROM Cache WHERE expire_time IS NULL OR expire_time > ? ORDER BY key DESC, raw DESC LIMIT 1 OFFSET ?`
		off = -(off + 1)
	}
	row, ok, err := tx.cn.queryRow(q, 2, tx.now(), off)
	if err != nil {
		return kv.Key{}, err
	}
	if !ok {
		return kv.Key{}, fmt.Errorf("%w: %d", kv.ErrIndexOutOfRange, i)
	}
	return keyFromDB(row[0], toInt(row[1])), nil
}

// At returns the item at index i; negative indexes count from the back.
// An index outside the deque fails with ErrIndexOutOfRange.
func (d *Deque) At(ctx context.Context, i int) (kv.Value, error) {
	var v kv.Value
	err := d.c.Transact(ctx, func(tx *Tx) error {
		key, err := d.locate(tx, i)
		if err != nil {
			return err
		}
		it, ok, err := tx.Get(key, GetOptions{})
		if err != nil {
			return err
		}
		if !ok { // its value file is gone
			return fmt.Errorf("%w: %d", kv.ErrIndexOutOfRange, i)
		}
		v = it.Value
		return nil
	})
	return v, err
}

// SetAt replaces the item at index i (see At).
func (d *Deque) SetAt(ctx context.Context, i int, v kv.Value) error {
	return d.c.Transact(ctx, func(tx *Tx) error {
		key, err := d.locate(tx, i)
		if err != nil {
			return err
		}
		return tx.Set(key, v, kv.SetOptions{})
	})
}

// DeleteAt removes the item at index i (see At).
func (d *Deque) DeleteAt(ctx context.Context, i int) error {
	return d.c.Transact(ctx, func(tx *Tx) error {
		key, err := d.locate(tx, i)
		if err != nil {
			return err
		}
		_, err = tx.Delete(key)
		return err
	})
}

// dequeScan* page through the rows in key order. The next page's bound is
// a row value, which SQLite finds in the (key, raw) index; python-diskcache's
// "key = ? AND raw > ? OR key > ?" walks the index from its start for every
// page, quadratic in the deque's length.
const (
	dequeScanFirst = `SELECT key, raw, expire_time, mode, filename, value, size FROM Cache ORDER BY key ASC, raw ASC LIMIT 100`
	dequeScanNext  = `SELECT key, raw, expire_time, mode, filename, value, size FROM Cache WHERE (key, raw) > (?, ?) ORDER BY key ASC, raw ASC LIMIT 100`
)

// scanEqual calls fn with the key of every live item equal to v, in order,
// until fn returns false. query runs one page query.
func (d *Deque) scanEqual(now float64, v kv.Value, query func(q string, args ...any) ([][]driver.Value, error), fn func(kv.Key) bool) error {
	rows, err := query(dequeScanFirst)
	for {
		if err != nil {
			return err
		}
		for _, r := range rows {
			if exp, has := toFloat(r[2]); has && exp <= now {
				continue
			}
			eq, err := d.c.rowEquals(r[3], r[4], r[5], r[6], v)
			if err != nil {
				return err
			}
			if eq && !fn(keyFromDB(r[0], toInt(r[1]))) {
				return nil
			}
		}
		if len(rows) < 100 {
			return nil
		}
		last := rows[len(rows)-1]
		rows, err = query(dequeScanNext, last[0], last[1])
	}
}

// rowEquals compares a stored value with v as Python's == would (see
// pyEqual), reading a value file only when its type and size match.
func (c *Cache) rowEquals(mode, filename, value, size driver.Value, v kv.Value) (bool, error) {
	m := toInt(mode)
	if name, ok := filename.(string); ok && name != "" {
		if typeOfMode(m) != v.Type || toInt(size) != int64(len(v.Data)) {
			return false, nil
		}
		data, err := os.ReadFile(filepath.Join(c.dir, filepath.FromSlash(name)))
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil // removed since: not an item any more
		}
		if err != nil {
			return false, fmt.Errorf("engine: read value file: %w", err)
		}
		return bytes.Equal(data, v.Data), nil
	}
	got, err := valueFromDB(m, value)
	if err != nil {
		return false, err
	}
	return pyEqual(got, v), nil
}

// pyEqual is Python's == on values: ints and floats compare as numbers (1
// == 1.0, NaN equals nothing), everything else by type and content
// (pickles by their bytes).
func pyEqual(a, b kv.Value) bool {
	an := a.Type == kv.ValueInt || a.Type == kv.ValueFloat
	bn := b.Type == kv.ValueInt || b.Type == kv.ValueFloat
	switch {
	case an && bn:
		switch {
		case a.Type == kv.ValueInt && b.Type == kv.ValueInt:
			return a.Int == b.Int
		case a.Type == kv.ValueFloat && b.Type == kv.ValueFloat:
			return a.Float == b.Float
		case a.Type == kv.ValueInt:
			return intEqualsFloat(a.Int, b.Float)
		default:
			return intEqualsFloat(b.Int, a.Float)
		}
	case an || bn:
		return false
	}
	return a.Type == b.Type && bytes.Equal(a.Data, b.Data)
}

func intEqualsFloat(i int64, f float64) bool {
	if f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return false
	}
	return int64(f) == i
}

// Remove removes the first item equal to v (Python equality, see Count);
// it fails with an error wrapping ErrNotFound when there is none.
func (d *Deque) Remove(ctx context.Context, v kv.Value) error {
	return d.c.Transact(ctx, func(tx *Tx) error {
		var key kv.Key
		found := false
		query := func(q string, args ...any) ([][]driver.Value, error) { return tx.cn.queryRows(q, 7, args...) }
		if err := d.scanEqual(tx.now(), v, query, func(k kv.Key) bool { key, found = k, true; return false }); err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("%w: deque.remove(value): value not in deque", kv.ErrNotFound)
		}
		_, err := tx.Delete(key)
		return err
	})
}

// Count returns the number of items equal to v. Equality is Python's:
// Int(1) equals Float(1.0); text, bytes and pickles compare by type and
// content. Like python's, it is not one transaction: it reads page by page.
func (d *Deque) Count(ctx context.Context, v kv.Value) (int64, error) {
	var n int64
	query := func(q string, args ...any) ([][]driver.Value, error) { return d.c.queryPage(ctx, q, 7, args...) }
	err := d.scanEqual(d.c.nowSeconds(), v, query, func(kv.Key) bool { n++; return true })
	return n, err
}

// dropDead deletes the items that are no longer live, as python's Deque
// does when it copies the live items to reorganise them.
func dropDead(tx *Tx) error {
	n, err := tx.deleteWhere(`SELECT rowid, filename FROM Cache WHERE expire_time IS NOT NULL AND expire_time <= ?`, tx.now())
	tx.c.counts.expired.Add(n)
	return err
}

// Reverse reverses the deque in place, in one transaction. Items keep their
// expiry and tag; python's Deque.reverse rewrites them without.
func (d *Deque) Reverse(ctx context.Context) error {
	return d.c.Transact(ctx, func(tx *Tx) error {
		if err := dropDead(tx); err != nil {
			return err
		}
		rows, err := tx.cn.queryRows(`SELECT rowid, key, raw FROM Cache ORDER BY key ASC, raw ASC`, 3)
		if err != nil {
			return err
		}
		// Swap the keys of the i-th and the i-th last rows; raw = -1 parks a
		// row so that the unique (key, raw) index never sees a duplicate.
		for i, j := 0, len(rows)-1; i < j; i, j = i+1, j-1 {
			a, b := rows[i], rows[j]
			if _, err := tx.cn.exec(`UPDATE Cache SET raw = -1 WHERE rowid = ?`, a[0]); err != nil {
				return err
			}
			if _, err := tx.cn.exec(`UPDATE Cache SET key = ?, raw = ? WHERE rowid = ?`, a[1], a[2], b[0]); err != nil {
				return err
			}
			if _, err := tx.cn.exec(`UPDATE Cache SET key = ?, raw = ? WHERE rowid = ?`, b[1], b[2], a[0]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Rotate rotates the deque steps to the right (the back items move to the
// front), or to the left when steps is negative, in one transaction. Items
// keep their value files, expiry and tag.
func (d *Deque) Rotate(ctx context.Context, steps int) error {
	return d.c.Transact(ctx, func(tx *Tx) error {
		if err := dropDead(tx); err != nil {
			return err
		}
		const where = `0 < key AND key < ? AND raw = 1`
		n, err := tx.cn.queryInt(`SELECT COUNT(*) FROM Cache WHERE `+where, int64(queueMax))
		if err != nil || n == 0 {
			return err
		}
		k := int64(steps) % n
		if k < 0 {
			k += n
		}
		if k == 0 {
			return nil
		}
		right := true
		if k > n/2 {
			right, k = false, n-k
		}
		// Moving the k back items before the front is rotating right by k;
		// moving the k front items after the back is rotating left by k.
		end := `SELECT rowid FROM Cache WHERE ` + where + ` ORDER BY key DESC LIMIT ?`
		other := `SELECT key FROM Cache WHERE ` + where + ` ORDER BY key ASC LIMIT 1`
		if !right {
			end = `SELECT rowid FROM Cache WHERE ` + where + ` ORDER BY key ASC LIMIT ?`
			other = `SELECT key FROM Cache WHERE ` + where + ` ORDER BY key DESC LIMIT 1`
		}
		moving, err := tx.cn.queryRows(end, 1, int64(queueMax), k)
		if err != nil {
			return err
		}
		boundary, err := tx.cn.queryInt(other, int64(queueMax))
		if err != nil {
			return err
		}
		for i, r := range moving {
			// Right: the i-th from the back goes to boundary-1-i, keeping
			// the order. Left: the i-th from the front goes to boundary+1+i.
			key := boundary + 1 + int64(i)
			if right {
				key = boundary - 1 - int64(i)
			}
			if key <= 0 || key >= queueMax {
				return fmt.Errorf("%w: deque keys exhausted at one end", kv.ErrInvalidKey)
			}
			if _, err := tx.cn.exec(`UPDATE Cache SET key = ? WHERE rowid = ?`, key, r[0]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Clear removes every item.
func (d *Deque) Clear(ctx context.Context) error {
	_, err := d.c.Clear(ctx)
	return err
}

// Len returns the number of items (python's len: expired items included).
func (d *Deque) Len(ctx context.Context) (int64, error) { return d.c.Len(ctx) }

// Values yields the items front to back, or back to front with reverse,
// as python's iter and reversed do: key by key, skipping items removed or
// expired meanwhile.
func (d *Deque) Values(ctx context.Context, reverse bool) iter.Seq2[kv.Value, error] {
	return func(yield func(kv.Value, error) bool) {
		for key, err := range d.c.SortedKeys(ctx, reverse) {
			if err != nil {
				yield(kv.Value{}, err)
				return
			}
			it, ok, err := d.c.Get(ctx, key, GetOptions{})
			if err != nil {
				yield(kv.Value{}, err)
				return
			}
			if ok && !yield(it.Value, nil) {
				return
			}
		}
	}
}

// Slice returns the items front to back.
func (d *Deque) Slice(ctx context.Context) ([]kv.Value, error) {
	var out []kv.Value
	for v, err := range d.Values(ctx, false) {
		if err != nil {
			return out, err
		}
		out = append(out, v)
	}
	return out, nil
}

// DequeValue is one value for Deque.PushAll: Value, or, when Body is set, a
// value of type Value.Type streamed from Body into a value file.
type DequeValue struct {
	Value kv.Value
	Body  io.Reader
}

// PushAll adds the values that values yields at side (Back: python's
// append and extend; Front: appendleft and extendleft, so that they end up
// reversed), then drops items from the other end until at most maxlen
// remain, all in one transaction, and returns the length after. maxlen 0
// leaves the deque empty, as python's Deque(maxlen=0) does; a negative
// maxlen means the deque's own Maxlen (unbounded when that is 0). This is
// python's append with a maxlen given per call: python never stores maxlen.
//
// Each value is stored (large and streamed ones into value files) as it is
// yielded, before the transaction starts, so a slow producer does not hold
// the write lock; a Body must be read through before the next value is
// yielded, which PushAll does. When values yields an error, or anything
// else fails, nothing is added.
func (d *Deque) PushAll(ctx context.Context, side Side, maxlen int, values iter.Seq2[DequeValue, error]) (int64, error) {
	side = side.or(Back)
	var staged []stored
	defer func() {
		for _, st := range staged {
			if name, ok := st.filename.(string); ok {
				d.c.unpend(name)
			}
		}
	}()
	discard := func() {
		for _, st := range staged {
			d.c.discardStored(st)
		}
	}
	for dv, err := range values {
		if err != nil {
			discard()
			return 0, err
		}
		st, err := d.c.prepare(dv.Value, kv.SetOptions{Body: dv.Body})
		if err != nil {
			discard()
			return 0, err
		}
		staged = append(staged, st)
	}
	limit := int64(maxlen)
	if maxlen < 0 {
		if limit = d.maxlen.Load(); limit == 0 {
			limit = -1
		}
	}
	other := Front
	if side == Front {
		other = Back
	}
	var n int64
	err := d.c.write(ctx, "deque push", func(tx *Tx) error {
		for _, st := range staged {
			if _, err := tx.pushStored(st, QueueOptions{Side: side}, kv.SetOptions{}); err != nil {
				return err
			}
		}
		var err error
		n, err = trimTo(tx, other, limit)
		return err
	})
	if err != nil {
		discard()
		return 0, err
	}
	return n, nil
}

// trimTo drops items from side while the deque holds more than limit items
// (a negative limit: no bound) and returns the count after.
func trimTo(tx *Tx, side Side, limit int64) (int64, error) {
	for {
		n, err := tx.cn.queryInt(`SELECT value FROM Settings WHERE key = 'count'`)
		if err != nil || limit < 0 || n <= limit {
			return n, err
		}
		it, ok, err := tx.Pull(QueueOptions{Side: side}, GetOptions{Stream: true})
		_ = it.Close()
		if err != nil {
			return n, err
		}
		if !ok { // only expired or foreign items are left
			return tx.cn.queryInt(`SELECT value FROM Settings WHERE key = 'count'`)
		}
	}
}

// ItemAt returns the item at index i (see At), its Key being the deque's
// internal key; with opts.Stream a file-backed value is left in its file
// (Item.Body; close it).
func (d *Deque) ItemAt(ctx context.Context, i int, opts GetOptions) (Item, error) {
	var it Item
	err := d.c.Transact(ctx, func(tx *Tx) error {
		key, err := d.locate(tx, i)
		if err != nil {
			return err
		}
		got, ok, err := tx.Get(key, opts)
		if err != nil {
			return err
		}
		if !ok { // its value file is gone
			return fmt.Errorf("%w: %d", kv.ErrIndexOutOfRange, i)
		}
		it = got
		return nil
	})
	return it, err
}

// SetAtWith is SetAt with SetOptions: opts.Body streams the value into a
// value file before the transaction starts (see SetOptions).
func (d *Deque) SetAtWith(ctx context.Context, i int, v kv.Value, opts kv.SetOptions) error {
	st, err := d.c.prepare(v, opts)
	if err != nil {
		return err
	}
	return d.c.writeStored(ctx, "deque setitem", st, func(tx *Tx) error {
		key, err := d.locate(tx, i)
		if err != nil {
			return err
		}
		return tx.setStored(key, st, opts)
	})
}

// dequeScanQueries are Scan's first page (now, limit, offset) and the next
// (now, the last key and raw, limit).
func dequeScanQueries(reverse bool) (first, next string) {
	dir, cmp := "ASC", ">"
	if reverse {
		dir, cmp = "DESC", "<"
	}
	const cols = `SELECT key, raw FROM Cache WHERE (expire_time IS NULL OR expire_time > ?)`
	first = cols + ` ORDER BY key ` + dir + `, raw ` + dir + ` LIMIT ? OFFSET ?`
	next = cols + ` AND (key, raw) ` + cmp + ` (?, ?) ORDER BY key ` + dir + `, raw ` + dir + ` LIMIT ?`
	return first, next
}

// Scan yields the live items from position offset on (0 is the front),
// front to back, or back to front with reverse (offset then counts from
// the back), with Body open on file-backed values (the caller closes it).
// Like python's iteration it reads page by page, so items added or removed
// meanwhile may shift positions; an item removed before it is reached is
// skipped.
func (d *Deque) Scan(ctx context.Context, reverse bool, offset int64) iter.Seq2[Item, error] {
	return func(yield func(Item, error) bool) {
		first, next := dequeScanQueries(reverse)
		rows, err := d.c.queryPage(ctx, first, 2, d.c.nowSeconds(), int64(iterPage), max(offset, 0))
		for {
			if err != nil {
				yield(Item{}, err)
				return
			}
			for _, r := range rows {
				it, ok, err := d.c.Get(ctx, keyFromDB(r[0], toInt(r[1])), GetOptions{Stream: true})
				if err != nil {
					yield(Item{}, err)
					return
				}
				if ok && !yield(it, nil) {
					return
				}
			}
			if len(rows) < iterPage {
				return
			}
			last := rows[len(rows)-1]
			rows, err = d.c.queryPage(ctx, next, 2, d.c.nowSeconds(), last[0], last[1], int64(iterPage))
		}
	}
}
