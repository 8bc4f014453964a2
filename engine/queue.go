package engine

import (
	"context"
	"database/sql/driver"
	"fmt"
	"strconv"
	"strings"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// Side is an end of a queue.
type Side uint8

// Queue ends. The zero Side means each call's default: Back for Push,
// Front for Pull and Peek, as in python-diskcache.
const (
	Back Side = iota + 1
	Front
)

func (s Side) or(def Side) Side {
	if s == 0 {
		return def
	}
	return s
}

// ParseSide maps "back" and "front" to a Side.
func ParseSide(s string) (Side, error) {
	switch s {
	case "back":
		return Back, nil
	case "front":
		return Front, nil
	}
	return Back, fmt.Errorf("%w: side must be front or back, got %q", kv.ErrInvalidKey, s)
}

func (s Side) String() string {
	switch s {
	case Front:
		return "front"
	case Back:
		return "back"
	}
	return "default"
}

// Queue key bounds: keys strictly between them; an empty queue starts in the
// middle.
const (
	queueMax   = 999999999999999
	queueStart = 500000000000000
)

// QueueOptions select a queue: integer keys when Prefix is empty, else
// TEXT keys "<prefix>-%015d".
type QueueOptions struct {
	Prefix string
	Side   Side
}

func (q QueueOptions) bounds() (driver.Value, driver.Value) {
	if q.Prefix == "" {
		return int64(0), int64(queueMax)
	}
	return q.Prefix + "-000000000000000", q.Prefix + "-999999999999999"
}

// order is the key order in which the end of the queue at side comes first.
func order(side Side) string {
	if side == Back {
		return "DESC"
	}
	return "ASC"
}

// Push adds value at one end of the queue and returns its key.
func (c *Cache) Push(ctx context.Context, value kv.Value, q QueueOptions, opts kv.SetOptions) (kv.Key, error) {
	st, err := c.prepare(value, opts)
	if err != nil {
		return kv.Key{}, err
	}
	var key kv.Key
	err = c.writeStored(ctx, "push", st, func(tx *Tx) error {
		var err error
		key, err = tx.pushStored(st, q, opts)
		return err
	})
	return key, err
}

// Push is Cache.Push inside the transaction.
func (tx *Tx) Push(value kv.Value, q QueueOptions, opts kv.SetOptions) (kv.Key, error) {
	st, err := tx.prepare(kv.IntKey(0), value, opts)
	if err != nil {
		return kv.Key{}, err
	}
	return tx.pushStored(st, q, opts)
}

func (tx *Tx) pushStored(st stored, q QueueOptions, opts kv.SetOptions) (kv.Key, error) {
	if err := tx.checkKeepable(st); err != nil {
		return kv.Key{}, err
	}
	q.Side = q.Side.or(Back)
	lo, hi := q.bounds()
	row, ok, err := tx.cn.queryRow(`SELECT key FROM Cache WHERE ? < key AND key < ? AND raw = 1 ORDER BY key `+order(q.Side)+` LIMIT 1`, 1, lo, hi)
	if err != nil {
		return kv.Key{}, err
	}
	num := int64(queueStart)
	var fnum float64 // the float key at the end, as python-diskcache counts on from it
	isFloat := false
	if ok {
		switch k := row[0].(type) {
		case string:
			tail := k[strings.LastIndexByte(k, '-')+1:]
			n, ok, err := pythonInt(tail)
			if !ok {
				// python-diskcache's int() raises ValueError here.
				return kv.Key{}, fmt.Errorf("the queue's %s key %q does not end in an integer: %w", q.Side, k, kv.ErrNotNumeric)
			}
			if err != nil {
				return kv.Key{}, fmt.Errorf("%w at its %s end (key %q)", kv.ErrQueueFull, q.Side, k)
			}
			num = n
		case float64:
			fnum, isFloat = k, true
		default:
			num = toInt(k)
		}
		step := int64(1)
		if q.Side != Back {
			step = -1
		}
		num += step
		fnum += float64(step)
		if isFloat && !(fnum > 0 && fnum < queueMax) || !isFloat && (num <= 0 || num >= queueMax) {
			return kv.Key{}, fmt.Errorf("%w at its %s end", kv.ErrQueueFull, q.Side)
		}
	}
	key := kv.IntKey(num)
	if isFloat {
		key = kv.FloatKey(fnum)
	}
	if q.Prefix != "" {
		key = kv.TextKey(fmt.Sprintf("%s-%015d", q.Prefix, num))
		if err := key.Validate(); err != nil { // a prefix that is not UTF-8
			return kv.Key{}, err
		}
	}
	now := tx.now()
	dbKey, _ := dbKey(key)
	if _, err := tx.insertRow(dbKey, 1, now, expireAt(opts.Expire, now), dbTag(opts.Tag), st); err != nil {
		return kv.Key{}, err
	}
	return key, tx.cull(now)
}

// Pull removes and returns the item at one end of the queue (default the
// front), dropping expired items it meets. ok is false when it is empty.
func (c *Cache) Pull(ctx context.Context, q QueueOptions, opts GetOptions) (Item, bool, error) {
	return c.queueRead(ctx, "pull", func(tx *Tx) (Item, bool, error) { return tx.Pull(q, opts) })
}

// Peek returns the item at one end of the queue without removing it,
// dropping expired items it meets.
func (c *Cache) Peek(ctx context.Context, q QueueOptions, opts GetOptions) (Item, bool, error) {
	return c.queueRead(ctx, "peek", func(tx *Tx) (Item, bool, error) { return tx.Peek(q, opts) })
}

// PeekItem returns the first (last=false) or last item in insertion order,
// dropping expired items it meets. It fails with ErrEmpty when none is left.
func (c *Cache) PeekItem(ctx context.Context, last bool, opts GetOptions) (Item, error) {
	it, ok, err := c.queueRead(ctx, "peekitem", func(tx *Tx) (Item, bool, error) { return tx.PeekItem(last, opts) })
	if err == nil && !ok {
		err = kv.ErrEmpty
	}
	return it, err
}

func (c *Cache) queueRead(ctx context.Context, op string, fn func(tx *Tx) (Item, bool, error)) (Item, bool, error) {
	var it Item
	var ok bool
	err := c.write(ctx, op, func(tx *Tx) error {
		var err error
		it, ok, err = fn(tx)
		return err
	})
	return it, ok, err
}

// Pull is Cache.Pull inside the transaction.
func (tx *Tx) Pull(q QueueOptions, opts GetOptions) (Item, bool, error) {
	return tx.takeQueue(q, true, opts)
}

// Peek is Cache.Peek inside the transaction.
func (tx *Tx) Peek(q QueueOptions, opts GetOptions) (Item, bool, error) {
	return tx.takeQueue(q, false, opts)
}

func (tx *Tx) takeQueue(q QueueOptions, remove bool, opts GetOptions) (Item, bool, error) {
	lo, hi := q.bounds()
	query := `SELECT rowid, key, expire_time, tag, mode, filename, value, size FROM Cache WHERE ? < key AND key < ? AND raw = 1 ORDER BY key ` + order(q.Side.or(Front)) + ` LIMIT 1`
	return tx.takeFirst(query, []any{lo, hi}, remove, opts)
}

// PeekItem is Cache.PeekItem inside the transaction; ok is false when the
// cache is empty.
func (tx *Tx) PeekItem(last bool, opts GetOptions) (Item, bool, error) {
	side := Front
	if last {
		side = Back
	}
	query := `SELECT rowid, key, expire_time, tag, mode, filename, value, size, raw FROM Cache ORDER BY rowid ` + order(side) + ` LIMIT 1`
	return tx.takeFirst(query, nil, false, opts)
}

// takeFirst returns the first live row of query (deleting expired rows and
// rows whose value file is gone on the way), removing it when remove is set.
func (tx *Tx) takeFirst(query string, args []any, remove bool, opts GetOptions) (Item, bool, error) {
	ncol := 8
	if strings.Contains(query, ", raw FROM") {
		ncol = 9
	}
	for {
		row, ok, err := tx.cn.queryRow(query, ncol, args...)
		if err != nil || !ok {
			return Item{}, false, err
		}
		rowid := row[0].(int64)
		raw := int64(1)
		if ncol == 9 {
			raw = toInt(row[8])
		}
		key := keyFromDB(row[1], raw)
		filename := row[5]
		if exp, has := toFloat(row[2]); has && exp < tx.now() {
			if err := tx.deleteRow(rowid); err != nil {
				return Item{}, false, err
			}
			tx.removeAfterCommit(filename)
			tx.c.counts.expired.Add(1)
			continue
		}
		it, f, err := tx.c.itemFromRow(key, row[2], row[3], row[4], row[5], row[6], row[7])
		if err != nil {
			return Item{}, false, err
		}
		missing := f == nil && it.Value.Type == kv.ValueNone
		if remove || missing {
			if err := tx.deleteRow(rowid); err != nil {
				if f != nil {
					f.Close()
				}
				return Item{}, false, err
			}
			tx.removeAfterCommit(filename)
		}
		if missing {
			continue
		}
		return tx.c.finishRead(it, f, opts.Stream)
	}
}

// pythonInt parses s as Python's int(s) does for ASCII text: surrounding
// whitespace, an optional sign, digits with single underscores between
// them. ok is false for text int() refuses; err is set for an integer
// beyond 64 bits.
func pythonInt(s string) (n int64, ok bool, err error) {
	s = strings.Trim(s, " \t\n\v\f\r")
	digits := strings.TrimLeft(s, "+-")
	if len(s)-len(digits) > 1 || digits == "" || digits[0] == '_' || digits[len(digits)-1] == '_' || strings.Contains(digits, "__") {
		return 0, false, nil
	}
	plain := strings.ReplaceAll(digits, "_", "")
	for i := 0; i < len(plain); i++ {
		if plain[i] < '0' || plain[i] > '9' {
			return 0, false, nil
		}
	}
	n, err = strconv.ParseInt(s[:len(s)-len(digits)]+plain, 10, 64)
	return n, true, err
}
