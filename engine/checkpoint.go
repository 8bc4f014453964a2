package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// With Options.BackgroundCheckpoints, WAL checkpoints run off the write
// path (without, SQLite's automatic checkpoint runs every 1000 pages of
// log, as python-diskcache's does). SQLite's automatic checkpoint
// (wal_autocheckpoint) runs inside the COMMIT of whichever write takes the
// log past its threshold: that write copies the log into the database and
// fsyncs both while its caller waits. Connections then turn it off; after
// each commit the writer looks at the size of the -wal file (one stat) and,
// once the log has grown past WALSizeLimit, wakes a background checkpoint
// that no request waits for; once the log is all copied, the background
// restarts it too (restartLog). The -wal file only grows past WALSizeLimit
// when the log does: journal_size_limit cuts it back to WALSizeLimit when
// the log restarts, and a restarted log is written from its start again.
//
// The log stays bounded when background checkpoints cannot keep up (writes
// arriving while one runs keep the log from ever being fully copied, so it
// never restarts; or readers pin old frames): the next pass then waits for
// the log to grow (nextPass), and past walRestartSize the
// background checkpoint ends with a RESTART, which holds writers off for
// the few frames copied last and waits (briefly) for readers; past
// walInlineSize the writer itself checkpoints after its commit (once the
// background one, if one runs, is done), while no other write of this
// process can commit: writes then wait for checkpoints, as they did for
// SQLite's automatic one.
const (
	// WALSizeLimit is the write-ahead log size past which a checkpoint is
	// due, and what journal_size_limit cuts the -wal file back to.
	WALSizeLimit = 4 << 20
	// walAutoCheckpointPages is wal_autocheckpoint without
	// Options.BackgroundCheckpoints: SQLite's default, which python-diskcache
	// keeps (a log of about 4 MiB with 4 KiB pages).
	walAutoCheckpointPages = 1000
	// walRestartSize: the background checkpoint ends with a RESTART.
	walRestartSize = WALSizeLimit * 3 / 2
	// walInlineSize: the writer checkpoints after its commit.
	walInlineSize = WALSizeLimit * 7 / 4
	// walRestartWait bounds how long a RESTART waits for the write lock
	// and for readers of old frames; it holds writers off meanwhile.
	walRestartWait = 10 * time.Millisecond
)

// checkpointer runs a Cache's background checkpoints. No goroutine exists
// while none is due (a process may hold thousands of idle databases): the
// first nudge starts one, which checkpoints until no nudge came in while it
// ran, then ends. Close waits for it.
type checkpointer struct {
	mu      sync.Mutex
	running bool // a goroutine is checkpointing
	again   bool // nudged while running: look again before ending
	// restarting: the goroutine's own write (restartLog) runs, whose
	// nudge does not count.
	restarting bool
	// nextPass: the log size below which the background does not copy
	// again (0: none). A pass that leaves the log unrestarted (writes kept
	// coming while it copied) sets it, so that the next pass waits for the
	// log to reach walRestartSize, where it ends with a RESTART, instead of
	// one pass per commit, each copying a few frames and syncing both files.
	nextPass atomic.Int64
	stopped  bool // Close was called: start no goroutine
	wg       sync.WaitGroup
	// run is held by the checkpoint running in this process: a writer's
	// inline checkpoint waits for the background one.
	run sync.Mutex

	// Checkpoints run, by where they ran: tests read them.
	background, inline atomic.Int64
	// hook, when set (by tests, before the first write), is called in the
	// background goroutine before each checkpoint it considers.
	hook func()
}

// journalSizeLimit is what the -wal file is cut back to when the log
// restarts: WALSizeLimit with background checkpoints; otherwise the size
// the log reaches before the automatic checkpoint, so that the file is not
// cut and grown again every cycle (growing it costs each page written past
// its end about 2 µs more).
func (c *Cache) journalSizeLimit() int64 {
	if c.autoCheckpoint == 0 {
		return WALSizeLimit
	}
	pageSize := c.pageSize // 0 until init has read it
	if pageSize == 0 {
		pageSize = int64(cmp.Or(c.newPageSize, 4096))
	}
	return (c.autoCheckpoint + 16) * (pageSize + 24)
}

