// Package engine is a disk-backed cache with python-diskcache 5.x semantics
// and on-disk format: a directory holding a SQLite database (cache.db) and
// value files, readable and writable by python-diskcache and this package
// alike, by many goroutines and several processes at once.
package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
	"github.com/mattn/go-sqlite3"
)

// DBName is the database file inside a cache directory.
const DBName = "cache.db"

// DefaultTimeout is python-diskcache's Cache timeout.
const DefaultTimeout = 60 * time.Second

// Options configure Open.
type Options struct {
	// Timeout bounds how long a write waits for the database lock (in this
	// process and across processes). A write still waiting then fails with
	// ErrTimeout. Zero means DefaultTimeout; a negative value means no wait.
	Timeout time.Duration
	// Settings override stored settings (and defaults), by setting name,
	// as python-diskcache's Cache(directory, **settings) does.
	Settings map[settings.Name]any
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now func() time.Time
	// MaxConns bounds open SQLite connections; zero means 2×GOMAXPROCS+2.
	MaxConns int
	// MaxBytes, when positive, bounds a cache that does not cull on write
	// (eviction policy none or cull_limit 0): a write that would take its
	// volume to MaxBytes fails with kv.ErrFull. python-diskcache has no such
	// bound.
	MaxBytes int64
	// SyncFile, when set, is called on every new value file (and on the
	// directories that now hold its name) after it is written and before
	// the row naming it commits, so that a committed row never names a
	// file a power loss emptied. (*os.File).Sync does that; nil does not
	// sync, as python-diskcache, which leaves value files to the page
	// cache.
	SyncFile func(*os.File) error
	// BatchYield makes a write that finds no other write queued yield the
	// processor (runtime.Gosched) before its transaction, and again while
	// that brings more writes, so that writes about to be made join its
	// group commit. It pays where the writers are goroutines that block on
	// I/O between writes (a server: the cacheserver sets it; one commit
	// then serves several requests, 25-30% less CPU per small SET). Where
	// they are CPU-bound the yield waits for their time slices: off by
	// default.
	BatchYield bool
	// BackgroundCheckpoints takes WAL checkpoints out of the COMMIT of the
	// write that fills the log (SQLite's automatic checkpoint, which then
	// copies the log into the database and fsyncs both while its caller
	// waits) into a background goroutine (checkpoint.go). It pays where
	// writes come from requests that wait for them (a server: the
	// cacheserver sets it; set p99 about 2 -> 0.6 ms); a single CPU-bound
	// writer is faster with the automatic checkpoint (set p50 about 6 µs
	// less, as the log then never outgrows its file): off by default.
	BackgroundCheckpoints bool
	// HotBytes, when positive, keeps up to that many bytes of the values
	// read or written last in memory (values held in the database, not
	// value files),
	// so that gets they answer run no SQL while the eviction policy and
	// statistics make gets read-only. Only for a process that is the
	// database's only writer: a change another process makes is not seen.
	HotBytes int64
	// Exclusive makes this process the database's only user while it has
	// it open: Open takes an exclusive lock on the database file (SQLite's
	// unix-excl VFS) and a connection held open keeps it until Close, so
	// that another process opening the database fails with "database is
	// locked" (another Cache with Exclusive fails at once in Open, saying
	// another process has it open). Transactions then take
	// no file locks (the 6 fcntl calls of a write, about a tenth of a
	// small set's CPU) and the WAL index lives in this process's memory
	// (no -shm file). It is what HotBytes assumes, made a rule: a server
	// started twice on one volume fails instead of serving stale values.
	// The files stay python-diskcache's: it opens them once this process
	// has closed them.
	Exclusive bool
	// SoleWriter says that no other process writes the directory even
	// though the database is not opened Exclusive (a server's named
	// collections, opened shared only so that their idle connections can
	// be closed). Open then removes the value files a stopped process left
	// unfinished, as it does for an Exclusive cache.
	SoleWriter bool
	// PageSize is the SQLite page size, in bytes, of a database Open
	// creates: a power of two from 512 to 65536. Zero means SQLite's
	// default of 4096, which python-diskcache's databases have. A
	// database that exists keeps the page size it was created with (WAL
	// mode cannot change it). Every write appends each page it changes
	// to the log whole, and a small set changes a few pages: with pages
	// of 2048 bytes a set writes about half the bytes to the log and the
	// database at checkpoints, for a value of a few KiB a few more
	// overflow pages. python-diskcache opens a database of any page size.
	PageSize int

	// gate, set by OpenFanout, makes the databases of a fanout take turns
	// to commit (FanoutOptions.CommitTurns).
	gate *commitGate
}

