package engine

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// FanoutCache defaults, as in python-diskcache's FanoutCache.
const (
	// DefaultFanout is the number of databases when FanoutOptions.Fanout
	// is zero.
	DefaultFanout = 8
	// DefaultFanoutTimeout is the timeout of every database when
	// FanoutOptions.Timeout is zero.
	DefaultFanoutTimeout = 10 * time.Millisecond
)

// Sub-collection directories below a FanoutCache directory.
const (
	fanoutCacheDir = "cache"
	fanoutDequeDir = "deque"
	fanoutIndexDir = "index"
	// absentDir holds the empty stand-ins of CacheIfExists and the like.
	absentDir = ".absent"
)

// FanoutOptions configure OpenFanout.
type FanoutOptions struct {
	// Fanout is the number of databases; zero means DefaultFanout. It must
	// match the number the directory was written with, or keys are looked
	// for in the wrong database.
	Fanout int
	// Timeout bounds how long a write waits for a database's lock. Zero means
	// DefaultFanoutTimeout (python-diskcache's 0.010 s); a negative value
	// means no wait.
	Timeout time.Duration
	// Settings are passed to every database as Options.Settings, except
	// size_limit: it is the total for the whole FanoutCache, and each database
	// gets size_limit / Fanout (2^30 / Fanout when absent, because
	// python-diskcache always passes it).
	Settings map[settings.Name]any
	// Now is the clock of every database and sub-collection; nil means
	// time.Now.
	Now func() time.Time
	// MaxConns bounds the open SQLite connections of each database; zero means
	// the Cache default.
	MaxConns int
	// SyncFile is Options.SyncFile of every database and sub-collection.
	SyncFile func(*os.File) error
	// BatchYield is Options.BatchYield of every database and
	// sub-collection.
	BatchYield bool
	// BackgroundCheckpoints is Options.BackgroundCheckpoints of every
	// database and sub-collection.
	BackgroundCheckpoints bool
	// HotBytes is Options.HotBytes of the fanout databases together (each
	// gets HotBytes / Fanout); named caches, deques and indexes keep none.
	HotBytes int64
	// PageSize is Options.PageSize of every database and sub-collection
	// this creates.
	PageSize int
	// Exclusive is Options.Exclusive of the fanout databases; named
	// caches, deques and indexes, whose idle connections CloseIdleCollections
	// closes, are opened shared.
	Exclusive bool
	// CommitTurns, when positive, lets at most that many fanout databases
	// run a transaction's batch of writes at a time while that gathers
	// more writes into each batch (see commitGate). It pays where many
	// writers are goroutines waiting on I/O and CPUs are few (a server:
	// the cacheserver sets it; a SET at 64 connections takes a fifth less
	// CPU); CPU-bound writers are faster committing side by side. Zero: no
	// bound.
	CommitTurns int
	// CacheSizeLimit, when positive, is the size_limit a named cache (see
	// Cache) is created with, instead of python-diskcache's 1 GiB default;
	// when negative, the size_limit of one fanout database at that time. A
	// named cache that exists keeps its stored size_limit.
	CacheSizeLimit int64
	// MaxOpenCollections, when positive, bounds the named caches, deques
	// and indexes that keep database connections open (each holds SQLite's
	// memory for its connection, about 180 KiB, and three file
	// descriptors): using one more closes the idle connections of the one
	// used least recently, which opens them again when next used (a
	// connection in use at that moment closes when released). Zero: no
	// bound.
	MaxOpenCollections int
	// Quarantine moves the directory of a fanout database that SQLite
	// finds damaged at open to quarantine/NNN-<time> below dir and opens
	// it anew, empty, instead of failing; FanoutCache.Quarantined lists
	// what was moved. Items of that database are lost; the rest serve on.
	Quarantine bool
	// SwallowTimeouts gives single-key operations python-diskcache's
	// FanoutCache behaviour: a database that stays locked past Timeout is
	// reported as a failed write or a miss instead of ErrTimeout. Set, Add,
	// Touch and Delete report false (Set, which returns only an error,
	// returns nil: use TrySet to learn whether it stored), Get and Pop report
	// a miss, Incr and Decr return the zero Value (python's None), all with a
	// nil error. Without it every timeout is returned as an error wrapping
	// ErrTimeout. Bulk and administrative operations (Expire, Evict, Cull,
	// Clear, Stats, Check, Reset, tag index changes) and Transact retry a
	// timed-out database until ctx ends, with or without this option.
	SwallowTimeouts bool
}

