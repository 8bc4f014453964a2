package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// ckWALBound is the write-ahead log bound per database that docs/crd.md
// states: about 8 MiB.
const ckWALBound = 8 << 20

// ckWriteOne stores a 1000-byte value under a key of its own: a few pages
// of log per write.
func ckWriteOne(t *testing.T, c *Cache, i int) {
	t.Helper()
	utSet(t, c, kv.TextKey(fmt.Sprintf("key-%06d", i)), kv.Bytes(utBig(1000, byte(i))), kv.SetOptions{})
}

func ckFileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// ckHold makes the background checkpoint wait, before each checkpoint it
// considers, until release is closed or the cache closes.
func ckHold(c *Cache) (release func()) {
	ch := make(chan struct{})
	c.ck.hook = func() {
		select {
		case <-ch:
		case <-c.done:
		}
	}
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// TestCommitDoesNotCheckpoint holds the background checkpoint back and
// writes until the log is past WALSizeLimit: no write copied a page into
// the database file (SQLite's automatic checkpoint would have, in the
// COMMIT that took the log past 256 pages). Once let go, the background
// checkpoint copies the log and restarts it, cut back to WALSizeLimit.
func TestCommitDoesNotCheckpoint(t *testing.T) {
	c := openBackground(t)
	release := ckHold(c)
	defer release()
	dbSize := ckFileSize(t, c.dbPath)
	i := 0
	for ; c.walSize() <= WALSizeLimit; i++ {
		ckWriteOne(t, c, i)
	}
	if got := ckFileSize(t, c.dbPath); got != dbSize {
		t.Fatalf("after %d writes (%d bytes of log) the database file went from %d to %d bytes: a write checkpointed",
			i, c.walSize(), dbSize, got)
	}
	if n := c.ck.inline.Load(); n != 0 {
		t.Fatalf("%d inline checkpoints below walInlineSize", n)
	}

	release()
	c.ck.wg.Wait() // nudged by the last write; nothing writes now
	if n := c.ck.background.Load(); n != 1 {
		t.Fatalf("%d background checkpoints, want 1", n)
	}
	if got := ckFileSize(t, c.dbPath); got <= dbSize {
		t.Fatalf("database file still %d bytes after the background checkpoint", got)
	}
	// The background restarted the log too (its header written and
	// synced, the file cut back), not the next write.
	if got := c.walSize(); got > WALSizeLimit {
		t.Fatalf("log of %d bytes after the background checkpoint; want it restarted and cut back to %d", got, WALSizeLimit)
	}
	ckWriteOne(t, c, i)
	for k := range i + 1 {
		utWant(t, c, kv.TextKey(fmt.Sprintf("key-%06d", k)), kv.Bytes(utBig(1000, byte(k))))
	}
}

// TestWALStaysBounded writes ten times the log bound, from four goroutines,
// and checks the -wal file after every write: it stays within the bound,
// once with background checkpoints running and once with them held back,
// where the writers' own checkpoints must bound it. Closing the cache
// removes the log, as before.
func TestWALStaysBounded(t *testing.T) {
	for _, held := range []bool{false, true} {
		t.Run(fmt.Sprintf("held=%v", held), func(t *testing.T) {
			c := openBackground(t)
			if held {
				defer ckHold(c)()
			}
			const writers, writes = 4, 5000
			var maxWAL atomic.Int64
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < writes; i += writers {
						if err := c.Set(utCtx, kv.TextKey(fmt.Sprintf("key-%06d", i)), kv.Bytes(utBig(1000, byte(i))), kv.SetOptions{}); err != nil {
							t.Error(err)
							return
						}
						size := c.walSize()
						for m := maxWAL.Load(); size > m && !maxWAL.CompareAndSwap(m, size); m = maxWAL.Load() {
						}
					}
				}()
			}
			wg.Wait()
			bg, inline := c.ck.background.Load(), c.ck.inline.Load()
			t.Logf("largest log %d bytes; %d background, %d inline checkpoints", maxWAL.Load(), bg, inline)
			if got := maxWAL.Load(); got > ckWALBound {
				t.Errorf("log grew to %d bytes; want at most %d", got, ckWALBound)
			}
			if held && (bg != 0 || inline == 0) {
				t.Errorf("background held back: %d background, %d inline checkpoints", bg, inline)
			}
			if !held && bg == 0 {
				t.Errorf("no background checkpoint")
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(c.Directory(), DBName+"-wal")); !os.IsNotExist(err) {
				t.Errorf("log still there after Close: %v", err)
			}
		})
	}
}