// Cache is one cache directory. It is safe for concurrent use.
type Cache struct {
	dir     string
	dbPath  string
	walPath string // the write-ahead log: dbPath + "-wal"
	// logName is the log's name in frameVFS (with Options.Exclusive), whose
	// size walSize reads from there.
	logName  []byte
	timeout  time.Duration
	now      func() time.Time
	pageSize int64
	// newPageSize is Options.PageSize: the page size init gives a
	// database it creates.
	newPageSize int
	minPages    int64                // pages of a database holding one item: see checkKeepable
	maxBytes    int64                // Options.MaxBytes
	syncFile    func(*os.File) error // Options.SyncFile
	// batchYield is Options.BatchYield.
	batchYield bool
	exclusive  bool        // Options.Exclusive
	holder     *conn       // with exclusive: open from Open to Close, keeping the process's lock
	hot        *hotValues  // nil unless Options.HotBytes
	gate       *commitGate // nil unless the fanout sets Options.gate

	slots  chan struct{} // a token per connection that may be in use
	idleMu sync.Mutex
	idle   []*conn // a stack: the most recently used connection has the warmest page cache
	// lastWriter is the connection of the last write transaction (under
	// idleMu): SQLite drops a connection's whole page cache when it begins
	// a transaction after another connection has committed, so writes that
	// keep to one connection keep its pages.
	lastWriter *conn
	// retired: a sub-collection FanoutCache no longer counts among its
	// open ones (FanoutOptions.MaxOpenCollections) closes each connection
	// it releases, until used again.
	retired atomic.Bool
	w       writer // serialises and batches the writes of this process
	// expiryFloor is at most the expire_time of every row, so that the
	// cull of a write skips looking for expired rows before it (python-
	// diskcache's statement finds none, on most writes). Known only to an
	// exclusive cache, whose writes all pass through here; -Inf otherwise
	// and until a cull has looked. Only write batches use it (runBatch),
	// one at a time.
	expiryFloor float64

	settingsMu sync.Mutex // serialises Reset
	settings   atomic.Pointer[Settings]
	pragmaGen  atomic.Uint64

	counts counters

	ck checkpointer // the background WAL checkpoint: see checkpoint.go
	// autoCheckpoint is wal_autocheckpoint: 0 with Options.BackgroundCheckpoints.
	autoCheckpoint int64

	pendingMu sync.Mutex
	pending   map[string]struct{} // value files written, not yet committed

	closeOnce sync.Once
	closed    atomic.Bool
	done      chan struct{} // closed by Close
}