// FanoutCache spreads keys over several Cache databases, its fanout
// (python-diskcache calls them shards; here a shard is one cache server),
// each its own SQLite database in dir/000, dir/001, …, as python-diskcache's
// FanoutCache does, so that writers to different databases do not wait for
// each other. A key
// lives in database fanoutHash(key) % DatabaseCount(). It also hands out named
// sub-collections (Cache, Deque, Index) stored below dir. It is safe for
// concurrent use.
type FanoutCache struct {
	dir           string
	dbs           []*Cache
	timeout       time.Duration
	now           func() time.Time
	maxConns      int
	swallow       bool
	syncFile      func(*os.File) error
	batchYield    bool
	gate          *commitGate // nil unless FanoutOptions.CommitTurns
	bgCheckpoints bool
	pageSize      int  // FanoutOptions.PageSize
	exclusive     bool // FanoutOptions.Exclusive: the collections' directories are this process's too
	// cacheSizeLimit is FanoutOptions.CacheSizeLimit.
	cacheSizeLimit int64
	// collectionMaxBytes is Options.MaxBytes of every sub-collection
	// opened from now on (see SetCollectionMaxBytes).
	collectionMaxBytes atomic.Int64
	// quarantined lists the fanout databases moved aside at open.
	quarantined []Quarantined

	// maxOpenSubs is FanoutOptions.MaxOpenCollections.
	maxOpenSubs int

	mu      sync.Mutex // guards the fields below
	closed  bool
	caches  map[string]*Cache
	deques  map[string]*Deque
	indexes map[string]*Index
	// recent holds the sub-collections used last, the most recent first,
	// at most maxOpenSubs of them; recentAt finds each one's element.
	recent   list.List
	recentAt map[*Cache]*list.Element
	// dropping holds, by directory, the sub-collections being dropped:
	// each channel closes when its drop ends.
	dropping map[string]chan struct{}
	// absent holds, by kind, the empty stand-in that reads of a
	// sub-collection that does not exist see (see CacheIfExists).
	absent map[string]*Cache
}

