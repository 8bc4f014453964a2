package engine

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// TestExclusiveKeepsOtherProcessesOut opens a cache with Options.Exclusive:
// while it is open, even with no connection in use, another process can
// neither read nor write the database (SQLite in Python fails with
// "database is locked"), no -shm file exists, and once it is closed
// python-diskcache reads what it wrote, the last write still in the log
// included.
func TestExclusiveKeepsOtherProcessesOut(t *testing.T) {
	foRequirePython(t)
	dir := t.TempDir()
	c, err := Open(context.Background(), dir, Options{Exclusive: true, BackgroundCheckpoints: true, HotBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	utSet(t, c, kv.TextKey("before"), kv.Bytes([]byte("one")), kv.SetOptions{})
	if _, ok := utGet(t, c, kv.TextKey("before")); !ok {
		t.Fatal("own write not read back")
	}

	// With no connection in use the lock stays: it is the process's, not
	// a transaction's.
	if n := c.CloseIdle(0); n == 0 {
		t.Fatal("CloseIdle closed no connection")
	}

	db := filepath.Join(dir, DBName)
	const peek = `
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=0.1)
try:
    n = con.execute("SELECT count(*) FROM Cache").fetchone()[0]
    print("read", n)
except sqlite3.OperationalError as exc:
    print("error", exc)
`
	out, err := exec.Command(foPython, "-c", peek, db).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "error database is locked" {
		t.Fatalf("another process reading an exclusive cache's database: %q, want %q", got, "error database is locked")
	}
	if _, err := os.Stat(db + "-shm"); !os.IsNotExist(err) {
		t.Fatalf("stat %s-shm: %v; want no such file (the WAL index is in memory)", db, err)
	}

	utSet(t, c, kv.TextKey("last"), kv.Bytes([]byte("two")), kv.SetOptions{})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	const read = `
import diskcache, sys
c = diskcache.Cache(sys.argv[1], timeout=1)
print(c.get("before"), c.get("last"), len(c))
`
	out, err = exec.Command(foPython, "-c", read, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("python-diskcache after Close: %v\n%s", err, out)
	}
	if want := []byte("b'one' b'two' 2\n"); !bytes.Equal(out, want) {
		t.Fatalf("python-diskcache after Close read %q, want %q", out, want)
	}
}
