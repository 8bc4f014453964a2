package engine

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"iter"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// fakeClock is a settable clock for expiry tests.
type fakeClock struct{ t time.Time }

func (f *fakeClock) Now() time.Time          { return f.t }
func (f *fakeClock) Advance(d time.Duration) { f.t = f.t.Add(d) }

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

// openTest opens a cache in a temporary directory with a fake clock.
func openTest(t *testing.T, overrides map[settings.Name]any) (*Cache, *fakeClock) {
	t.Helper()
	clk := newClock()
	c, err := Open(context.Background(), t.TempDir(), Options{Settings: overrides, Now: clk.Now})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, clk
}

func TestSetGetRoundTrip(t *testing.T) {
	ctx := context.Background()
	c, _ := openTest(t, nil)
	if err := c.Set(ctx, kv.TextKey("a"), kv.Int(5), kv.SetOptions{Tag: kv.TextKey("t")}); err != nil {
		t.Fatal(err)
	}
	it, ok, err := c.Get(ctx, kv.TextKey("a"), GetOptions{})
	if err != nil || !ok {
		t.Fatalf("Get = %v, %v", ok, err)
	}
	if !it.Value.Equal(kv.Int(5)) || !it.Tag.Equal(kv.TextKey("t")) || it.ExpireTime != 0 {
		t.Fatalf("Get = %+v", it)
	}
}

// Helpers shared by the unit tests of this package (ut prefix: other test
// files of the package are written by other people).

var utCtx = context.Background()

// utOpenAt opens (or reopens) the cache in dir with a given clock.
func utOpenAt(t *testing.T, dir string, clk *fakeClock, overrides map[settings.Name]any) *Cache {
	t.Helper()
	c, err := Open(utCtx, dir, Options{Settings: overrides, Now: clk.Now})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func utSet(t *testing.T, c *Cache, k kv.Key, v kv.Value, opts kv.SetOptions) {
	t.Helper()
	if err := c.Set(utCtx, k, v, opts); err != nil {
		t.Fatalf("Set(%v): %v", k, err)
	}
}

// utGet returns the item under k, failing the test on an error.
func utGet(t *testing.T, c *Cache, k kv.Key) (Item, bool) {
	t.Helper()
	it, ok, err := c.Get(utCtx, k, GetOptions{})
	if err != nil {
		t.Fatalf("Get(%v): %v", k, err)
	}
	return it, ok
}

// utWant fails unless k holds v.
func utWant(t *testing.T, c *Cache, k kv.Key, v kv.Value) {
	t.Helper()
	it, ok := utGet(t, c, k)
	if !ok {
		t.Fatalf("Get(%v): miss, want %v", k, v)
	}
	if !it.Value.Equal(v) {
		t.Fatalf("Get(%v) = %v, want %v", k, it.Value, v)
	}
}

// utMiss fails unless k is a miss.
func utMiss(t *testing.T, c *Cache, k kv.Key) {
	t.Helper()
	if it, ok := utGet(t, c, k); ok {
		t.Fatalf("Get(%v) = %v, want a miss", k, it.Value)
	}
}

func utLen(t *testing.T, c *Cache) int64 {
	t.Helper()
	n, err := c.Len(utCtx)
	if err != nil {
		t.Fatalf("Len: %v", err)
	}
	return n
}

// utRawDB opens the cache database directly, beside the engine.
func utRawDB(t *testing.T, c *Cache) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(c.Directory(), DBName)+"?_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// utExec runs a statement on the database directly.
func utExec(t *testing.T, c *Cache, q string, args ...any) {
	t.Helper()
	db := utRawDB(t, c)
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	_ = db.Close()
}

// utRow is a Cache row as read directly from the database.
type utRow struct {
	rowid       int64
	storeTime   float64
	expireTime  sql.NullFloat64
	accessTime  float64
	accessCount int64
	tag         any
	size        int64
	mode        int64
	filename    sql.NullString
	value       any
}

// utRowOf reads the row of k; ok is false when there is none.
func utRowOf(t *testing.T, c *Cache, k kv.Key) (utRow, bool) {
	t.Helper()
	db := utRawDB(t, c)
	defer db.Close()
	dbKey, raw := dbKey(k)
	var r utRow
	err := db.QueryRow(`SELECT rowid, store_time, expire_time, access_time, access_count, tag, size, mode, filename, value FROM Cache WHERE key = ? AND raw = ?`, dbKey, raw).
		Scan(&r.rowid, &r.storeTime, &r.expireTime, &r.accessTime, &r.accessCount, &r.tag, &r.size, &r.mode, &r.filename, &r.value)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false
	}
	if err != nil {
		t.Fatalf("read row of %v: %v", k, err)
	}
	return r, true
}

func utMustRow(t *testing.T, c *Cache, k kv.Key) utRow {
	t.Helper()
	r, ok := utRowOf(t, c, k)
	if !ok {
		t.Fatalf("no row for %v", k)
	}
	return r
}

// utQueryInt runs a one-integer query directly on the database.
func utQueryInt(t *testing.T, c *Cache, q string, args ...any) int64 {
	t.Helper()
	db := utRawDB(t, c)
	defer db.Close()
	var n int64
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// utValFiles lists the value files under the cache directory, relative and
// with forward slashes, sorted.
func utValFiles(t *testing.T, c *Cache) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(c.Directory(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".val") {
			rel, _ := filepath.Rel(c.Directory(), p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// utFileOf returns the full path of k's value file.
func utFileOf(t *testing.T, c *Cache, k kv.Key) string {
	t.Helper()
	r := utMustRow(t, c, k)
	if !r.filename.Valid {
		t.Fatalf("%v has no value file", k)
	}
	return filepath.Join(c.Directory(), filepath.FromSlash(r.filename.String))
}

// utKeys collects an iteration.
func utKeys(t *testing.T, seq iter.Seq2[kv.Key, error]) []kv.Key {
	t.Helper()
	var out []kv.Key
	for k, err := range seq {
		if err != nil {
			t.Fatalf("iterate: %v", err)
		}
		out = append(out, k)
	}
	return out
}

func utSameKeys(t *testing.T, got, want []kv.Key) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("keys = %v, want %v", got, want)
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			t.Fatalf("keys = %v, want %v", got, want)
		}
	}
}

// utHoldWriter starts a write transaction on c that holds c's writer
// until the returned release is called; release returns its error.
func utHoldWriter(c *Cache) (release func() error) {
	held, end := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- c.Transact(utCtx, func(tx *Tx) error {
			close(held)
			<-end
			return nil
		})
	}()
	<-held
	return func() error { close(end); return <-done }
}

func utBig(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
