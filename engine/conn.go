package engine

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// conn is one SQLite connection with its prepared statements. The engine
// talks to the driver directly rather than through database/sql: it keeps
// per-connection pragma state, controls BEGIN IMMEDIATE itself and avoids the
// pool and cancellation goroutines database/sql adds to every query, which
// would cost more than the query itself on the hot path.
type conn struct {
	sc    *sqlite3.SQLiteConn
	stmts map[string]*sqlite3.SQLiteStmt
	gen   uint64    // pragma generation applied to this connection
	idle  time.Time // when it was last put back in the idle pool
	args  []driver.NamedValue
	dest  []driver.Value
}

// Statements run with a background context: cancellation is honoured where
// the engine waits (for a connection, for the write lock), and mattn's
// driver would otherwise start a goroutine per query to watch the context.
var noCancel = context.Background()

// openConn opens a connection that waits up to busy for locks. Opening
// reads the schema, which another process may briefly lock (WAL recovery
// by the first connection after all were closed): without a wait that
// fails at once with "database is locked". exclusive opens it through
// SQLite's unix-excl VFS (Options.Exclusive), by way of frameVFS.
func openConn(path string, busy time.Duration, exclusive bool) (*conn, error) {
	d := &sqlite3.SQLiteDriver{}
	dsn := "file:" + uriPath(path) + "?_busy_timeout=" + strconv.FormatInt(busy.Milliseconds(), 10)
	if exclusive {
		if err := registerFrameVFS(); err != nil {
			return nil, err
		}
		dsn += "&vfs=" + frameVFS
	}
	c, err := d.Open(dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &conn{sc: c.(*sqlite3.SQLiteConn), stmts: map[string]*sqlite3.SQLiteStmt{}}, nil
}

// uriPath escapes a file path for an SQLite "file:" URI, where '%' starts an
// escape, '?' the query and '#' the fragment: unescaped, a directory named
// "a?b" would open "a", and "%2e%2e" would climb out of its parent.
func uriPath(path string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
}

func (c *conn) close() error {
	for _, s := range c.stmts {
		_ = s.Close()
	}
	c.stmts = nil
	return c.sc.Close()
}

func (c *conn) stmt(q string) (*sqlite3.SQLiteStmt, error) {
	if s, ok := c.stmts[q]; ok {
		return s, nil
	}
	s, err := c.sc.Prepare(q)
	if err != nil {
		return nil, fmt.Errorf("prepare %q: %w", q, err)
	}
	st := s.(*sqlite3.SQLiteStmt)
	c.stmts[q] = st
	return st, nil
}

func (c *conn) bind(args []any) []driver.NamedValue {
	c.args = c.args[:0]
	for i, a := range args {
		c.args = append(c.args, driver.NamedValue{Ordinal: i + 1, Value: a})
	}
	return c.args
}

// exec runs a statement and returns the number of rows it changed.
func (c *conn) exec(q string, args ...any) (int64, error) {
	r, err := c.run(q, args)
	if err != nil {
		return 0, err
	}
	return r.RowsAffected()
}

// insert runs an INSERT and returns the new row's rowid.
func (c *conn) insert(q string, args ...any) (int64, error) {
	r, err := c.run(q, args)
	if err != nil {
		return 0, err
	}
	return r.LastInsertId()
}

// run executes q through the statement cache.
func (c *conn) run(q string, args []any) (driver.Result, error) {
	s, err := c.stmt(q)
	if err != nil {
		return nil, err
	}
	return s.ExecContext(noCancel, c.bind(args))
}

// execCached runs an argument-less statement through the statement cache
// (BEGIN, COMMIT, ROLLBACK on every write).
func (c *conn) execCached(q string) error {
	_, err := c.exec(q)
	return err
}

// execScript runs statements that take no arguments and are not cached.
func (c *conn) execScript(q string) error {
	_, err := c.sc.ExecContext(noCancel, q, nil)
	return err
}

// queryRow runs q and returns its first row, or ok=false when it has none.
// The returned slice is reused by the next query on this connection.
func (c *conn) queryRow(q string, ncol int, args ...any) ([]driver.Value, bool, error) {
	s, err := c.stmt(q)
	if err != nil {
		return nil, false, err
	}
	rows, err := s.QueryContext(noCancel, c.bind(args))
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	if cap(c.dest) < ncol {
		c.dest = make([]driver.Value, ncol)
	}
	dest := c.dest[:ncol]
	if err := rows.Next(dest); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return dest, true, nil
}

// queryRows runs q and returns all rows (each a fresh slice).
func (c *conn) queryRows(q string, ncol int, args ...any) ([][]driver.Value, error) {
	s, err := c.stmt(q)
	if err != nil {
		return nil, err
	}
	rows, err := s.QueryContext(noCancel, c.bind(args))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]driver.Value
	for {
		dest := make([]driver.Value, ncol)
		if err := rows.Next(dest); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		out = append(out, dest)
	}
}

// queryInt returns the first column of the first row as an integer.
func (c *conn) queryInt(q string, args ...any) (int64, error) {
	row, ok, err := c.queryRow(q, 1, args...)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%q returned no row", q)
	}
	return toInt(row[0]), nil
}

// pragma sets a pragma. Values are validated integers or journal mode names,
// never user text, because PRAGMA takes no bound parameters.
func (c *conn) pragma(name string, value any) error {
	var v string
	switch t := value.(type) {
	case int64:
		v = strconv.FormatInt(t, 10)
	case string:
		v = t
	default:
		return fmt.Errorf("pragma %s: unsupported value %v", name, value)
	}
	s, err := c.sc.Prepare("PRAGMA " + name + " = " + v)
	if err != nil {
		return fmt.Errorf("pragma %s = %s: %w", name, v, err)
	}
	defer s.Close()
	rows, err := s.(*sqlite3.SQLiteStmt).QueryContext(noCancel, nil)
	if err != nil {
		return fmt.Errorf("pragma %s = %s: %w", name, v, err)
	}
	// Some pragmas (journal_mode) answer with a row; drain it.
	dest := make([]driver.Value, len(rows.Columns()))
	for rows.Next(dest) == nil {
	}
	return rows.Close()
}

func toInt(v driver.Value) int64 {
	switch t := v.(type) {
	case int64:
		return t
	case float64:
		return int64(t)
	case bool:
		return boolInt(t)
	case string:
		n, _ := strconv.ParseInt(t, 10, 64)
		return n
	}
	return 0
}

func toFloat(v driver.Value) (float64, bool) {
	switch t := v.(type) {
	case int64:
		return float64(t), true
	case float64:
		return t, true
	}
	return 0, false
}

// IsCorruptDatabase reports whether err is SQLite finding a database file
// damaged ("database disk image is malformed") or not a database at all.
func IsCorruptDatabase(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.Code == sqlite3.ErrCorrupt || se.Code == sqlite3.ErrNotADB
	}
	return false
}

// IsNoSpace reports whether err is a write failing for lack of space: the
// file system is full (or the quota used up), or SQLite says its database
// or journal cannot grow.
func IsNoSpace(err error) bool {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	var se sqlite3.Error
	return errors.As(err, &se) && se.Code == sqlite3.ErrFull
}

func isBusy(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked
	}
	return false
}
