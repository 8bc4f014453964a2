package engine

import (
	"context"
	"database/sql/driver"
	"fmt"
	"io"
	"os"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// Row is one item of the Cache table with every column but its rowid, so an
// item can move to another cache exactly as it was: value (in the database
// or in a value file), mode, expire time, tag, store and access time and
// access count.
type Row struct {
	Key         kv.Key
	StoreTime   float64
	ExpireTime  *float64 // nil: never expires
	AccessTime  float64
	AccessCount int64
	Tag         kv.Key // zero Key: no tag
	Mode        int64  // python-diskcache's MODE_*
	// Value is the value column (int64, float64, string or []byte) when
	// the value is in the database; nil when it is in a file.
	Value driver.Value
	// Filename is the value file relative to the cache directory; "" when
	// the value is in the database. Size is the file's size.
	Filename string
	Size     int64

	rowid int64
}

// Rowid is the row's position in its database (for resuming a scan).
func (r Row) Rowid() int64 { return r.rowid }

// Expired reports whether the row is dead at now (as get sees it).
func (r Row) Expired(now float64) bool { return r.ExpireTime != nil && *r.ExpireTime <= now }

// Bytes is the value's size: the file's, or the database value's.
func (r Row) Bytes() int64 {
	if r.Filename != "" {
		return r.Size
	}
	switch v := r.Value.(type) {
	case string:
		return int64(len(v))
	case []byte:
		return int64(len(v))
	}
	return 8
}

const rowColumns = `rowid, key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, filename, value`

func rowFromDB(r []driver.Value) Row {
	row := Row{
		rowid:       toInt(r[0]),
		Key:         keyFromDB(r[1], toInt(r[2])),
		AccessCount: toInt(r[6]),
		Tag:         tagFromDB(r[7]),
		Size:        toInt(r[8]),
		Mode:        toInt(r[9]),
		Value:       r[11],
	}
	row.StoreTime, _ = toFloat(r[3])
	if e, ok := toFloat(r[4]); ok {
		row.ExpireTime = &e
	}
	row.AccessTime, _ = toFloat(r[5])
	if f, ok := r[10].(string); ok && f != "" {
		row.Filename, row.Value = f, nil
	}
	return row
}

// Rows returns up to limit rows after rowid after, in rowid order, expired
// ones included.
func (c *Cache) Rows(ctx context.Context, after int64, limit int) ([]Row, error) {
	rows, err := c.queryPage(ctx, `SELECT `+rowColumns+` FROM Cache WHERE rowid > ? ORDER BY rowid LIMIT ?`, 12, after, int64(limit))
	if err != nil {
		return nil, err
	}
	out := make([]Row, len(rows))
	for i, r := range rows {
		out[i] = rowFromDB(r)
	}
	return out, nil
}

// ExportRow returns the row of key, live or not; ok is false when there is
// none.
func (c *Cache) ExportRow(ctx context.Context, key kv.Key) (Row, bool, error) {
	if err := key.Validate(); err != nil {
		return Row{}, false, err
	}
	k, raw := dbKey(key)
	rows, err := c.queryPage(ctx, `SELECT `+rowColumns+` FROM Cache WHERE key = ? AND raw = ?`, 12, k, raw)
	if err != nil || len(rows) == 0 {
		return Row{}, false, err
	}
	return rowFromDB(rows[0]), true, nil
}

// OpenValue opens the value file of a row; a file removed since the row was
// read is os.ErrNotExist (the item is gone).
func (c *Cache) OpenValue(r Row) (*os.File, error) { return c.openValueFile(r.Filename) }

// ImportRow inserts row unless key already has a row (live or not), with all
// of its metadata; body streams the value file when the row has one
// (row.Filename != ""; its name here is new). It reports whether it
// inserted, and culls like any write.
func (c *Cache) ImportRow(ctx context.Context, row Row, body io.Reader) (bool, error) {
	sr, err := c.StageRow(row, body)
	if err != nil {
		return false, err
	}
	done, err := c.ImportRows(ctx, []StagedRow{sr})
	return err == nil && done[0], err
}

// StagedRow is a row ready for ImportRows: validated, its value file (if
// it has one) already written here under a new name.
type StagedRow struct {
	Row Row
	st  stored
}

// StageRow prepares row for ImportRows outside any transaction: it
// validates it and writes its value file from body (row.Filename != "").
// Every staged row must reach ImportRows or DiscardStaged, which remove
// the files of rows that are not imported.
func (c *Cache) StageRow(row Row, body io.Reader) (StagedRow, error) {
	if err := row.Key.Validate(); err != nil {
		return StagedRow{}, err
	}
	if row.Mode < modeNone || row.Mode > modePickle {
		return StagedRow{}, fmt.Errorf("%w: mode %d", kv.ErrInvalidValue, row.Mode)
	}
	st := stored{mode: row.Mode, value: row.Value}
	if row.Filename != "" {
		name, n, err := c.createValueFile(body)
		if err != nil {
			return StagedRow{}, err
		}
		st.filename, st.size = name, n
		if n != row.Size {
			c.discardStored(st)
			c.unpend(name)
			return StagedRow{}, fmt.Errorf("engine: import: value file of %d bytes, expected %d: %w", n, row.Size, io.ErrUnexpectedEOF)
		}
	}
	return StagedRow{Row: row, st: st}, nil
}

// DiscardStaged removes the value files of staged rows that will not be
// imported.
func (c *Cache) DiscardStaged(rows ...StagedRow) {
	for _, r := range rows {
		c.discardStored(r.st)
		if name, ok := r.st.filename.(string); ok {
			c.unpend(name)
		}
	}
}

// ImportRows imports staged rows in ONE transaction: each is inserted
// unless its key already has a row (live or not, or an earlier row of the
// same batch), then the cache culls as after as many writes as it
// inserted. done[i] reports whether rows[i] was inserted. On an error
// nothing of the batch is committed and ImportRows can be called again
// with freshly staged rows (what it inserted then is skipped as present).
// The files of rows not inserted are removed either way.
func (c *Cache) ImportRows(ctx context.Context, rows []StagedRow) ([]bool, error) {
	done := make([]bool, len(rows))
	err := c.write(ctx, "import", func(tx *Tx) error {
		var inserted int64
		for i, r := range rows {
			ok, err := tx.importStaged(r)
			if err != nil {
				return err
			}
			if done[i] = ok; ok {
				inserted++
			}
		}
		return tx.cullWrites(tx.now(), inserted)
	})
	if err != nil {
		clear(done)
	}
	for i, r := range rows {
		if !done[i] {
			c.discardStored(r.st)
		}
		if name, ok := r.st.filename.(string); ok {
			c.unpend(name)
		}
	}
	return done, err
}

// importStaged inserts one staged row unless its key has a row (the
// conflict on the unique index of key and raw, and only that one, skips
// it).
func (tx *Tx) importStaged(r StagedRow) (bool, error) {
	row, st := r.Row, r.st
	var expire driver.Value
	if row.ExpireTime != nil {
		expire = *row.ExpireTime
	}
	k, raw := dbKey(row.Key)
	tx.noteExpiry(expire)
	n, err := tx.cn.exec(`INSERT INTO Cache( key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, filename, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key, raw) DO NOTHING`,
		k, raw, row.StoreTime, expire, row.AccessTime, row.AccessCount, dbTag(row.Tag), st.size, st.mode, st.filename, st.value)
	return n == 1, err
}

// DeleteRow removes a row read by Rows or ExportRow if it is still the same
// item (same rowid and store time): a write since then keeps it. It
// reports whether it removed it.
func (c *Cache) DeleteRow(ctx context.Context, r Row) (bool, error) {
	done, err := c.DeleteRows(ctx, []Row{r})
	return err == nil && done[0], err
}

// DeleteRows is DeleteRow for many rows of this cache in ONE transaction:
// each row is removed only if it is still the same item; done[i] reports
// whether rows[i] was. On an error nothing is removed.
func (c *Cache) DeleteRows(ctx context.Context, rows []Row) ([]bool, error) {
	done := make([]bool, len(rows))
	err := c.write(ctx, "delete", func(tx *Tx) error {
		clear(done)
		for i, r := range rows {
			row, ok, err := tx.cn.queryRow(`SELECT filename, store_time FROM Cache WHERE rowid = ?`, 2, r.rowid)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if st, _ := toFloat(row[1]); st != r.StoreTime {
				continue
			}
			if err := tx.deleteRow(r.rowid); err != nil {
				return err
			}
			tx.removeAfterCommit(row[0])
			done[i] = true
		}
		return nil
	})
	if err != nil {
		clear(done)
	}
	return done, err
}

// ExportRow is Cache.ExportRow on the database that holds key.
func (f *FanoutCache) ExportRow(ctx context.Context, key kv.Key) (Row, bool, error) {
	return f.DatabaseFor(key).ExportRow(ctx, key)
}

// ImportRow is Cache.ImportRow on the database that holds row.Key.
func (f *FanoutCache) ImportRow(ctx context.Context, row Row, body io.Reader) (bool, error) {
	return f.DatabaseFor(row.Key).ImportRow(ctx, row, body)
}