// Open opens or creates the cache in dir, as python-diskcache's Cache does:
// defaults, then stored settings, then opts.Settings; pragmas applied before
// tables are created; every setting written back to the Settings table.
func Open(ctx context.Context, dir string, opts Options) (*Cache, error) {
	// Value file paths are built with filepath.Join, which cleans them;
	// pruning and Check compare them with dir, so dir must be clean too.
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("engine: cache directory %s does not exist and could not be created: %w", dir, err)
	}
	c := &Cache{
		dir:     dir,
		dbPath:  filepath.Join(dir, DBName),
		walPath: filepath.Join(dir, DBName+"-wal"),
		timeout: opts.Timeout,
		now:     opts.Now,
		done:    make(chan struct{}),
		pending: map[string]struct{}{},
	}
	c.pragmaGen.Store(1)
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.timeout < 0 {
		c.timeout = 0
	}
	if c.now == nil {
		c.now = time.Now
	}
	if err := validPageSize(opts.PageSize); err != nil {
		return nil, err
	}
	c.newPageSize = opts.PageSize
	c.maxBytes = opts.MaxBytes
	c.syncFile = opts.SyncFile
	c.batchYield = opts.BatchYield
	c.exclusive = opts.Exclusive
	c.expiryFloor = math.Inf(-1)
	if c.exclusive {
		if err := registerFrameVFS(); err != nil {
			return nil, err
		}
		// Without the name (a path SQLite cannot make absolute), walSize
		// stats the file as for a shared cache.
		c.logName, _ = logName(c.dbPath)
	}
	if opts.gate != nil {
		c.gate = opts.gate
		c.w.bypass = make(chan struct{}, 1)
		c.w.turnPaid = true // until a wait shows otherwise
	}
	if !opts.BackgroundCheckpoints {
		c.autoCheckpoint = walAutoCheckpointPages
	}
	if opts.HotBytes > 0 {
		c.hot = newHotValues(opts.HotBytes)
	}
	maxConns := opts.MaxConns
	if maxConns <= 0 {
		maxConns = 2*runtime.GOMAXPROCS(0) + 2
	}
	c.slots = make(chan struct{}, maxConns)
	c.idle = make([]*conn, 0, maxConns)

	if err := c.init(ctx, opts.Settings); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("engine: open %s: %w", dir, err)
	}
	if c.exclusive || opts.SoleWriter {
		if err := c.removeIncoming(); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("engine: open %s: remove unfinished value files: %w", dir, err)
		}
	}
	return c, nil
}

// ValidPageSize reports whether SQLite takes n as a page size: a power of
// two from 512 to 65536.
func ValidPageSize(n int) bool { return n >= 512 && n <= 65536 && n&(n-1) == 0 }

// validPageSize checks Options.PageSize (0: SQLite's default).
func validPageSize(n int) error {
	if n == 0 || ValidPageSize(n) {
		return nil
	}
	return fmt.Errorf("%w: page size must be a power of two from 512 to 65536, got %d", kv.ErrInvalidSetting, n)
}

// Directory returns the cache directory.
func (c *Cache) Directory() string { return c.dir }

// Timeout returns the database timeout.
func (c *Cache) Timeout() time.Duration { return c.timeout }

// Settings returns the settings in force.
func (c *Cache) Settings() Settings { return *c.settings.Load() }

// PageSize is the SQLite page size, in bytes, the database runs with: the
// one it was created with, which Options.PageSize does not change.
func (c *Cache) PageSize() int64 { return c.pageSize }

// Close closes every connection. Calls after Close fail with ErrClosed.
func (c *Cache) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.ck.stop()    // no background checkpoint starts or looks again
		close(c.done)  // one waiting for a connection gives up
		c.ck.wg.Wait() // and the one running ends
		// Take every slot so no connection is in use, then close them all.
		for i := 0; i < cap(c.slots); i++ {
			c.slots <- struct{}{}
		}
		c.idleMu.Lock()
		for _, cn := range c.idle {
			err = errors.Join(err, cn.close())
		}
		c.idle = nil
		c.idleMu.Unlock()
		if c.holder != nil {
			err = errors.Join(err, c.holder.close())
		}
	})
	return err
}

// acquire returns a connection with current pragmas.
func (c *Cache) acquire(ctx context.Context) (*conn, error) { return c.acquireConn(ctx, false) }

// acquireWriter is acquire for a write transaction: it takes the
// connection of the last one when that is idle.
func (c *Cache) acquireWriter(ctx context.Context) (*conn, error) { return c.acquireConn(ctx, true) }

