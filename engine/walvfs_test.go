package engine

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// TestExclusiveLogFramesAreWrittenWhole writes through an exclusive cache,
// whose log gets each commit's frames in one write (walvfs.c), and checks
// that the log is SQLite's own: a copy of the files taken while the cache
// is open (the state a crash would leave) opens through SQLite's default
// VFS, which recovers the database from the log, with every committed
// write in it and its integrity check clean. Besides small commits, it
// makes one larger than what walvfs.c holds for one write, and one that
// spills pages to the log before it commits (a page cache of 16 pages),
// after which SQLite rewrites the checksums of frames it wrote before.
func TestExclusiveLogFramesAreWrittenWhole(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(utCtx, dir, Options{Exclusive: true,
		Settings: map[settings.Name]any{settings.NameSQLiteCacheSize: 16}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const writes = 50
	value := func(i int) kv.Value { return kv.Bytes(bytes.Repeat([]byte{byte('a' + i%26)}, 100+i*37)) }
	frames0, writes0 := frameWrites()
	for i := range writes {
		utSet(t, c, kv.TextKey(fmt.Sprintf("key%d", i)), value(i), kv.SetOptions{})
	}
	// One write per commit, and commits of more than one frame.
	frames, logWrites := frameWrites()
	if logWrites-writes0 != writes || frames-frames0 <= writes {
		t.Errorf("%d commits wrote %d log frames in %d writes; want one write each, and more frames than commits",
			writes, frames-frames0, logWrites-writes0)
	}

	// A transaction of more than walvfs.c holds for one write (60 KiB),
	// and one of more pages than the page cache holds: its frames go out
	// in writes that must stay below what SQLite's unix VFS writes in one
	// call (128 KiB).
	big := func(tx *Tx, prefix string, n int) error {
		for i := range n {
			if err := tx.Set(kv.TextKey(fmt.Sprintf("%s%d", prefix, i)), value(i), kv.SetOptions{}); err != nil {
				return err
			}
		}
		return nil
	}
	if err := c.Transact(utCtx, func(tx *Tx) error { return big(tx, "big", 600) }); err != nil {
		t.Fatal(err)
	}
	if err := c.Transact(utCtx, func(tx *Tx) error {
		if err := big(tx, "spill", 300); err != nil {
			return err
		}
		// Pages written to the log before this, spilled, are written again.
		return big(tx, "big", 600)
	}); err != nil {
		t.Fatal(err)
	}

	crashed := t.TempDir()
	for _, name := range []string{DBName, DBName + "-wal"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == DBName+"-wal" && len(b) == 0 {
			t.Fatal("the log is empty: the writes were checkpointed, nothing is left to recover")
		}
		if err := os.WriteFile(filepath.Join(crashed, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Open(utCtx, crashed, Options{})
	if err != nil {
		t.Fatalf("open the copy: %v", err)
	}
	defer r.Close()
	for i := range writes {
		utWant(t, r, kv.TextKey(fmt.Sprintf("key%d", i)), value(i))
	}
	for i := range 600 {
		utWant(t, r, kv.TextKey(fmt.Sprintf("big%d", i)), value(i))
	}
	for i := range 300 {
		utWant(t, r, kv.TextKey(fmt.Sprintf("spill%d", i)), value(i))
	}
	cn, err := r.acquire(utCtx)
	if err != nil {
		t.Fatal(err)
	}
	defer r.release(cn)
	row, ok, err := cn.queryRow("PRAGMA integrity_check", 1)
	if err != nil || !ok || row[0] != "ok" {
		t.Errorf("integrity_check of the recovered copy: %v, %v, %v", row, ok, err)
	}
}

// TestExclusiveLogSizeIsTheFiles checks the log size an exclusive cache
// reads after each commit without a stat (walvfs.c keeps it) against the
// file's, while writes grow the log past WALSizeLimit and background
// checkpoints restart it and cut the file back.
func TestExclusiveLogSizeIsTheFiles(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(utCtx, dir, Options{Exclusive: true, BackgroundCheckpoints: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	value := kv.Bytes(bytes.Repeat([]byte("v"), 20<<10))
	largest := int64(0)
	for i := range 400 {
		utSet(t, c, kv.TextKey(fmt.Sprintf("key%d", i%150)), value, kv.SetOptions{})
		c.ck.wg.Wait() // the background checkpoint, if one started, has ended
		got, ok := logSize(c.logName)
		st, err := os.Stat(c.walPath)
		if err != nil {
			t.Fatal(err)
		}
		if !ok || got != st.Size() {
			t.Fatalf("after write %d: the log's size kept by the VFS is %d (known: %v), the file's %d", i, got, ok, st.Size())
		}
		largest = max(largest, got)
	}
	// The write that took the log past WALSizeLimit had it restarted and
	// cut back to WALSizeLimit (journal_size_limit) before its check.
	if c.ck.background.Load() == 0 || largest < WALSizeLimit {
		t.Errorf("the log reached %d bytes and %d background checkpoints ran: the test did not restart it", largest, c.ck.background.Load())
	}
}

// TestWritesKeepTheirConnectionsPages: SQLite drops a connection's page
// cache when it begins a transaction after another connection has
// committed. A write runs on the connection of the last one when that is
// idle, even when reads have left another connection on top of the idle
// stack, so it finds the pages it changes in memory and reads nothing from
// the log.
func TestWritesKeepTheirConnectionsPages(t *testing.T) {
	c, err := Open(utCtx, t.TempDir(), Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key := kv.TextKey("key")
	utSet(t, c, key, kv.Bytes([]byte("first")), kv.SetOptions{})
	c.idleMu.Lock()
	writer := c.lastWriter
	c.idleMu.Unlock()
	// Two reads at once: the second opens a connection, which goes back
	// on top.
	a, b := utTwoConns(t, c)
	if a != writer || b == writer {
		t.Fatalf("reads got connections %p and %p, want the writer's %p and another", a, b, writer)
	}
	c.release(a)
	c.release(b)

	before := logReads()
	utSet(t, c, key, kv.Bytes([]byte("second")), kv.SetOptions{})
	if n := logReads() - before; n != 0 {
		t.Errorf("the second write read %d pages from the log, want 0: they were in its connection's memory", n)
	}
	c.idleMu.Lock()
	last := c.lastWriter
	c.idleMu.Unlock()
	if last != writer {
		t.Errorf("the second write ran on connection %p, want the first's %p", last, writer)
	}
	utWant(t, c, key, kv.Bytes([]byte("second")))
}

// TestExclusiveLogRolledBackFramesStayOut has one connection spill a
// transaction's pages to the log (a 16-page cache) and roll it back, then
// another connection commit a row where those frames were: the frames the
// first one held back for one write are stale, and must not reach the file
// when it next touches the log (here, on close), over the committed ones.
func TestExclusiveLogRolledBackFramesStayOut(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(utCtx, dir, Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	a, b := utTwoConns(t, c)
	run := func(cn *conn, q string, args ...any) {
		t.Helper()
		if _, err := cn.exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	run(a, "CREATE TABLE scratch (v BLOB)")
	// Every committed page in the database file, none in the log: the
	// rollback below then has no reason to read the log (which would send
	// what is held before the other connection writes).
	if _, _, err := a.queryRow("PRAGMA wal_checkpoint(TRUNCATE)", 3); err != nil {
		t.Fatal(err)
	}
	if err := a.pragma("cache_size", int64(16)); err != nil {
		t.Fatal(err)
	}
	run(a, "BEGIN IMMEDIATE")
	// About 25 pages: a few spill, fewer than walvfs.c holds for one write.
	for i := range 100 {
		run(a, "INSERT INTO scratch VALUES (?)", bytes.Repeat([]byte{byte(i)}, 1000))
	}
	run(a, "ROLLBACK")
	run(b, "BEGIN IMMEDIATE")
	run(b, "INSERT INTO scratch VALUES ('committed')")
	run(b, "COMMIT")
	c.release(b)
	c.release(a)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	r, err := Open(utCtx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cn, err := r.acquire(utCtx)
	if err != nil {
		t.Fatal(err)
	}
	defer r.release(cn)
	if n, err := cn.queryInt("SELECT count(*) FROM scratch WHERE v = 'committed'"); err != nil || n != 1 {
		t.Errorf("committed rows: %d, %v; want 1", n, err)
	}
	row, ok, err := cn.queryRow("PRAGMA integrity_check", 1)
	if err != nil || !ok || row[0] != "ok" {
		t.Errorf("integrity_check: %v, %v, %v", row, ok, err)
	}
}

// utTwoConns takes two connections of c at once (distinct, then); the
// caller releases them.
func utTwoConns(t *testing.T, c *Cache) (a, b *conn) {
	t.Helper()
	a, err := c.acquire(utCtx)
	if err != nil {
		t.Fatal(err)
	}
	if b, err = c.acquire(utCtx); err != nil {
		c.release(a)
		t.Fatal(err)
	}
	return a, b
}