// TestSustainedWritesCheckpointFewTimesPerCycle writes from one goroutine
// without a pause, so that frames keep coming while the background
// checkpoint copies and the log does not restart after a pass: the next
// pass waits for the log to grow. Passes that each copied a few new frames
// and synced both files, one per commit until the log reached
// walRestartSize, are what this guards against.
func TestSustainedWritesCheckpointFewTimesPerCycle(t *testing.T) {
	c := openBackground(t)
	var looks atomic.Int64 // background goroutine's looks at the log
	c.ck.hook = func() { looks.Add(1) }
	restarts, last := 0, int64(0)
	for i := 0; restarts < 6; i++ {
		utSet(t, c, kv.TextKey(fmt.Sprintf("key-%03d", i%500)), kv.Bytes(utBig(1000, byte(i))), kv.SetOptions{})
		size := c.walSize()
		if size < last { // the log restarted, and its file was cut back
			restarts++
		}
		last = size
		if i > 200_000 {
			t.Fatalf("the log restarted %d times in %d writes", restarts, i)
		}
	}
	bg, inline := c.ck.background.Load(), c.ck.inline.Load()
	t.Logf("%d log restarts: %d background passes, %d inline, %d looks", restarts, bg, inline, looks.Load())
	if bg > 4*int64(restarts)+2 {
		t.Errorf("%d background checkpoints for %d log restarts; want at most 4 per restart", bg, restarts)
	}
	// Nor does every commit between passes start a goroutine to look.
	if n := looks.Load(); n > 8*int64(restarts)+4 {
		t.Errorf("the background looked at the log %d times for %d log restarts; want at most 8 per restart", n, restarts)
	}
}

// TestCheckpointerEndsWithClose closes a cache while its background
// checkpoint runs and has been nudged again: once Close returns, the
// goroutine has ended, and a nudge after Close starts none.
func TestCheckpointerEndsWithClose(t *testing.T) {
	c := openBackground(t)
	entered := make(chan struct{})
	never := make(chan struct{})
	t.Cleanup(func() { close(never) }) // frees a goroutine Close left behind
	var calls atomic.Int32
	c.ck.hook = func() {
		if calls.Add(1) == 1 {
			close(entered)
			<-c.done
			return
		}
		<-never // a checkpoint looked for after Close: the test fails
	}
	i := 0
	for ; c.walSize() <= WALSizeLimit; i++ {
		ckWriteOne(t, c, i)
	}
	<-entered
	ckWriteOne(t, c, i) // nudges the running checkpoint: look again
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	running := func() bool {
		c.ck.mu.Lock()
		defer c.ck.mu.Unlock()
		return c.ck.running
	}
	if running() {
		t.Fatalf("background checkpoint still running after Close (%d checkpoints looked for)", calls.Load())
	}
	c.nudgeCheckpointer()
	if running() {
		t.Fatal("a nudge after Close started a background checkpoint")
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d checkpoints looked for, want 1", n)
	}
}

// openBackground opens a cache with background checkpoints in a temporary
// directory.
func openBackground(t *testing.T) *Cache {
	t.Helper()
	c, err := Open(utCtx, t.TempDir(), Options{Now: newClock().Now, BackgroundCheckpoints: true})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestAutomaticCheckpointBoundsTheLog: without background checkpoints,
// SQLite's automatic checkpoint keeps the log near 1000 pages.
func TestAutomaticCheckpointBoundsTheLog(t *testing.T) {
	c, _ := openTest(t, nil)
	const bound = (walAutoCheckpointPages + 100) * (4096 + 24)
	for i := range 3000 {
		ckWriteOne(t, c, i)
		if st, err := os.Stat(c.walPath); err == nil && st.Size() > bound {
			t.Fatalf("after %d writes the log is %d bytes, over %d", i+1, st.Size(), bound)
		}
	}
	if n := c.ck.background.Load() + c.ck.inline.Load(); n != 0 {
		t.Fatalf("%d checkpoints of checkpoint.go ran without BackgroundCheckpoints", n)
	}
}
