package main

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// The raw SQLite baseline: the same work done directly with prepared
// statements on python-diskcache's Cache table (same columns and indexes,
// same pragmas), one connection per worker, BEGIN IMMEDIATE around every
// write. It is the floor the engine is measured against: no write lock of
// its own, no select-before-write, no cull, no Settings bookkeeping.

var rawSchema = []string{
	`CREATE TABLE IF NOT EXISTS Cache (
 rowid INTEGER PRIMARY KEY,
 key BLOB,
 raw INTEGER,
 store_time REAL,
 expire_time REAL,
 access_time REAL,
 access_count INTEGER DEFAULT 0,
 tag BLOB,
 size INTEGER DEFAULT 0,
 mode INTEGER DEFAULT 0,
 filename TEXT,
 value BLOB)`,
	`CREATE UNIQUE INDEX IF NOT EXISTS Cache_key_raw ON Cache(key, raw)`,
	`CREATE INDEX IF NOT EXISTS Cache_expire_time ON Cache (expire_time)`,
	`CREATE INDEX IF NOT EXISTS Cache_store_time ON Cache (store_time)`,
}

// rawTriggers are python-diskcache's count and size bookkeeping, added
// with -raw-triggers to see what they cost.
var rawTriggers = []string{
	`CREATE TABLE IF NOT EXISTS Settings ( key TEXT NOT NULL UNIQUE, value)`,
	`INSERT OR IGNORE INTO Settings VALUES ('count', 0)`,
	`INSERT OR IGNORE INTO Settings VALUES ('size', 0)`,
	`CREATE TRIGGER IF NOT EXISTS Settings_count_insert AFTER INSERT ON Cache FOR EACH ROW BEGIN UPDATE Settings SET value = value + 1 WHERE key = 'count'; END`,
	`CREATE TRIGGER IF NOT EXISTS Settings_count_delete AFTER DELETE ON Cache FOR EACH ROW BEGIN UPDATE Settings SET value = value - 1 WHERE key = 'count'; END`,
	`CREATE TRIGGER IF NOT EXISTS Settings_size_insert AFTER INSERT ON Cache FOR EACH ROW BEGIN UPDATE Settings SET value = value + NEW.size WHERE key = 'size'; END`,
	`CREATE TRIGGER IF NOT EXISTS Settings_size_update AFTER UPDATE ON Cache FOR EACH ROW BEGIN UPDATE Settings SET value = value + NEW.size - OLD.size WHERE key = 'size'; END`,
	`CREATE TRIGGER IF NOT EXISTS Settings_size_delete AFTER DELETE ON Cache FOR EACH ROW BEGIN UPDATE Settings SET value = value - OLD.size WHERE key = 'size'; END`,
}

// The per-connection pragmas are python-diskcache's defaults (the engine's
// too): WAL, synchronous=NORMAL, 8192-page cache, 64 MiB mmap.
var rawPragmas = []string{
	`PRAGMA busy_timeout = 60000`,
	`PRAGMA cache_size = 8192`,
	`PRAGMA mmap_size = 67108864`,
	`PRAGMA synchronous = 1`,
}

const (
	rawGet = `SELECT value FROM Cache WHERE key = ? AND raw = 1`
	rawSet = `INSERT OR REPLACE INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, filename, value) VALUES (?, 1, ?, NULL, ?, 0, NULL, 0, 1, NULL, ?)`
	rawDel = `DELETE FROM Cache WHERE key = ? AND raw = 1`
)

var bg = context.Background()

type rawStore struct {
	path string
	h0   *rawHandle // the first worker's connection, used to set up
}

func openRaw(dir string, triggers bool) (store, error) {
	s := &rawStore{path: filepath.Join(dir, "cache.db")}
	sc, err := rawOpen(s.path)
	if err != nil {
		return nil, err
	}
	setup := []string{`PRAGMA auto_vacuum = 1`, `PRAGMA journal_mode = wal`}
	setup = append(setup, rawSchema...)
	if triggers {
		setup = append(setup, rawTriggers...)
	}
	for _, q := range setup {
		if err := rawExecScript(sc, q); err != nil {
			_ = sc.Close()
			return nil, err
		}
	}
	h, err := newRawHandle(sc)
	if err != nil {
		_ = sc.Close()
		return nil, err
	}
	if err := prepopulate(h); err != nil {
		_ = h.close()
		return nil, err
	}
	s.h0 = h
	return s, nil
}