// OpenFanout opens or creates the FanoutCache in dir.
func OpenFanout(ctx context.Context, dir string, opts FanoutOptions) (*FanoutCache, error) {
	n := opts.Fanout
	if n == 0 {
		n = DefaultFanout
	}
	if n < 0 {
		return nil, fmt.Errorf("%w: fanout must be positive, got %d", kv.ErrInvalidSetting, n)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = DefaultFanoutTimeout
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	overrides := make(map[settings.Name]any, len(opts.Settings)+1)
	for k, v := range opts.Settings {
		overrides[k] = v
	}
	// python-diskcache's FanoutCache writes size_limit on every open, so a
	// limit changed at run time reverts to the default on the next open
	// unless given again. Here an existing database keeps its stored limit
	// unless one is given; a new database starts at the default.
	total := DefaultSettings().SizeLimit
	_, explicitLimit := overrides[settings.NameSizeLimit]
	if v, ok := overrides[settings.NameSizeLimit]; ok {
		var s Settings
		if err := s.Set(settings.NameSizeLimit, v); err != nil {
			return nil, err
		}
		total = s.SizeLimit
	}
	overrides[settings.NameSizeLimit] = total / int64(n)

	f := &FanoutCache{
		dir:           dir,
		dbs:           make([]*Cache, 0, n),
		timeout:       timeout,
		now:           now,
		maxConns:      opts.MaxConns,
		swallow:       opts.SwallowTimeouts,
		syncFile:      opts.SyncFile,
		batchYield:    opts.BatchYield,
		bgCheckpoints: opts.BackgroundCheckpoints,
		pageSize:      opts.PageSize,
		exclusive:     opts.Exclusive,
		maxOpenSubs:   opts.MaxOpenCollections,
		caches:        map[string]*Cache{},
		deques:        map[string]*Deque{},
		indexes:       map[string]*Index{},
		recentAt:      map[*Cache]*list.Element{},
	}
	f.cacheSizeLimit = opts.CacheSizeLimit
	var gate *commitGate
	if opts.CommitTurns > 0 {
		gate = newCommitGate(opts.CommitTurns)
		f.gate = gate
	}
	for i := 0; i < n; i++ {
		dbDir := filepath.Join(dir, fmt.Sprintf("%03d", i))
		dbSettings := overrides
		if fi, err := os.Stat(filepath.Join(dbDir, DBName)); err == nil && fi.Size() > 0 && !explicitLimit {
			// Its stored limit stays. (An empty file is a new database:
			// SQLite writes its first page with its first table.)
			dbSettings = make(map[settings.Name]any, len(overrides))
			for k, v := range overrides {
				if k != settings.NameSizeLimit {
					dbSettings[k] = v
				}
			}
		}
		copts := Options{Timeout: timeout, Settings: dbSettings, Now: now, MaxConns: opts.MaxConns, SyncFile: opts.SyncFile, BatchYield: opts.BatchYield, BackgroundCheckpoints: opts.BackgroundCheckpoints, HotBytes: opts.HotBytes / int64(n), Exclusive: opts.Exclusive, PageSize: opts.PageSize, gate: gate}
		c, err := Open(ctx, dbDir, copts)
		if err != nil && opts.Quarantine && IsCorruptDatabase(err) {
			var q Quarantined
			if q, err = quarantine(dir, dbDir, i, now(), err); err == nil {
				f.quarantined = append(f.quarantined, q)
				// A new database in its place: its share of the limit,
				// not python-diskcache's default for a whole cache.
				copts.Settings = overrides
				c, err = Open(ctx, dbDir, copts)
			}
		}
		if err != nil {
			_ = f.Close()
			return nil, err
		}
		f.dbs = append(f.dbs, c)
	}
	return f, nil
}

// Quarantined describes a damaged fanout database moved aside at open.
type Quarantined struct {
	Index int    // which fanout database
	Path  string // where its directory went
	Err   error  // what SQLite said
}

// Quarantined lists the fanout databases moved aside at open (see
// FanoutOptions.Quarantine).
func (f *FanoutCache) Quarantined() []Quarantined { return f.quarantined }

// quarantine moves the directory of damaged fanout database i, with its
// value files, to dir/quarantine/NNN-<time>.
func quarantine(dir, dbDir string, i int, now time.Time, cause error) (Quarantined, error) {
	qdir := filepath.Join(dir, "quarantine")
	if err := os.MkdirAll(qdir, 0o755); err != nil {
		return Quarantined{}, fmt.Errorf("engine: quarantine %s (%v): %w", dbDir, cause, err)
	}
	dest := filepath.Join(qdir, fmt.Sprintf("%03d-%s", i, now.UTC().Format("20060102T150405.000000000Z")))
	if err := os.Rename(dbDir, dest); err != nil {
		return Quarantined{}, fmt.Errorf("engine: quarantine %s (%v): %w", dbDir, cause, err)
	}
	return Quarantined{Index: i, Path: dest, Err: cause}, nil
}

// Directory returns the fanout directory.
func (f *FanoutCache) Directory() string { return f.dir }

// Timeout returns the timeout of every database.
func (f *FanoutCache) Timeout() time.Duration { return f.timeout }

// SwallowTimeouts reports whether single-key operations swallow timeouts
// (see FanoutOptions.SwallowTimeouts).
func (f *FanoutCache) SwallowTimeouts() bool { return f.swallow }

// Settings returns the settings of database 0, as python-diskcache's
// FanoutCache attributes do. SizeLimit is the limit of one database.
func (f *FanoutCache) Settings() Settings { return f.dbs[0].Settings() }

// DatabaseCount returns the number of databases.
func (f *FanoutCache) DatabaseCount() int { return len(f.dbs) }

// Database returns database i (0 ≤ i < DatabaseCount()).
func (f *FanoutCache) Database(i int) *Cache { return f.dbs[i] }

// DatabaseIndex returns the index of the database that holds key:
// fanoutHash(key) modulo the database count, as python-diskcache computes it.
func (f *FanoutCache) DatabaseIndex(key kv.Key) int {
	return int(fanoutHash(key) % uint32(len(f.dbs)))
}

// DatabaseFor returns the database that holds key.
func (f *FanoutCache) DatabaseFor(key kv.Key) *Cache { return f.dbs[f.DatabaseIndex(key)] }

// swallowed reports whether err is a timeout this cache turns into a
// failed write or a miss.
func (f *FanoutCache) swallowed(err error) bool {
	return f.swallow && errors.Is(err, kv.ErrTimeout)
}

// Set stores value under key in its database (see Cache.Set). Under
// SwallowTimeouts a timeout returns nil without storing anything; TrySet
// tells the two apart.
func (f *FanoutCache) Set(ctx context.Context, key kv.Key, value kv.Value, opts kv.SetOptions) error {
	_, err := f.TrySet(ctx, key, value, opts)
	return err
}

// TrySet is Set reporting whether the item was stored, like
// python-diskcache's FanoutCache.set: false with a nil error when a timeout
// was swallowed.
func (f *FanoutCache) TrySet(ctx context.Context, key kv.Key, value kv.Value, opts kv.SetOptions) (bool, error) {
	err := f.DatabaseFor(key).Set(ctx, key, value, opts)
	if err == nil {
		return true, nil
	}
	if f.swallowed(err) {
		return false, nil
	}
	return false, err
}

// Add stores value only if key has no live item (see Cache.Add).
func (f *FanoutCache) Add(ctx context.Context, key kv.Key, value kv.Value, opts kv.SetOptions) (bool, error) {
	ok, err := f.DatabaseFor(key).Add(ctx, key, value, opts)
	if f.swallowed(err) {
		return false, nil
	}
	return ok, err
}

// Replace stores value under key only if key holds a live item (see
// Cache.Replace).
func (f *FanoutCache) Replace(ctx context.Context, key kv.Key, value kv.Value, opts kv.SetOptions) (bool, error) {
	ok, err := f.DatabaseFor(key).Replace(ctx, key, value, opts)
	if f.swallowed(err) {
		return false, nil
	}
	return ok, err
}

// Touch gives a live item a new expiry (see Cache.Touch).
func (f *FanoutCache) Touch(ctx context.Context, key kv.Key, expire kv.Expiry) (bool, error) {
	ok, err := f.DatabaseFor(key).Touch(ctx, key, expire)
	if f.swallowed(err) {
		return false, nil
	}
	return ok, err
}

// Get returns the live item under key (see Cache.Get). Under
// SwallowTimeouts a timeout (possible when statistics or an LRU/LFU policy
// make reads write) is a miss.
func (f *FanoutCache) Get(ctx context.Context, key kv.Key, opts GetOptions) (Item, bool, error) {
	it, ok, err := f.DatabaseFor(key).Get(ctx, key, opts)
	if f.swallowed(err) {
		return Item{}, false, nil
	}
	return it, ok, err
}

// GetFromMemory is Cache.GetFromMemory on key's database.
func (f *FanoutCache) GetFromMemory(key kv.Key) (Item, bool, bool) {
	return f.DatabaseFor(key).GetFromMemory(key)
}

// Pop removes the live item under key and returns it (see Cache.Pop).
func (f *FanoutCache) Pop(ctx context.Context, key kv.Key, opts GetOptions) (Item, bool, error) {
	it, ok, err := f.DatabaseFor(key).Pop(ctx, key, opts)
	if f.swallowed(err) {
		return Item{}, false, nil
	}
	return it, ok, err
}

// Delete removes the live item under key (see Cache.Delete).
func (f *FanoutCache) Delete(ctx context.Context, key kv.Key) (bool, error) {
	ok, err := f.DatabaseFor(key).Delete(ctx, key)
	if f.swallowed(err) {
		return false, nil
	}
	return ok, err
}

// Contains reports whether key has a live item.
func (f *FanoutCache) Contains(ctx context.Context, key kv.Key) (bool, error) {
	return f.DatabaseFor(key).Contains(ctx, key)
}

// Incr adds delta to the number under key (see Cache.Incr). Under
// SwallowTimeouts a timeout returns the zero Value (type ValueNone) and a
// nil error.
func (f *FanoutCache) Incr(ctx context.Context, key kv.Key, delta, def kv.Value) (kv.Value, error) {
	v, err := f.DatabaseFor(key).Incr(ctx, key, delta, def)
	if f.swallowed(err) {
		return kv.Value{}, nil
	}
	return v, err
}

// Decr subtracts delta from the number under key; see Incr.
func (f *FanoutCache) Decr(ctx context.Context, key kv.Key, delta, def kv.Value) (kv.Value, error) {
	v, err := f.DatabaseFor(key).Decr(ctx, key, delta, def)
	if f.swallowed(err) {
		return kv.Value{}, nil
	}
	return v, err
}

// retryDatabase runs fn until it ends without a timeout, adding up the counts
// it reports (a timed-out bulk operation reports what it had removed), or
// until ctx ends.
func (f *FanoutCache) retryDatabase(ctx context.Context, op string, i int, fn func() (int64, error)) (int64, error) {
	var total int64
	for {
		n, err := fn()
		total += n
		if err == nil || !errors.Is(err, kv.ErrTimeout) {
			return total, err
		}
		if err := f.beforeRetry(ctx, op, i, err); err != nil {
			return total, err
		}
	}
}

// beforeRetry returns an error when ctx has ended, and otherwise waits a
// moment if nothing else does (the busy timeout normally waits).
func (f *FanoutCache) beforeRetry(ctx context.Context, op string, i int, last error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("engine: fanout %s: database %d: %w (last error: %v)", op, i, err, last)
	}
	if f.timeout > 0 {
		return nil
	}
	t := time.NewTimer(time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("engine: fanout %s: database %d: %w (last error: %v)", op, i, ctx.Err(), last)
	}
}

