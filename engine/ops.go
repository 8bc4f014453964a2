package engine

import (
	"bytes"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// expireAt is the expire_time column of an item written at now with e.
func expireAt(e kv.Expiry, now float64) driver.Value {
	if !e.IsSet() {
		return nil
	}
	return now + e.Seconds()
}

// GetOptions are the optional arguments of Get.
type GetOptions struct {
	// Stream leaves file-backed values in their file: Item.Body is open on
	// it and Item.Value.Data is nil. The caller closes Item.Body.
	Stream bool
}

// Item is what reads return.
type Item struct {
	Key   kv.Key
	Value kv.Value
	// ExpireTime is the absolute expiry in epoch seconds, 0 if none.
	ExpireTime float64
	// Tag is the item's tag; the zero Key when it has none.
	Tag kv.Key
	// Size is the size of the value file, 0 for values in the database.
	Size int64
	// Body is set by streaming reads of file-backed values.
	Body *os.File
}

// Close closes the item's Body, if any.
func (it *Item) Close() error {
	if it.Body == nil {
		return nil
	}
	err := it.Body.Close()
	it.Body = nil
	return err
}

// stored is a value as it goes into the Cache table.
type stored struct {
	size     int64
	mode     int64
	filename driver.Value // string or nil
	value    driver.Value
}

// store turns a value into its columns, writing a value file when the value
// is streamed or at least disk_min_file_size long.
func (c *Cache) store(v kv.Value, body io.Reader, minFileSize int64) (stored, error) {
	if body != nil {
		if v.Type == kv.ValueNone {
			v.Type = kv.ValueBytes
		}
		if v.Type == kv.ValueInt || v.Type == kv.ValueFloat {
			return stored{}, fmt.Errorf("%w: a %s value cannot be streamed", kv.ErrInvalidValue, v.Type)
		}
		if v.Type == kv.ValueText {
			body = &utf8Reader{r: body}
		}
		name, n, err := c.createValueFile(body)
		if err != nil {
			return stored{}, err
		}
		return stored{size: n, mode: fileMode(v.Type), filename: name}, nil
	}
	if err := v.Validate(); err != nil {
		return stored{}, err
	}
	if inDatabase(v, minFileSize) {
		switch v.Type {
		case kv.ValueInt:
			return stored{mode: modeRaw, value: v.Int}, nil
		case kv.ValueFloat:
			return stored{mode: modeRaw, value: v.Float}, nil
		case kv.ValueText:
			return stored{mode: modeRaw, value: string(v.Data)}, nil
		case kv.ValuePickle:
			return stored{mode: modePickle, value: nonNil(v.Data)}, nil
		default:
			return stored{mode: modeRaw, value: nonNil(v.Data)}, nil
		}
	}
	name, n, err := c.createValueFile(bytes.NewReader(v.Data))
	if err != nil {
		return stored{}, err
	}
	return stored{size: n, mode: fileMode(v.Type), filename: name}, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// discardStored removes the file of a value that was never committed.
func (c *Cache) discardStored(st stored) {
	if name, ok := st.filename.(string); ok {
		c.removeFile(name)
	}
}

// prepare stores the value outside any transaction (files are written
// before the lock is taken, as python-diskcache does).
func (c *Cache) prepare(v kv.Value, opts kv.SetOptions) (stored, error) {
	if err := opts.Tag.ValidateTag(); err != nil {
		return stored{}, err
	}
	return c.store(v, opts.Body, c.settings.Load().DiskMinFileSize)
}

// writeStored runs fn with a prepared value in its own transaction and
// removes the value's file if the transaction does not commit.
func (c *Cache) writeStored(ctx context.Context, op string, st stored, fn func(tx *Tx) error) error {
	err := c.write(ctx, op, fn)
	if err != nil {
		c.discardStored(st)
	}
	if name, ok := st.filename.(string); ok {
		c.unpend(name)
	}
	return err
}

// Set stores value under key, replacing any item there (its rowid, and so
// its place in iteration order, is kept), then culls.
func (c *Cache) Set(ctx context.Context, key kv.Key, value kv.Value, opts kv.SetOptions) error {
	if err := key.Validate(); err != nil {
		return err
	}
	st, err := c.prepare(value, opts)
	if err != nil {
		return err
	}
	return c.writeStored(ctx, "set", st, func(tx *Tx) error { return tx.setStored(key, st, opts) })
}

// Set is Cache.Set inside the transaction.
func (tx *Tx) Set(key kv.Key, value kv.Value, opts kv.SetOptions) error {
	st, err := tx.prepare(key, value, opts)
	if err != nil {
		return err
	}
	return tx.setStored(key, st, opts)
}

func (tx *Tx) prepare(key kv.Key, value kv.Value, opts kv.SetOptions) (stored, error) {
	if err := key.Validate(); err != nil {
		return stored{}, err
	}
	if err := opts.Tag.ValidateTag(); err != nil {
		return stored{}, err
	}
	st, err := tx.c.store(value, opts.Body, tx.s.DiskMinFileSize)
	if err != nil {
		return stored{}, err
	}
	if name, ok := st.filename.(string); ok {
		tx.created = append(tx.created, name)
	}
	return st, nil
}

func (tx *Tx) setStored(key kv.Key, st stored, opts kv.SetOptions) error {
	if err := tx.checkKeepable(st); err != nil {
		return err
	}
	now := tx.now()
	expire, tag := expireAt(opts.Expire, now), dbTag(opts.Tag)
	var rowid int64
	var err error
	if r, ok := tx.hotRow(key); ok {
		// Memory names the key's row, which holds no file: no need to
		// look it up.
		rowid = r
		err = tx.updateRow(rowid, now, expire, tag, st)
	} else {
		dbKey, raw := dbKey(key)
		row, ok, qerr := tx.cn.queryRow(`SELECT rowid, filename FROM Cache WHERE key = ? AND raw = ?`, 2, dbKey, raw)
		if qerr != nil {
			return qerr
		}
		if ok {
			rowid = row[0].(int64)
			tx.removeAfterCommit(row[1])
			err = tx.updateRow(rowid, now, expire, tag, st)
		} else {
			rowid, err = tx.insertRow(dbKey, raw, now, expire, tag, st)
		}
	}
	if err != nil {
		return err
	}
	tx.keepWritten(key, rowid, expire, tag, st)
	return tx.cull(now)
}

// hotRow returns the row of key that memory holds (Options.HotBytes), if
// it does: a write transaction may take it for the database's (rowOf).
func (tx *Tx) hotRow(key kv.Key) (int64, bool) {
	if tx.c.hot == nil {
		return 0, false
	}
	return tx.c.hot.rowOf(key)
}

// keepWritten has the value just written to row rowid go to memory once
// the transaction commits (Options.HotBytes), so the next get of the key
// runs no SQL either; values in files stay there.
func (tx *Tx) keepWritten(key kv.Key, rowid int64, expire, tag driver.Value, st stored) {
	h := tx.c.hot
	if name, _ := st.filename.(string); h == nil || name != "" {
		return
	}
	if b, ok := st.value.([]byte); ok {
		// The caller may reuse its buffer once the write returns.
		st.value = bytes.Clone(b)
	}
	it, f, err := tx.c.itemFromRow(key, expire, tag, st.mode, nil, st.value, st.size)
	if err != nil || f != nil || it.Value.Type == kv.ValueNone {
		return
	}
	tx.hot = append(tx.hot, hotWrite{rowid: rowid, change: h.lastChange(rowid), item: it})
}

func (tx *Tx) updateRow(rowid int64, now float64, expire, tag driver.Value, st stored) error {
	tx.noteExpiry(expire)
	_, err := tx.cn.exec(`UPDATE Cache SET store_time = ?, expire_time = ?, access_time = ?, access_count = ?, tag = ?, size = ?, mode = ?, filename = ?, value = ? WHERE rowid = ?`,
		now, expire, now, int64(0), tag, st.size, st.mode, st.filename, st.value, rowid)
	return err
}

// insertRow inserts the row and returns its rowid.
func (tx *Tx) insertRow(dbKey driver.Value, raw int64, now float64, expire, tag driver.Value, st stored) (int64, error) {
	tx.noteExpiry(expire)
	return tx.cn.insert(`INSERT INTO Cache( key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, filename, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		dbKey, raw, now, expire, now, int64(0), tag, st.size, st.mode, st.filename, st.value)
}

// Add stores value only if key has no live item; it reports whether it did.
func (c *Cache) Add(ctx context.Context, key kv.Key, value kv.Value, opts kv.SetOptions) (bool, error) {
	return c.conditionalSet(ctx, "add", key, value, opts, (*Tx).addStored)
}

// conditionalSet runs a set that may not store (add, replace) in its own
// transaction; a value it did not store is discarded.
func (c *Cache) conditionalSet(ctx context.Context, op string, key kv.Key, value kv.Value, opts kv.SetOptions,
	set func(tx *Tx, key kv.Key, st stored, opts kv.SetOptions) (bool, error)) (bool, error) {
	if err := key.Validate(); err != nil {
		return false, err
	}
	st, err := c.prepare(value, opts)
	if err != nil {
		return false, err
	}
	var done bool
	err = c.writeStored(ctx, op, st, func(tx *Tx) error {
		var err error
		done, err = set(tx, key, st, opts)
		return err
	})
	if err == nil && !done {
		c.discardStored(st)
	}
	return done, err
}

// Add is Cache.Add inside the transaction.
func (tx *Tx) Add(key kv.Key, value kv.Value, opts kv.SetOptions) (bool, error) {
	st, err := tx.prepare(key, value, opts)
	if err != nil {
		return false, err
	}
	added, err := tx.addStored(key, st, opts)
	if err == nil && !added {
		tx.removeAfterCommit(st.filename)
	}
	return added, err
}

// Replace stores value under key only if key holds a live item (Redis's
// SET XX, memcached's replace), as Set does, and reports whether it did.
func (c *Cache) Replace(ctx context.Context, key kv.Key, value kv.Value, opts kv.SetOptions) (bool, error) {
	return c.conditionalSet(ctx, "replace", key, value, opts, (*Tx).replaceStored)
}

func (tx *Tx) replaceStored(key kv.Key, st stored, opts kv.SetOptions) (bool, error) {
	dbKey, raw := dbKey(key)
	row, ok, err := tx.cn.queryRow(`SELECT expire_time FROM Cache WHERE key = ? AND raw = ?`, 1, dbKey, raw)
	if err != nil || !ok {
		return false, err
	}
	if exp, has := toFloat(row[0]); has && exp <= tx.now() {
		return false, nil
	}
	return true, tx.setStored(key, st, opts)
}

func (tx *Tx) addStored(key kv.Key, st stored, opts kv.SetOptions) (bool, error) {
	now := tx.now()
	dbKey, raw := dbKey(key)
	row, ok, err := tx.cn.queryRow(`SELECT rowid, filename, expire_time FROM Cache WHERE key = ? AND raw = ?`, 3, dbKey, raw)
	if err != nil {
		return false, err
	}
	if ok {
		if exp, has := toFloat(row[2]); !has || exp > now {
			return false, nil
		}
	}
	if err := tx.checkKeepable(st); err != nil {
		return false, err
	}
	if ok {
		tx.removeAfterCommit(row[1])
		err = tx.updateRow(row[0].(int64), now, expireAt(opts.Expire, now), dbTag(opts.Tag), st)
	} else {
		_, err = tx.insertRow(dbKey, raw, now, expireAt(opts.Expire, now), dbTag(opts.Tag), st)
	}
	if err != nil {
		return false, err
	}
	return true, tx.cull(now)
}

// Touch gives a live item a new expiry; it reports whether key was live.
func (c *Cache) Touch(ctx context.Context, key kv.Key, expire kv.Expiry) (bool, error) {
	var ok bool
	err := c.write(ctx, "touch", func(tx *Tx) error {
		var err error
		ok, err = tx.Touch(key, expire)
		return err
	})
	return ok, err
}

// Touch is Cache.Touch inside the transaction.
func (tx *Tx) Touch(key kv.Key, expire kv.Expiry) (bool, error) {
	if err := key.Validate(); err != nil {
		return false, err
	}
	now := tx.now()
	dbKey, raw := dbKey(key)
	row, ok, err := tx.cn.queryRow(`SELECT rowid, expire_time FROM Cache WHERE key = ? AND raw = ?`, 2, dbKey, raw)
	if err != nil || !ok {
		return false, err
	}
	if exp, has := toFloat(row[1]); has && exp <= now {
		return false, nil
	}
	exp := expireAt(expire, now)
	tx.noteExpiry(exp)
	_, err = tx.cn.exec(`UPDATE Cache SET expire_time = ? WHERE rowid = ?`, exp, row[0].(int64))
	return err == nil, err
}

const selectLive = `SELECT rowid, expire_time, tag, mode, filename, value, size FROM Cache WHERE key = ? AND raw = ? AND (expire_time IS NULL OR expire_time > ?)`

// Get returns the live item under key; ok is false on a miss (absent,
// expired, or its value file gone). With statistics on it counts hits and
// misses; under least-recently-used or least-frequently-used it updates
// the item's access time or count.
func (c *Cache) Get(ctx context.Context, key kv.Key, opts GetOptions) (Item, bool, error) {
	if err := key.Validate(); err != nil {
		return Item{}, false, err
	}
	s := c.settings.Load()
	if s.Statistics || policies[s.EvictionPolicy].onGet != "" {
		var it Item
		var ok bool
		err := c.write(ctx, "get", func(tx *Tx) error {
			var err error
			it, ok, err = tx.Get(key, opts)
			return err
		})
		return it, ok, err
	}
	var token uint64
	if c.hot != nil {
		if it, ok, found := c.hot.lookup(key, c.nowSeconds(), false); found {
			return it, ok, nil
		}
		token = c.hot.fillToken()
	}
	cn, err := c.acquire(ctx)
	if err != nil {
		return Item{}, false, err
	}
	dbKey, raw := dbKey(key)
	row, ok, err := cn.queryRow(selectLive, 7, dbKey, raw, c.nowSeconds())
	if err != nil || !ok {
		c.release(cn)
		if err != nil {
			return Item{}, false, fmt.Errorf("engine: get: %w", err)
		}
		if c.hot != nil {
			c.hot.fillAbsent(token, key)
		}
		return Item{}, false, nil
	}
	rowid := row[0].(int64)
	it, f, err := c.itemFromRow(key, row[1], row[2], row[3], row[4], row[5], row[6])
	c.release(cn) // row belongs to cn: read it before
	if err != nil || f == nil && it.Value.Type == kv.ValueNone {
		return Item{}, false, err
	}
	if f == nil && c.hot != nil {
		c.hot.fill(token, rowid, it)
	}
	return c.finishRead(it, f, opts.Stream)
}

// GetFromMemory answers a get of key from the values kept in memory
// (Options.HotBytes) when Get would: found is false when memory does not
// know the key, or when Get would do more than read (statistics on, or an
// eviction policy that updates the item on get), and then nothing was
// done. The item never holds a file. A caller that skips Get this way
// spares its context and its checks, which memory does not need.
func (c *Cache) GetFromMemory(key kv.Key) (it Item, ok, found bool) {
	if c.hot == nil || key.Validate() != nil {
		return Item{}, false, false
	}
	s := c.settings.Load()
	if s.Statistics || policies[s.EvictionPolicy].onGet != "" {
		return Item{}, false, false
	}
	return c.hot.lookup(key, c.nowSeconds(), true)
}

// HotStats returns the figures of the values kept in memory
// (Options.HotBytes); zero when none are.
func (c *Cache) HotStats() HotStats {
	if c.hot == nil {
		return HotStats{}
	}
	return c.hot.stats()
}

// Get is Cache.Get inside the transaction.
func (tx *Tx) Get(key kv.Key, opts GetOptions) (Item, bool, error) {
	if err := key.Validate(); err != nil {
		return Item{}, false, err
	}
	dbKey, raw := dbKey(key)
	row, ok, err := tx.cn.queryRow(selectLive, 7, dbKey, raw, tx.now())
	if err != nil {
		return Item{}, false, err
	}
	var it Item
	var f *os.File
	if ok {
		rowid := row[0].(int64)
		it, f, err = tx.c.itemFromRow(key, row[1], row[2], row[3], row[4], row[5], row[6])
		if err != nil {
			return Item{}, false, err
		}
		ok = f != nil || it.Value.Type != kv.ValueNone
		if ok {
			if set := policies[tx.s.EvictionPolicy].onGet; set != "" {
				args := []any{rowid}
				if set == "access_time = ?" {
					args = []any{tx.now(), rowid}
				}
				if _, err := tx.cn.exec(`UPDATE Cache SET `+set+` WHERE rowid = ?`, args...); err != nil {
					if f != nil {
						f.Close()
					}
					return Item{}, false, err
				}
			}
		}
	}
	if tx.s.Statistics {
		counter := "misses"
		if ok {
			counter = "hits"
		}
		if _, err := tx.cn.exec(`UPDATE Settings SET value = value + 1 WHERE key = ?`, counter); err != nil {
			if f != nil {
				f.Close()
			}
			return Item{}, false, err
		}
	}
	if !ok {
		return Item{}, false, nil
	}
	return tx.c.finishRead(it, f, opts.Stream)
}

// itemFromRow builds an item from its columns. For a file-backed value it
// opens the file (so that a later removal cannot take it away) and returns
// it; a file already gone yields an item of type ValueNone: a miss.
func (c *Cache) itemFromRow(key kv.Key, expire, tag, mode, filename, value, size driver.Value) (Item, *os.File, error) {
	it := Item{Key: key, Tag: tagFromDB(tag)}
	if exp, ok := toFloat(expire); ok {
		it.ExpireTime = exp
	}
	m := toInt(mode)
	if name, ok := filename.(string); ok && name != "" {
		f, err := c.openValueFile(name)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return Item{}, nil, nil
			}
			return Item{}, nil, fmt.Errorf("engine: open value file: %w", err)
		}
		it.Value.Type = typeOfMode(m)
		it.Size = toInt(size)
		return it, f, nil
	}
	v, err := valueFromDB(m, value)
	if err != nil {
		return Item{}, nil, fmt.Errorf("engine: key %s: %w", key, err)
	}
	it.Value = v
	return it, nil, nil
}

// finishRead reads an opened value file unless the caller streams it.
func (c *Cache) finishRead(it Item, f *os.File, stream bool) (Item, bool, error) {
	if f == nil {
		return it, true, nil
	}
	// A value file whose size is not the one recorded was truncated,
	// grown or replaced behind the cache's back: a miss, not data.
	// (Check finds it, and with fix removes the item.)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return Item{}, false, fmt.Errorf("engine: stat value file: %w", err)
	}
	if st.Size() != it.Size {
		f.Close()
		c.counts.corrupt.Add(1)
		return Item{}, false, nil
	}
	if stream {
		it.Body = f
		return it, true, nil
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return Item{}, false, fmt.Errorf("engine: read value file: %w", err)
	}
	it.Value.Data = data
	return it, true, nil
}

// Contains reports whether key has a live item.
func (c *Cache) Contains(ctx context.Context, key kv.Key) (bool, error) {
	if err := key.Validate(); err != nil {
		return false, err
	}
	cn, err := c.acquire(ctx)
	if err != nil {
		return false, err
	}
	defer c.release(cn)
	return contains(cn, key, c.nowSeconds())
}

// Contains is Cache.Contains inside the transaction.
func (tx *Tx) Contains(key kv.Key) (bool, error) {
	if err := key.Validate(); err != nil {
		return false, err
	}
	return contains(tx.cn, key, tx.now())
}

func contains(cn *conn, key kv.Key, now float64) (bool, error) {
	dbKey, raw := dbKey(key)
	_, ok, err := cn.queryRow(`SELECT rowid FROM Cache WHERE key = ? AND raw = ? AND (expire_time IS NULL OR expire_time > ?)`, 1, dbKey, raw, now)
	return ok, err
}

// Delete removes the live item under key and reports whether there was one.
func (c *Cache) Delete(ctx context.Context, key kv.Key) (bool, error) {
	var ok bool
	err := c.write(ctx, "delete", func(tx *Tx) error {
		var err error
		ok, err = tx.Delete(key)
		return err
	})
	return ok, err
}

// Delete is Cache.Delete inside the transaction.
func (tx *Tx) Delete(key kv.Key) (bool, error) {
	if err := key.Validate(); err != nil {
		return false, err
	}
	dbKey, raw := dbKey(key)
	row, ok, err := tx.cn.queryRow(`SELECT rowid, filename FROM Cache WHERE key = ? AND raw = ? AND (expire_time IS NULL OR expire_time > ?)`, 2, dbKey, raw, tx.now())
	if err != nil || !ok {
		return false, err
	}
	filename := row[1]
	if err := tx.deleteRow(row[0].(int64)); err != nil {
		return false, err
	}
	tx.removeAfterCommit(filename)
	return true, nil
}

func (tx *Tx) deleteRow(rowid int64) error {
	_, err := tx.cn.exec(`DELETE FROM Cache WHERE rowid = ?`, rowid)
	return err
}

// Pop removes the live item under key and returns it.
func (c *Cache) Pop(ctx context.Context, key kv.Key, opts GetOptions) (Item, bool, error) {
	var it Item
	var ok bool
	err := c.write(ctx, "pop", func(tx *Tx) error {
		var err error
		it, ok, err = tx.Pop(key, opts)
		return err
	})
	return it, ok, err
}

// Pop is Cache.Pop inside the transaction.
func (tx *Tx) Pop(key kv.Key, opts GetOptions) (Item, bool, error) {
	if err := key.Validate(); err != nil {
		return Item{}, false, err
	}
	dbKey, raw := dbKey(key)
	row, ok, err := tx.cn.queryRow(selectLive, 7, dbKey, raw, tx.now())
	if err != nil || !ok {
		return Item{}, false, err
	}
	rowid, filename := row[0].(int64), row[4]
	it, f, err := tx.c.itemFromRow(key, row[1], row[2], row[3], row[4], row[5], row[6])
	if err != nil {
		return Item{}, false, err
	}
	if err := tx.deleteRow(rowid); err != nil {
		if f != nil {
			f.Close()
		}
		return Item{}, false, err
	}
	tx.removeAfterCommit(filename)
	if f == nil && it.Value.Type == kv.ValueNone {
		return Item{}, false, nil // the value file was gone: a miss
	}
	return tx.c.finishRead(it, f, opts.Stream)
}

// Incr adds delta (an int or float Value) to the number under key and
// returns the result. A missing or expired key starts from def; with a def
// of type ValueNone it fails with ErrNotFound. A live item keeps its expiry
// and tag; a value that is not a number fails with ErrNotNumeric.
func (c *Cache) Incr(ctx context.Context, key kv.Key, delta, def kv.Value) (kv.Value, error) {
	var out kv.Value
	err := c.write(ctx, "incr", func(tx *Tx) error {
		var err error
		out, err = tx.Incr(key, delta, def)
		return err
	})
	return out, err
}

// Decr subtracts delta; see Incr.
func (c *Cache) Decr(ctx context.Context, key kv.Key, delta, def kv.Value) (kv.Value, error) {
	neg, err := negate(delta)
	if err != nil {
		return kv.Value{}, err
	}
	return c.Incr(ctx, key, neg, def)
}

// Decr is Cache.Decr inside the transaction.
func (tx *Tx) Decr(key kv.Key, delta, def kv.Value) (kv.Value, error) {
	neg, err := negate(delta)
	if err != nil {
		return kv.Value{}, err
	}
	return tx.Incr(key, neg, def)
}

func negate(v kv.Value) (kv.Value, error) {
	switch v.Type {
	case kv.ValueInt:
		if v.Int == math.MinInt64 {
			return kv.Value{}, kv.ErrOverflow
		}
		return kv.Int(-v.Int), nil
	case kv.ValueFloat:
		return kv.Float(-v.Float), nil
	}
	return kv.Value{}, fmt.Errorf("%w: delta must be an int or a float, not %s", kv.ErrNotNumeric, v.Type)
}

// Incr is Cache.Incr inside the transaction.
func (tx *Tx) Incr(key kv.Key, delta, def kv.Value) (kv.Value, error) {
	if err := key.Validate(); err != nil {
		return kv.Value{}, err
	}
	if delta.Type != kv.ValueInt && delta.Type != kv.ValueFloat {
		return kv.Value{}, fmt.Errorf("%w: delta must be an int or a float, not %s", kv.ErrNotNumeric, delta.Type)
	}
	if def.Type != kv.ValueNone && def.Type != kv.ValueInt && def.Type != kv.ValueFloat {
		return kv.Value{}, fmt.Errorf("%w: default must be an int or a float, not %s", kv.ErrNotNumeric, def.Type)
	}
	now := tx.now()
	dbKey, raw := dbKey(key)
	row, found, err := tx.cn.queryRow(`SELECT rowid, expire_time, filename, value FROM Cache WHERE key = ? AND raw = ?`, 4, dbKey, raw)
	if err != nil {
		return kv.Value{}, err
	}
	if found {
		if exp, has := toFloat(row[1]); !has || exp >= now {
			rowid := row[0].(int64)
			cur, ok := numberOf(row[3])
			if !ok || row[2] != nil {
				return kv.Value{}, fmt.Errorf("%w: key %s", kv.ErrNotNumeric, key)
			}
			out, err := addNumbers(cur, delta)
			if err != nil {
				return kv.Value{}, err
			}
			args := []any{now, numberArg(out)}
			set := `store_time = ?, value = ?`
			switch on := policies[tx.s.EvictionPolicy].onGet; on {
			case "":
			case "access_time = ?":
				set += ", " + on
				args = append(args, now)
			default:
				set += ", " + on
			}
			args = append(args, rowid)
			_, err = tx.cn.exec(`UPDATE Cache SET `+set+` WHERE rowid = ?`, args...)
			return out, err
		}
	}
	if def.Type == kv.ValueNone {
		return kv.Value{}, fmt.Errorf("%w: key %s", kv.ErrNotFound, key)
	}
	out, err := addNumbers(def, delta)
	if err != nil {
		return kv.Value{}, err
	}
	st := stored{mode: modeRaw, value: numberArg(out)}
	if found {
		tx.removeAfterCommit(row[2])
		err = tx.updateRow(row[0].(int64), now, nil, nil, st)
	} else {
		_, err = tx.insertRow(dbKey, raw, now, nil, nil, st)
	}
	if err != nil {
		return kv.Value{}, err
	}
	return out, tx.cull(now)
}

func numberOf(v driver.Value) (kv.Value, bool) {
	switch t := v.(type) {
	case int64:
		return kv.Int(t), true
	case float64:
		return kv.Float(t), true
	}
	return kv.Value{}, false
}

func numberArg(v kv.Value) driver.Value {
	if v.Type == kv.ValueInt {
		return v.Int
	}
	return v.Float
}

func addNumbers(a, b kv.Value) (kv.Value, error) {
	if a.Type == kv.ValueInt && b.Type == kv.ValueInt {
		s := a.Int + b.Int
		if (s > a.Int) != (b.Int > 0) {
			return kv.Value{}, fmt.Errorf("%w: %d + %d", kv.ErrOverflow, a.Int, b.Int)
		}
		return kv.Int(s), nil
	}
	af, bf := a.Float, b.Float
	if a.Type == kv.ValueInt {
		af = float64(a.Int)
	}
	if b.Type == kv.ValueInt {
		bf = float64(b.Int)
	}
	if s := af + bf; !math.IsNaN(s) {
		return kv.Float(s), nil
	}
	return kv.Value{}, fmt.Errorf("%w: %v + %v is NaN", kv.ErrInvalidValue, a, b)
}