func rawOpen(path string) (*sqlite3.SQLiteConn, error) {
	c, err := (&sqlite3.SQLiteDriver{}).Open("file:" + path)
	if err != nil {
		return nil, err
	}
	sc := c.(*sqlite3.SQLiteConn)
	for _, q := range rawPragmas {
		if err := rawExecScript(sc, q); err != nil {
			_ = sc.Close()
			return nil, err
		}
	}
	return sc, nil
}

// rawExecScript runs a statement and drains any row it answers with.
func rawExecScript(sc *sqlite3.SQLiteConn, q string) error {
	rows, err := sc.QueryContext(bg, q, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	dest := make([]driver.Value, len(rows.Columns()))
	for rows.Next(dest) == nil {
	}
	return rows.Close()
}

func (s *rawStore) handle(i int) (handle, error) {
	if i == 0 && s.h0 != nil {
		h := s.h0
		s.h0 = nil
		return h, nil
	}
	sc, err := rawOpen(s.path)
	if err != nil {
		return nil, err
	}
	return newRawHandle(sc)
}

func (s *rawStore) close() error {
	if s.h0 != nil {
		return s.h0.close()
	}
	return nil
}

// rawHandle is one connection with its prepared statements.
type rawHandle struct {
	sc                            *sqlite3.SQLiteConn
	stBegin, stCommit, stRollback *sqlite3.SQLiteStmt
	stGet, stSet, stDel           *sqlite3.SQLiteStmt
	args                          []driver.NamedValue
	dest                          []driver.Value
}

func newRawHandle(sc *sqlite3.SQLiteConn) (*rawHandle, error) {
	h := &rawHandle{sc: sc, args: make([]driver.NamedValue, 4), dest: make([]driver.Value, 1)}
	for _, p := range []struct {
		dst **sqlite3.SQLiteStmt
		q   string
	}{
		{&h.stBegin, `BEGIN IMMEDIATE`},
		{&h.stCommit, `COMMIT`},
		{&h.stRollback, `ROLLBACK`},
		{&h.stGet, rawGet},
		{&h.stSet, rawSet},
		{&h.stDel, rawDel},
	} {
		st, err := sc.Prepare(p.q)
		if err != nil {
			_ = h.close()
			return nil, fmt.Errorf("prepare %q: %w", p.q, err)
		}
		*p.dst = st.(*sqlite3.SQLiteStmt)
	}
	return h, nil
}

func (h *rawHandle) bind(vals ...driver.Value) []driver.NamedValue {
	h.args = h.args[:0]
	for i, v := range vals {
		h.args = append(h.args, driver.NamedValue{Ordinal: i + 1, Value: v})
	}
	return h.args
}

func (h *rawHandle) get(key []byte) (bool, error) {
	rows, err := h.stGet.QueryContext(bg, h.bind(key))
	if err != nil {
		return false, err
	}
	err = rows.Next(h.dest)
	cerr := rows.Close()
	if errors.Is(err, io.EOF) {
		return false, cerr
	}
	if err != nil {
		return false, err
	}
	_ = h.dest[0]
	return true, cerr
}

// write runs one statement in its own BEGIN IMMEDIATE transaction and
// returns the rows it changed.
func (h *rawHandle) write(st *sqlite3.SQLiteStmt, args []driver.NamedValue) (int64, error) {
	if _, err := h.stBegin.ExecContext(bg, nil); err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	r, err := st.ExecContext(bg, args)
	if err == nil {
		_, err = h.stCommit.ExecContext(bg, nil)
	}
	if err != nil {
		if !h.sc.AutoCommit() {
			_, _ = h.stRollback.ExecContext(bg, nil)
		}
		return 0, err
	}
	return r.RowsAffected()
}

func (h *rawHandle) set(key, value []byte) (bool, error) {
	now := float64(time.Now().UnixNano()) / 1e9
	_, err := h.write(h.stSet, h.bind(key, now, now, value))
	return err == nil, err
}

func (h *rawHandle) del(key []byte) (bool, error) {
	n, err := h.write(h.stDel, h.bind(key))
	return n > 0, err
}

func (h *rawHandle) close() error {
	var errs []error
	for _, st := range []*sqlite3.SQLiteStmt{h.stBegin, h.stCommit, h.stRollback, h.stGet, h.stSet, h.stDel} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	errs = append(errs, h.sc.Close())
	return errors.Join(errs...)
}