// walSize returns the size of the -wal file, 0 when there is none (the
// journal mode is not WAL, or no connection is open).
func (c *Cache) walSize() int64 {
	if c.logName != nil {
		if n, ok := logSize(c.logName); ok {
			return n
		}
	}
	var st syscall.Stat_t
	if syscall.Stat(c.walPath, &st) != nil {
		return 0
	}
	return st.Size
}

// afterCommit runs after a batch of writes of this process has committed
// and its callers have their answers, before the next batch can begin.
func (c *Cache) afterCommit() {
	size := c.walSize()
	if size <= WALSizeLimit {
		if c.ck.nextPass.Load() != 0 {
			c.ck.nextPass.Store(0) // the log restarted
		}
		return
	}
	if size <= walInlineSize {
		// Below nextPass the background would look and do nothing: a
		// goroutine started per commit for that cost a tenth of a set.
		if size >= c.ck.nextPass.Load() {
			c.nudgeCheckpointer()
		}
		return
	}
	// Background checkpoints did not keep up (writes outpace them): copy
	// the log now, after the background checkpoint running, if one is,
	// while no write of this process can add to it, so that the next write
	// restarts it. Writes of this process wait meanwhile, as they did for
	// SQLite's automatic checkpoint.
	cn, err := c.acquire(noCancel)
	if err != nil {
		return // closed
	}
	c.ck.inline.Add(1)
	c.ck.run.Lock()
	_, _ = c.checkpoint(cn, "PASSIVE") // busy: another process checkpoints
	c.ck.run.Unlock()
	c.release(cn)
}

// nudgeCheckpointer starts the background checkpoint, or has the running
// one look again, without waiting for either.
func (c *Cache) nudgeCheckpointer() {
	k := &c.ck
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.running {
		k.again = k.again || !k.restarting
		return
	}
	if k.stopped {
		return
	}
	k.running = true
	k.wg.Add(1)
	go c.runCheckpointer()
}

// stop keeps another background checkpoint from starting, and the running
// one from looking again. Close then waits for wg.
func (k *checkpointer) stop() {
	k.mu.Lock()
	k.stopped = true
	k.mu.Unlock()
}

func (c *Cache) runCheckpointer() {
	k := &c.ck
	defer k.wg.Done()
	for {
		c.checkpointDue()
		k.mu.Lock()
		if !k.again || k.stopped {
			k.running = false
			k.mu.Unlock()
			return
		}
		k.again = false
		k.mu.Unlock()
	}
}

// checkpointDue checkpoints in the background if the log is past
// WALSizeLimit: PASSIVE, which copies what it can without holding anyone
// off, then RESTART if the log is past walRestartSize; and once the log is
// all copied, restarts it. Errors are left for the next nudge: a checkpoint
// that fails (busy, I/O) costs no one a wait, and the writer's inline
// checkpoint bounds the log whatever happens here.
func (c *Cache) checkpointDue() {
	if k := c.ck.hook; k != nil {
		k()
	}
	size := c.walSize()
	if size <= WALSizeLimit || size < c.ck.nextPass.Load() {
		return
	}
	cn, err := c.acquire(noCancel)
	if err != nil {
		return // closed, or the connection cannot be opened
	}
	c.ck.background.Add(1)
	c.ck.run.Lock()
	copied, err := c.checkpoint(cn, "PASSIVE")
	if err == nil && !copied && size > walRestartSize {
		copied, _ = c.restartCheckpoint(cn)
	}
	c.ck.run.Unlock()
	c.release(cn)
	if copied {
		c.restartLog()
	}
	if now := c.walSize(); err == nil && now > WALSizeLimit {
		// Writes came in after the pass, so the log did not restart.
		c.ck.nextPass.Store(max(walRestartSize+1, now+WALSizeLimit/4))
	}
}