// eachDatabase runs a counting operation on every database in order, retrying
// timeouts, and returns the sum.
func (f *FanoutCache) eachDatabase(ctx context.Context, op string, fn func(c *Cache) (int64, error)) (int64, error) {
	var total int64
	for i, c := range f.dbs {
		n, err := f.retryDatabase(ctx, op, i, func() (int64, error) { return fn(c) })
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Expire removes the items of every database that expired before now (the
// cache clock when now is 0) and returns how many it removed.
func (f *FanoutCache) Expire(ctx context.Context, now float64) (int64, error) {
	if now == 0 {
		now = float64(f.now().UnixNano()) / 1e9
	}
	return f.eachDatabase(ctx, "expire", func(c *Cache) (int64, error) { return c.Expire(ctx, now) })
}

// Evict removes every item tagged tag from every database.
func (f *FanoutCache) Evict(ctx context.Context, tag kv.Key) (int64, error) {
	return f.eachDatabase(ctx, "evict", func(c *Cache) (int64, error) { return c.Evict(ctx, tag) })
}

// Cull culls every database (see Cache.Cull) and returns the number removed.
func (f *FanoutCache) Cull(ctx context.Context) (int64, error) {
	return f.eachDatabase(ctx, "cull", func(c *Cache) (int64, error) { return c.Cull(ctx) })
}

// Clear removes every item of every database and returns how many it removed.
// Sub-collections are not touched.
func (f *FanoutCache) Clear(ctx context.Context) (int64, error) {
	return f.eachDatabase(ctx, "clear", func(c *Cache) (int64, error) { return c.Clear(ctx) })
}

// Stats returns the hit and miss counts summed over the databases, resetting
// them when reset is set, and turns statistics on or off in every database.
func (f *FanoutCache) Stats(ctx context.Context, enable, reset bool) (hits, misses int64, err error) {
	for i, c := range f.dbs {
		// Switch statistics first, so that a retry cannot lose counts a
		// timed-out attempt had already read and reset.
		if c.Settings().Statistics != enable {
			if _, err := f.retryDatabase(ctx, "stats", i, func() (int64, error) {
				return 0, c.Reset(ctx, settings.NameStatistics, enable)
			}); err != nil {
				return hits, misses, err
			}
		}
		var h, m int64
		if _, err := f.retryDatabase(ctx, "stats", i, func() (int64, error) {
			var err error
			h, m, err = c.Stats(ctx, enable, reset)
			return 0, err
		}); err != nil {
			return hits, misses, err
		}
		hits += h
		misses += m
	}
	return hits, misses, nil
}

// Volume returns the estimated bytes on disk of all databases.
func (f *FanoutCache) Volume(ctx context.Context) (int64, error) {
	var total int64
	for _, c := range f.dbs {
		n, err := c.Volume(ctx)
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// Len returns the number of items in all databases, expired ones included.
func (f *FanoutCache) Len(ctx context.Context) (int64, error) {
	var total int64
	for _, c := range f.dbs {
		n, err := c.Len(ctx)
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// Check checks (and with fix repairs) every database and returns the warnings
// of all databases in database order.
func (f *FanoutCache) Check(ctx context.Context, fix bool) ([]kv.Warning, error) {
	var all []kv.Warning
	for i, c := range f.dbs {
		var warns []kv.Warning
		_, err := f.retryDatabase(ctx, "check", i, func() (int64, error) {
			var err error
			warns, err = c.Check(ctx, fix)
			return 0, err
		})
		all = append(all, warns...)
		if err != nil {
			return all, err
		}
	}
	return all, nil
}

// Reset changes a setting in every database (see Cache.Reset). size_limit is
// the total for the FanoutCache: each database gets value / DatabaseCount().
func (f *FanoutCache) Reset(ctx context.Context, name settings.Name, value any) error {
	if name == settings.NameSizeLimit {
		var s Settings
		if err := s.Set(name, value); err != nil {
			return err
		}
		value = s.SizeLimit / int64(len(f.dbs))
	}
	_, err := f.eachDatabase(ctx, "reset", func(c *Cache) (int64, error) { return 0, c.Reset(ctx, name, value) })
	return err
}

// Reload rereads the settings of every database (see Cache.Reload).
func (f *FanoutCache) Reload(ctx context.Context) error {
	for _, c := range f.dbs {
		if err := c.Reload(ctx); err != nil {
			return err
		}
	}
	return nil
}

// CreateTagIndex creates the tag index in every database.
func (f *FanoutCache) CreateTagIndex(ctx context.Context) error {
	return f.Reset(ctx, settings.NameTagIndex, true)
}

// DropTagIndex drops the tag index in every database.
func (f *FanoutCache) DropTagIndex(ctx context.Context) error {
	return f.Reset(ctx, settings.NameTagIndex, false)
}

// Keys yields the keys of database 0 in insertion order, then those of database
// 1, and so on; with reverse, the last database first, each in reverse
// insertion order, as python-diskcache's FanoutCache iterates. Expired
// items are included.
func (f *FanoutCache) Keys(ctx context.Context, reverse bool) iter.Seq2[kv.Key, error] {
	return func(yield func(kv.Key, error) bool) {
		for j := range f.dbs {
			i := j
			if reverse {
				i = len(f.dbs) - 1 - j
			}
			for k, err := range f.dbs[i].Keys(ctx, reverse) {
				if !yield(k, err) || err != nil {
					return
				}
			}
		}
	}
}

// FanoutPosition is where a run of FanoutCache key pages stands: Step, how
// many databases it has finished (it is in the Step-th in its order: 0, 1,
// ... forward, the last first in reverse), and the position in that one.
type FanoutPosition struct {
	Step int
	PagePosition
}

// FanoutKeyPage is a page of a FanoutCache's keys.
type FanoutKeyPage struct {
	Keys []kv.Key
	Next FanoutPosition
	More bool
}

// KeyPage is Keys in pages: up to limit rows looked at (Cache.KeyPage),
// from one database and, when it is done with rows to spare, the next
// ones. The zero position starts a run.
func (f *FanoutCache) KeyPage(ctx context.Context, at FanoutPosition, reverse bool, limit int, match string) (FanoutKeyPage, error) {
	if at.Step < 0 || at.Step >= len(f.dbs) {
		return FanoutKeyPage{}, fmt.Errorf("%w: database step %d of %d", kv.ErrInvalidValue, at.Step, len(f.dbs))
	}
	var out FanoutKeyPage
	for {
		db := at.Step
		if reverse {
			db = len(f.dbs) - 1 - at.Step
		}
		page, err := f.dbs[db].KeyPage(ctx, at.PagePosition, reverse, limit, match)
		if err != nil {
			return FanoutKeyPage{}, err
		}
		out.Keys = append(out.Keys, page.Keys...)
		limit -= page.Looked
		switch {
		case page.More:
			out.Next, out.More = FanoutPosition{Step: at.Step, PagePosition: page.Next}, true
			return out, nil
		case at.Step+1 == len(f.dbs):
			out.Next = FanoutPosition{Step: at.Step, PagePosition: page.Next}
			return out, nil
		}
		at = FanoutPosition{Step: at.Step + 1}
		if limit < 1 {
			out.Next, out.More = at, true
			return out, nil
		}
	}
}

// Counters returns the removal totals of every database, named caches,
// deques and indexes included (those opened since start).
func (f *FanoutCache) Counters() Counters {
	var out Counters
	for _, c := range append(f.subs(), f.dbs...) {
		n := c.Counters()
		out.Expired += n.Expired
		out.Evicted += n.Evicted
		out.Corrupt += n.Corrupt
	}
	return out
}

// subs returns the named caches, deques and indexes opened so far.
func (f *FanoutCache) subs() []*Cache {
	f.mu.Lock()
	defer f.mu.Unlock()
	subs := make([]*Cache, 0, len(f.caches)+len(f.deques)+len(f.indexes))
	for _, c := range f.caches {
		subs = append(subs, c)
	}
	for _, dq := range f.deques {
		subs = append(subs, dq.Cache())
	}
	for _, ix := range f.indexes {
		subs = append(subs, ix.Cache())
	}
	return subs
}

// Close closes every sub-collection handed out and every database. Calls after
// Close fail with ErrClosed.
func (f *FanoutCache) Close() error {
	f.mu.Lock()
	f.closed = true
	var subs []*Cache
	for _, c := range f.caches {
		subs = append(subs, c)
	}
	for _, d := range f.deques {
		subs = append(subs, d.c)
	}
	for _, x := range f.indexes {
		subs = append(subs, x.c)
	}
	for _, c := range f.absent {
		subs = append(subs, c)
	}
	clear(f.absent)
	clear(f.caches)
	clear(f.deques)
	clear(f.indexes)
	f.recent.Init()
	clear(f.recentAt)
	f.mu.Unlock()
	var err error
	for _, c := range subs {
		err = errors.Join(err, c.Close())
	}
	for _, c := range f.dbs {
		err = errors.Join(err, c.Close())
	}
	return err
}

// FanoutTx is a transaction over every database of a FanoutCache, given to the
// function passed to FanoutCache.Transact. Its single-key operations go to
// the database transaction that owns the key. Like Tx, it is used by one
// goroutine and only inside that function.
type FanoutTx struct {
	f   *FanoutCache
	txs []*Tx
}

// Transact runs fn with a write transaction held on every database, taken in
// database order (a database that is busy is retried until ctx ends, so two
// Transacts never deadlock). When fn returns nil every database commits; when
// it returns an error or panics every database rolls back. The databases are
// separate databases: the commits run one after another from the last database
// to database 0, so a commit failing after others succeeded (which SQLite
// reports only on I/O errors while the write lock is held) cannot undo
// them. Operations on f itself inside fn wait for the transaction; use tx.
func (f *FanoutCache) Transact(ctx context.Context, fn func(tx *FanoutTx) error) error {
	ftx := &FanoutTx{f: f, txs: make([]*Tx, len(f.dbs))}
	// The transactions of databases 1..n run inside the batch of database
	// 0, which holds a turn of the commit gate: they must not wait for one.
	inner := ctx
	if f.gate != nil {
		inner = f.gate.withTurnHeld(ctx)
	}
	var run func(i int) error
	run = func(i int) error {
		if i == len(f.dbs) {
			return fn(ftx)
		}
		for {
			entered := false
			txCtx := ctx
			if i > 0 {
				txCtx = inner
			}
			err := f.dbs[i].Transact(txCtx, func(tx *Tx) error {
				entered = true
				ftx.txs[i] = tx
				return run(i + 1)
			})
			if err == nil || entered || !errors.Is(err, kv.ErrTimeout) {
				return err
			}
			// The database was busy before the transaction began: retry.
			if err := f.beforeRetry(ctx, "transact", i, err); err != nil {
				return err
			}
		}
	}
	return run(0)
}

// DatabaseCount returns the number of databases.
func (tx *FanoutTx) DatabaseCount() int { return len(tx.txs) }

// Database returns the transaction of database i.
func (tx *FanoutTx) Database(i int) *Tx { return tx.txs[i] }

// DatabaseFor returns the transaction of the database that holds key.
func (tx *FanoutTx) DatabaseFor(key kv.Key) *Tx { return tx.txs[tx.f.DatabaseIndex(key)] }

// Set is FanoutCache.Set inside the transaction.
func (tx *FanoutTx) Set(key kv.Key, value kv.Value, opts kv.SetOptions) error {
	return tx.DatabaseFor(key).Set(key, value, opts)
}

// Add is FanoutCache.Add inside the transaction.
func (tx *FanoutTx) Add(key kv.Key, value kv.Value, opts kv.SetOptions) (bool, error) {
	return tx.DatabaseFor(key).Add(key, value, opts)
}

// Touch is FanoutCache.Touch inside the transaction.
func (tx *FanoutTx) Touch(key kv.Key, expire kv.Expiry) (bool, error) {
	return tx.DatabaseFor(key).Touch(key, expire)
}

// Get is FanoutCache.Get inside the transaction.
func (tx *FanoutTx) Get(key kv.Key, opts GetOptions) (Item, bool, error) {
	return tx.DatabaseFor(key).Get(key, opts)
}

// Pop is FanoutCache.Pop inside the transaction.
func (tx *FanoutTx) Pop(key kv.Key, opts GetOptions) (Item, bool, error) {
	return tx.DatabaseFor(key).Pop(key, opts)
}

// Delete is FanoutCache.Delete inside the transaction.
func (tx *FanoutTx) Delete(key kv.Key) (bool, error) {
	return tx.DatabaseFor(key).Delete(key)
}

// Contains is FanoutCache.Contains inside the transaction.
func (tx *FanoutTx) Contains(key kv.Key) (bool, error) {
	return tx.DatabaseFor(key).Contains(key)
}

// Incr is FanoutCache.Incr inside the transaction.
func (tx *FanoutTx) Incr(key kv.Key, delta, def kv.Value) (kv.Value, error) {
	return tx.DatabaseFor(key).Incr(key, delta, def)
}

// Decr is FanoutCache.Decr inside the transaction.
func (tx *FanoutTx) Decr(key kv.Key, delta, def kv.Value) (kv.Value, error) {
	return tx.DatabaseFor(key).Decr(key, delta, def)
}

// subDir returns the directory of sub-collection name of the given kind,
// after checking that it cannot leave the fanout directory.
func (f *FanoutCache) subDir(kind, name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	base := filepath.Join(f.dir, kind)
	dir := filepath.Join(base, filepath.FromSlash(name))
	if !strings.HasPrefix(dir, base+string(os.PathSeparator)) {
		return "", fmt.Errorf("%w: %q leaves the %s directory", kv.ErrInvalidName, name, kind)
	}
	return dir, nil
}

// openSub returns the sub-collection called name of one kind, opening its
// cache in dir/<kind>/<name> on first use with the fanout clock and the
// Cache default timeout (python-diskcache opens them with its defaults),
// and keeping it in open until the FanoutCache closes. unwrap gives the
// Cache of a sub-collection.
func openSub[T any](ctx context.Context, f *FanoutCache, kind, name string, open map[string]T, overrides func(dir string) map[settings.Name]any, wrap func(*Cache) T, unwrap func(T) *Cache) (T, error) {
	var zero T
	dir, err := f.lockSub(ctx, kind, name)
	if err != nil {
		return zero, err
	}
	x, ok := open[name]
	if !ok {
		c, err := Open(ctx, dir, f.subOptions(overrides(dir)))
		if err != nil {
			f.mu.Unlock()
			return zero, err
		}
		x = wrap(c)
		open[name] = x
	}
	least := f.used(unwrap(x))
	f.mu.Unlock()
	if least != nil {
		// Outside the lock: closing the last connection of a database
		// checkpoints its log.
		least.CloseIdle(0)
	}
	return x, nil
}

// lockSub returns the directory of the sub-collection name of a kind with
// f.mu held, once no drop of it runs; on error f.mu is not held.
func (f *FanoutCache) lockSub(ctx context.Context, kind, name string) (string, error) {
	dir, err := f.subDir(kind, name)
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	if err := f.waitDropped(ctx, dir); err != nil {
		f.mu.Unlock()
		return "", err
	}
	return dir, nil
}

// subOptions are the options a sub-collection is opened with.
func (f *FanoutCache) subOptions(s map[settings.Name]any) Options {
	return Options{Settings: s, Now: f.now, MaxConns: f.maxConns, MaxBytes: f.collectionMaxBytes.Load(), SyncFile: f.syncFile, BatchYield: f.batchYield, BackgroundCheckpoints: f.bgCheckpoints, PageSize: f.pageSize, SoleWriter: f.exclusive}
}

// used puts c first among the sub-collections used recently and returns
// the one that no longer fits among them (nil if none), whose connections
// the caller closes. Called with f.mu held.
func (f *FanoutCache) used(c *Cache) *Cache {
	if f.maxOpenSubs <= 0 {
		return nil
	}
	if e, ok := f.recentAt[c]; ok {
		f.recent.MoveToFront(e)
		return nil
	}
	c.retired.Store(false)
	f.recentAt[c] = f.recent.PushFront(c)
	if f.recent.Len() <= f.maxOpenSubs {
		return nil
	}
	least := f.recent.Remove(f.recent.Back()).(*Cache)
	delete(f.recentAt, least)
	least.retired.Store(true)
	return least
}

// OpenCollections counts the named caches, deques and indexes that hold
// database connections now.
func (f *FanoutCache) OpenCollections() int {
	n := 0
	for _, c := range f.subs() {
		if c.openConns() > 0 {
			n++
		}
	}
	return n
}

// SetCollectionMaxBytes bounds the named caches, deques and indexes opened
// from now on that do not cull (deques and indexes never do): see
// Options.MaxBytes. Zero means no bound, as in python-diskcache.
func (f *FanoutCache) SetCollectionMaxBytes(n int64) { f.collectionMaxBytes.Store(n) }

// CloseIdleCollections closes the SQLite connections of named caches,
// deques and indexes unused for at least d (see Cache.CloseIdle), so that
// many collections used now and then do not hold file descriptors.
func (f *FanoutCache) CloseIdleCollections(d time.Duration) int {
	n := 0
	for _, c := range f.subs() {
		n += c.CloseIdle(d)
	}
	return n
}

// noEviction is the setting python-diskcache opens deques and indexes with.
func noEviction(string) map[settings.Name]any {
	return map[settings.Name]any{settings.NameEvictionPolicy: string(settings.PolicyNone)}
}

// newCacheSettings are the settings a named cache in dir is opened with:
// FanoutOptions.CacheSizeLimit when it is created, nothing (its stored
// settings) after that.
func (f *FanoutCache) newCacheSettings(dir string) map[settings.Name]any {
	if f.cacheSizeLimit == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, DBName)); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	limit := f.cacheSizeLimit
	if limit < 0 {
		limit = f.dbs[0].Settings().SizeLimit
	}
	return map[settings.Name]any{settings.NameSizeLimit: limit}
}

// Cache returns the Cache called name, stored in dir/cache/<name> ("/" in
// name nests directories; see ValidateName), opened on first use and kept
// until the FanoutCache closes. Do not close it yourself.
func (f *FanoutCache) Cache(ctx context.Context, name string) (*Cache, error) {
	return openSub(ctx, f, fanoutCacheDir, name, f.caches, f.newCacheSettings, func(c *Cache) *Cache { return c }, func(c *Cache) *Cache { return c })
}

// CacheIfExists is Cache for reads: when no cache called name exists it
// creates none and returns an empty stand-in (with the settings a new named
// cache gets), on which only reads may run. A dropped cache that is read
// afterwards stays dropped, and reads of names nobody wrote leave nothing.
func (f *FanoutCache) CacheIfExists(ctx context.Context, name string) (*Cache, error) {
	return ifExists(ctx, f, fanoutCacheDir, name, f.caches, f.newCacheSettings, func(c *Cache) *Cache { return c }, func(c *Cache) *Cache { return c })
}

// DequeIfExists is Deque for reads: see CacheIfExists.
func (f *FanoutCache) DequeIfExists(ctx context.Context, name string) (*Deque, error) {
	return ifExists(ctx, f, fanoutDequeDir, name, f.deques, noEviction, func(c *Cache) *Deque { return NewDeque(c, 0) }, (*Deque).Cache)
}

// IndexIfExists is Index for reads: see CacheIfExists.
func (f *FanoutCache) IndexIfExists(ctx context.Context, name string) (*Index, error) {
	return ifExists(ctx, f, fanoutIndexDir, name, f.indexes, noEviction, NewIndex, (*Index).Cache)
}

// ifExists returns the sub-collection called name when it is open or on
// disk, else the stand-in of its kind: an empty cache in .absent/<kind>,
// opened on first use, that no write reaches.
func ifExists[T any](ctx context.Context, f *FanoutCache, kind, name string, open map[string]T, overrides func(dir string) map[settings.Name]any, wrap func(*Cache) T, unwrap func(T) *Cache) (T, error) {
	var zero T
	dir, err := f.lockSub(ctx, kind, name)
	if err != nil {
		return zero, err
	}
	_, isOpen := open[name]
	f.mu.Unlock()
	if _, err := os.Stat(filepath.Join(dir, DBName)); isOpen || !errors.Is(err, os.ErrNotExist) {
		return openSub(ctx, f, kind, name, open, overrides, wrap, unwrap)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return zero, kv.ErrClosed
	}
	c := f.absent[kind]
	if c == nil {
		// Made anew, so that it has the settings of a new collection now.
		standIn := filepath.Join(f.dir, absentDir, kind)
		if err := os.RemoveAll(standIn); err != nil {
			return zero, err
		}
		if c, err = Open(ctx, standIn, f.subOptions(overrides(standIn))); err != nil {
			return zero, err
		}
		if f.absent == nil {
			f.absent = make(map[string]*Cache)
		}
		f.absent[kind] = c
	}
	return wrap(c), nil
}

// Deque returns the Deque called name, stored in dir/deque/<name> with
// eviction policy none, opened on first use and kept until the FanoutCache
// closes. maxlen applies when the deque is first opened (0 means
// unbounded); later calls return the open deque as it is, as
// python-diskcache does: change it with SetMaxlen. Do not close it yourself.
func (f *FanoutCache) Deque(ctx context.Context, name string, maxlen int) (*Deque, error) {
	return openSub(ctx, f, fanoutDequeDir, name, f.deques, noEviction, func(c *Cache) *Deque { return NewDeque(c, maxlen) }, (*Deque).Cache)
}

// Index returns the Index called name, stored in dir/index/<name> with
// eviction policy none, opened on first use and kept until the FanoutCache
// closes. Do not close it yourself.
func (f *FanoutCache) Index(ctx context.Context, name string) (*Index, error) {
	return openSub(ctx, f, fanoutIndexDir, name, f.indexes, noEviction, NewIndex, (*Index).Cache)
}
