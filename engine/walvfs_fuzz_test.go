package engine

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// FuzzExclusiveLog runs a program of write transactions over two
// connections of one exclusive database (whose log walvfs.c writes): each
// commits or rolls back (some partly, to a savepoint), changes up to 60
// rows of up to 24 KiB with a page cache of 16 pages (so that large ones
// spill pages to the log before they end), and between them come
// checkpoints and reads. After each step a copy of the files, what a
// crash would leave, must recover to exactly the rows committed so far, and
// so must the files once both connections are closed.
//
// Each input byte pair is a step: the first byte's low bit picks the
// connection, the next two bits the kind of step, the rest its size; the
// second byte seeds the rows' contents.
func FuzzExclusiveLog(f *testing.F) {
	// A step's byte is rows/2<<3 | kind<<1 | connection (kinds: 0 commit, 1
	// roll back, 2 checkpoint or read by seed%3, 3 savepoint rolled back
	// inside a commit). testdata/fuzz/FuzzExclusiveLog has more.
	f.Add([]byte{0xa0, 200, 0x04, 0, 0xa3, 100, 0x09, 3}) // commits of more than 128 KiB, a truncation, a large rollback, a commit on the other connection
	f.Add([]byte{0x56, 9, 0x57, 40, 0x05, 2, 0x56, 120})  // savepoints rolled back inside commits, a read
	f.Add([]byte{0x04, 0, 0x52, 30, 0x09, 1, 0x05, 1})    // a spill that rolls back into an empty log, a commit on the other connection, a checkpoint
	f.Fuzz(func(t *testing.T, program []byte) {
		if len(program) > 24 {
			program = program[:24]
		}
		dir := t.TempDir()
		c, err := Open(utCtx, dir, Options{Exclusive: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var conns [2]*conn
		release := func() {
			for i, cn := range conns {
				if cn != nil {
					c.release(cn)
					conns[i] = nil
				}
			}
		}
		defer release()
		conns[0], conns[1] = utTwoConns(t, c)
		exec := func(cn *conn, q string, args ...any) {
			t.Helper()
			if _, err := cn.exec(q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		exec(conns[0], "CREATE TABLE IF NOT EXISTS fz (id INTEGER PRIMARY KEY, v BLOB)")
		for _, cn := range conns {
			if err := cn.pragma("cache_size", int64(16)); err != nil {
				t.Fatal(err)
			}
		}
		committed := map[int64][]byte{}
		row := func(id int64, seed byte) []byte {
			n := int(seed)*97%(24<<10) + 1
			return bytes.Repeat([]byte{byte(id), seed}, n/2+1)[:n]
		}
		for step := 0; step+1 < len(program); step += 2 {
			op, seed := program[step], program[step+1]
			cn := conns[op&1]
			size := int(op>>3) * 2 // rows per transaction, up to 62
			switch op >> 1 & 3 {
			case 0, 1: // a transaction: commit (0) or roll back (1)
				exec(cn, "BEGIN IMMEDIATE")
				pending := map[int64][]byte{}
				for i := range size {
					id := int64((int(seed) + i*7) % 64)
					v := row(id, seed+byte(i))
					exec(cn, "INSERT OR REPLACE INTO fz VALUES (?, ?)", id, v)
					pending[id] = v
				}
				if op>>1&3 == 0 {
					exec(cn, "COMMIT")
					for id, v := range pending {
						committed[id] = v
					}
				} else {
					exec(cn, "ROLLBACK")
				}
			case 2: // a checkpoint, or a read of every row
				switch seed % 3 {
				case 0:
					if _, _, err := cn.queryRow("PRAGMA wal_checkpoint(TRUNCATE)", 3); err != nil {
						t.Fatal(err)
					}
				case 1:
					if _, _, err := cn.queryRow("PRAGMA wal_checkpoint(PASSIVE)", 3); err != nil {
						t.Fatal(err)
					}
				default:
					if _, err := cn.queryRows("SELECT id, v FROM fz", 2); err != nil {
						t.Fatal(err)
					}
				}
			case 3: // a commit with a savepoint rolled back inside
				exec(cn, "BEGIN IMMEDIATE")
				exec(cn, "SAVEPOINT sp")
				for i := range size {
					id := int64((int(seed) + i*5) % 64)
					exec(cn, "INSERT OR REPLACE INTO fz VALUES (?, ?)", id, row(id, ^seed+byte(i)))
				}
				exec(cn, "ROLLBACK TO sp")
				exec(cn, "RELEASE sp")
				id := int64(seed % 64)
				v := row(id, seed)
				exec(cn, "INSERT OR REPLACE INTO fz VALUES (?, ?)", id, v)
				exec(cn, "COMMIT")
				committed[id] = v
			}
			fzCheckLog(t, crashCopy(t, dir), committed, fmt.Sprintf("after step %d", step/2))
		}
		release()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		fzCheckLog(t, dir, committed, "after close")
	})
}

// crashCopy copies the database and its log, as a crash would leave them,
// into a new directory.
func crashCopy(t *testing.T, dir string) string {
	t.Helper()
	out := t.TempDir()
	for _, name := range []string{DBName, DBName + "-wal"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// fzCheckLog opens dir through SQLite's default VFS, which recovers the
// log, and compares table fz with want.
func fzCheckLog(t *testing.T, dir string, want map[int64][]byte, when string) {
	t.Helper()
	cn, err := openConn(filepath.Join(dir, DBName), 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.close()
	rows, err := cn.queryRows("SELECT id, v FROM fz", 2)
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	got := map[int64][]byte{}
	for _, r := range rows {
		got[r[0].(int64)] = r[1].([]byte)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d rows recovered, want %d", when, len(got), len(want))
	}
	for id, v := range want {
		if !bytes.Equal(got[id], v) {
			t.Fatalf("%s: row %d recovered with %d bytes, want the %d committed", when, id, len(got[id]), len(v))
		}
	}
	if r, ok, err := cn.queryRow("PRAGMA integrity_check", 1); err != nil || !ok || r[0] != "ok" {
		t.Fatalf("%s: integrity_check: %v, %v, %v", when, r, ok, err)
	}
}