// restartLog makes a write that changes nothing (a Settings row added and
// removed again), so that this write, in the background, restarts the log
// now that it is all copied: the first write to a restarted log writes and
// fsyncs its header and cuts the file back to WALSizeLimit, which would
// otherwise be the next request's wait. It does not fail; should the log
// not restart (writes came in meanwhile, or readers hold old frames), the
// next write nudges again, but this one does not: a log pinned by a reader
// would otherwise keep the checkpointer writing.
func (c *Cache) restartLog() {
	k := &c.ck
	k.mu.Lock()
	k.restarting = true
	k.mu.Unlock()
	_ = c.transact(noCancel, "checkpoint", func(tx *Tx) error {
		// A row added and removed: SQLite skips rewriting a page with the
		// bytes it holds, so an UPDATE to the same value would write
		// nothing.
		if _, err := tx.cn.exec(`INSERT INTO Settings VALUES ('_wal_restart', 0)`); err != nil {
			return err
		}
		_, err := tx.cn.exec(`DELETE FROM Settings WHERE key = '_wal_restart'`)
		return err
	})
	k.mu.Lock()
	k.restarting = false
	k.mu.Unlock()
}

// restartCheckpoint copies what is left of the log and waits, at most
// walRestartWait, for readers to leave it, so that it restarts.
func (c *Cache) restartCheckpoint(cn *conn) (copied bool, err error) {
	wait := min(c.timeout, walRestartWait)
	if err := cn.pragma("busy_timeout", wait.Milliseconds()); err != nil {
		return false, err
	}
	copied, err = c.checkpoint(cn, "RESTART")
	if perr := cn.pragma("busy_timeout", c.timeout.Milliseconds()); perr != nil {
		cn.gen = 0 // apply every pragma again when next acquired
	}
	return copied, err
}

// checkpoint runs PRAGMA wal_checkpoint(mode) on cn and reports whether the
// whole log is now in the database.
func (c *Cache) checkpoint(cn *conn, mode string) (copied bool, err error) {
	copied, _, err = walCheckpoint(cn, mode)
	return copied, err
}

// walCheckpoint runs PRAGMA wal_checkpoint(mode) on cn and reports whether
// the whole log is now in the database, and how many frames it held.
func walCheckpoint(cn *conn, mode string) (copied bool, frames int64, err error) {
	row, ok, err := cn.queryRow("PRAGMA wal_checkpoint("+mode+")", 3)
	if err != nil || !ok {
		return false, 0, err
	}
	busy, log, done := toInt(row[0]), toInt(row[1]), toInt(row[2])
	return busy == 0 && log >= 0 && done == log, log, nil
}

// GiveBackSpace copies the log into the database and restarts the log, so
// that the space deletes freed goes back to the file system: the database
// file shrinks (auto-vacuum) only as its log is copied back, and the log to
// WALSizeLimit only once it restarts. Commits do that once the log is past
// WALSizeLimit; a server refusing writes on a full volume makes none.
func (c *Cache) GiveBackSpace(ctx context.Context) error {
	cn, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	c.ck.run.Lock()
	copied, frames, err := walCheckpoint(cn, "PASSIVE")
	c.ck.run.Unlock()
	c.release(cn)
	if err != nil {
		return fmt.Errorf("engine: checkpoint: %w", err)
	}
	// Restarted only when it holds frames, all copied: an empty log has
	// nothing to give back, and the restart is a write.
	if copied && frames > 0 {
		c.restartLog()
	}
	return nil
}

// GiveBackSpace is Cache.GiveBackSpace for every fanout database.
func (f *FanoutCache) GiveBackSpace(ctx context.Context) error {
	var errs []error
	for _, c := range f.dbs {
		errs = append(errs, c.GiveBackSpace(ctx))
	}
	return errors.Join(errs...)
}