func (c *Cache) acquireConn(ctx context.Context, write bool) (*conn, error) {
	if c.closed.Load() {
		return nil, kv.ErrClosed
	}
	select {
	case c.slots <- struct{}{}:
	default:
		select {
		case c.slots <- struct{}{}:
		case <-c.done:
			return nil, kv.ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if c.closed.Load() {
		<-c.slots
		return nil, kv.ErrClosed
	}
	var cn *conn
	c.idleMu.Lock()
	if n := len(c.idle); n > 0 {
		if write && c.lastWriter != nil && c.idle[n-1] != c.lastWriter {
			if i := slices.Index(c.idle, c.lastWriter); i >= 0 {
				c.idle[i], c.idle[n-1] = c.idle[n-1], c.idle[i]
			}
		}
		cn = c.idle[n-1]
		c.idle = c.idle[:n-1]
		if write {
			c.lastWriter = cn
		}
	}
	c.idleMu.Unlock()
	opened := cn == nil
	if opened {
		var err error
		if cn, err = openConn(c.dbPath, c.timeout, c.exclusive); err != nil {
			<-c.slots
			return nil, err
		}
		if c.hot != nil {
			hot := c.hot
			cn.sc.RegisterUpdateHook(func(op int, _, table string, rowid int64) {
				if table == "Cache" {
					hot.rowChanged(op == sqlite3.SQLITE_DELETE, rowid)
				}
			})
		}
	}
	if gen := c.pragmaGen.Load(); cn.gen != gen {
		if err := c.applyPragmas(cn); err != nil {
			_ = cn.close()
			<-c.slots
			return nil, err
		}
		cn.gen = gen
	}
	if write && opened {
		c.idleMu.Lock()
		c.lastWriter = cn
		c.idleMu.Unlock()
	}
	return cn, nil
}

func (c *Cache) release(cn *conn) {
	if c.retired.Load() {
		// Out of FanoutCache's open collections: the connection was in
		// use when the others were closed.
		_ = cn.close()
		<-c.slots
		return
	}
	cn.idle = time.Now()
	c.idleMu.Lock()
	c.idle = append(c.idle, cn)
	c.idleMu.Unlock()
	<-c.slots
}

// CloseIdle closes the connections unused for at least d, releasing their
// file descriptors (database, -wal, -shm); the cache opens connections
// again when next used. It returns how many it closed.
func (c *Cache) CloseIdle(d time.Duration) int {
	cutoff := time.Now().Add(-d)
	c.idleMu.Lock()
	// The stack's bottom holds the connections idle longest.
	n := 0
	for n < len(c.idle) && !c.idle[n].idle.After(cutoff) {
		n++
	}
	stale := append([]*conn(nil), c.idle[:n]...)
	c.idle = append(c.idle[:0], c.idle[n:]...)
	c.idleMu.Unlock()
	for _, cn := range stale {
		_ = cn.close()
	}
	return len(stale)
}

// openConns counts the connections open now: idle ones and those in use
// (or being opened).
func (c *Cache) openConns() int {
	c.idleMu.Lock()
	n := len(c.idle)
	c.idleMu.Unlock()
	return n + len(c.slots)
}

// discard closes a connection that must not be reused.
func (c *Cache) discard(cn *conn) {
	_ = cn.close()
	<-c.slots
}

// applyPragmas sets the per-connection pragmas from the settings.
func (c *Cache) applyPragmas(cn *conn) error {
	s := c.settings.Load()
	if s == nil {
		d := DefaultSettings()
		s = &d
	}
	ms := c.timeout.Milliseconds()
	if err := cn.pragma("busy_timeout", ms); err != nil {
		return err
	}
	for _, p := range []struct {
		name  string
		value any
	}{
		{"cache_size", s.SQLiteCacheSize},
		{"mmap_size", s.SQLiteMmapSize},
		{"synchronous", s.SQLiteSynchronous},
		// Checkpoint every autoCheckpoint pages of log, inside the COMMIT
		// that gets there, or (0) in the background (checkpoint.go); see
		// journalSizeLimit for what the -wal file is cut back to.
		{"wal_autocheckpoint", c.autoCheckpoint},
		{"journal_size_limit", c.journalSizeLimit()},
	} {
		if err := cn.pragma(p.name, p.value); err != nil {
			return err
		}
	}
	return nil
}

// nowSeconds is the clock as python-diskcache's time.time().
func (c *Cache) nowSeconds() float64 {
	return float64(c.now().UnixNano()) / 1e9
}
