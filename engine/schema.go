package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/diskcache-operator/diskcache-operator/settings"
)

// Schema statements, as python-diskcache 5.4 creates them. Triggers use
// single-quoted literals; databases whose triggers python-diskcache created
// with double quotes keep theirs (IF NOT EXISTS) and still work because
// SQLite's double-quoted-string fallback stays enabled.
var schema = []string{
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
	`CREATE TRIGGER IF NOT EXISTS Settings_count_insert AFTER INSERT ON Cache FOR EACH ROW BEGIN UPDATE Settings SET value = value + 1 WHERE key = 'count'; END`,
	`CREATE TRIGGER IF NOT EXISTS Settings_count_delete AFTER DELETE ON Cache FOR EACH ROW BEGIN UPDATE Settings SET value = value - 1 WHERE key = 'count'; END`,
	`CREATE TRIGGER IF NOT EXISTS Settings_size_insert AFTER INSERT ON Cache FOR EACH ROW BEGIN UPDATE Settings SET value = value + NEW.size WHERE key = 'size'; END`,
	`CREATE TRIGGER IF NOT EXISTS Settings_size_update AFTER UPDATE ON Cache FOR EACH ROW BEGIN UPDATE Settings SET value = value + NEW.size - OLD.size WHERE key = 'size'; END`,
	`CREATE TRIGGER IF NOT EXISTS Settings_size_delete AFTER DELETE ON Cache FOR EACH ROW BEGIN UPDATE Settings SET value = value - OLD.size WHERE key = 'size'; END`,
}

const (
	createTagIndex = `CREATE INDEX IF NOT EXISTS Cache_tag_rowid ON Cache(tag, rowid)`
	dropTagIndex   = `DROP INDEX IF EXISTS Cache_tag_rowid`
)

// metadata rows kept in Settings beside the settings.
var metadata = []string{"count", "size", "hits", "misses"}

// openRetry is how long "database is locked" is retried while opening,
// as python-diskcache does.
const openRetry = 60 * time.Second

// initBusyWait is the busy timeout of each attempt while opening.
const initBusyWait = 50 * time.Millisecond

func (c *Cache) init(ctx context.Context, overrides map[settings.Name]any) error {
	retryFor := openRetry
	if c.exclusive {
		// A lock held by another process is then held for as long as it
		// runs: say so at once rather than in a minute.
		retryFor = 0
	}
	lockedOut := func(err error) error {
		if c.exclusive && isBusy(err) {
			return fmt.Errorf("another process has the database open, and this one opens it exclusively: %w", err)
		}
		return err
	}
	cn, err := openConn(c.dbPath, max(retryFor, initBusyWait), c.exclusive) // as long as the retries below
	if err != nil {
		return lockedOut(err)
	}
	if c.exclusive {
		// This connection's lock is the process's: it stays open until
		// Close, so that the lock does too.
		c.holder = cn
	} else {
		defer cn.close()
	}
	if err := cn.pragma("busy_timeout", initBusyWait.Milliseconds()); err != nil {
		return lockedOut(err)
	}
	retry := func(f func() error) error {
		deadline := time.Now().Add(retryFor)
		for {
			err := f()
			if err == nil || !isBusy(err) || time.Now().After(deadline) {
				return lockedOut(err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
	}

	set := DefaultSettings()
	var stored [][]any
	err = retry(func() error {
		rows, err := cn.queryRows(`SELECT key, value FROM Settings`, 2)
		if err != nil && strings.Contains(err.Error(), "no such table") {
			return nil
		}
		stored = stored[:0]
		for _, r := range rows {
			stored = append(stored, []any{r[0], r[1]})
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("read settings: %w", err)
	}
	for _, r := range stored {
		key, _ := r[0].(string)
		name := settings.Name(key)
		if _, known := set.Get(name); known != nil {
			continue // metadata and settings of other Disk classes
		}
		if err := set.Set(name, r[1]); err != nil {
			return fmt.Errorf("stored setting: %w", err)
		}
	}
	for name, v := range overrides {
		if err := set.Set(name, v); err != nil {
			return err
		}
	}

	if c.newPageSize > 0 {
		// Before anything is written: a database that has pages keeps
		// their size, and SQLite ignores the pragma there.
		if err := retry(func() error { return cn.execScript("PRAGMA page_size = " + strconv.Itoa(c.newPageSize)) }); err != nil {
			return err
		}
	}
	// Pragmas first: auto_vacuum only takes effect before tables exist.
	for _, p := range []struct {
		name  string
		value any
	}{
		{"auto_vacuum", set.SQLiteAutoVacuum},
		{"cache_size", set.SQLiteCacheSize},
		{"journal_mode", set.SQLiteJournalMode},
		{"mmap_size", set.SQLiteMmapSize},
		{"synchronous", set.SQLiteSynchronous},
	} {
		if err := retry(func() error { return cn.pragma(p.name, p.value) }); err != nil {
			return err
		}
	}

	err = retry(func() error {
		if err := cn.execScript("BEGIN IMMEDIATE"); err != nil {
			return err
		}
		if err := c.writeSchema(cn, &set); err != nil {
			_ = cn.execScript("ROLLBACK")
			return err
		}
		return cn.execScript("COMMIT")
	})
	if err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	if c.pageSize, err = cn.queryInt("PRAGMA page_size"); err != nil {
		return err
	}
	// The database holding a single item still has page 1, a root page
	// per table and index, and a page of Settings rows.
	trees, err := cn.queryInt(`SELECT count(*) FROM sqlite_schema WHERE rootpage > 0`)
	if err != nil {
		return err
	}
	c.minPages = trees + 2
	c.settings.Store(&set)
	return nil
}

func (c *Cache) writeSchema(cn *conn, s *Settings) error {
	if err := cn.execScript(`CREATE TABLE IF NOT EXISTS Settings ( key TEXT NOT NULL UNIQUE, value)`); err != nil {
		return err
	}
	for _, name := range settings.Names() {
		v, _ := s.Get(name)
		if _, err := cn.exec(`INSERT OR REPLACE INTO Settings VALUES (?, ?)`, string(name), v); err != nil {
			return err
		}
	}
	for _, name := range metadata {
		if _, err := cn.exec(`INSERT OR IGNORE INTO Settings VALUES (?, 0)`, name); err != nil {
			return err
		}
	}
	for _, q := range schema {
		if err := cn.execScript(q); err != nil {
			return err
		}
	}
	if idx := policies[s.EvictionPolicy].index; idx != "" {
		if err := cn.execScript(idx); err != nil {
			return err
		}
	}
	q := dropTagIndex
	if s.TagIndex {
		q = createTagIndex
	}
	return cn.execScript(q)
}

// Reset changes the setting called name, applies it at once (pragmas on
// every connection, the eviction policy's index, the tag index) and persists
// it in the Settings table, like python-diskcache's reset(key, value).
func (c *Cache) Reset(ctx context.Context, name settings.Name, value any) error {
	c.settingsMu.Lock()
	defer c.settingsMu.Unlock()
	next := *c.settings.Load()
	if err := next.Set(name, value); err != nil {
		return err
	}
	stored, _ := next.Get(name)
	err := c.Transact(ctx, func(tx *Tx) error {
		if _, err := tx.cn.exec(`UPDATE Settings SET value = ? WHERE key = ?`, stored, string(name)); err != nil {
			return err
		}
		switch name {
		case settings.NameEvictionPolicy:
			if idx := policies[next.EvictionPolicy].index; idx != "" {
				return tx.cn.execScript(idx)
			}
		case settings.NameTagIndex:
			if next.TagIndex {
				return tx.cn.execScript(createTagIndex)
			}
			return tx.cn.execScript(dropTagIndex)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("engine: reset %s: %w", name, err)
	}
	c.settings.Store(&next)
	if strings.HasPrefix(string(name), "sqlite_") {
		if name == settings.NameSQLiteJournalMode || name == settings.NameSQLiteAutoVacuum {
			if err := c.applyFilePragma(ctx, name, stored); err != nil {
				return err
			}
		}
		c.pragmaGen.Add(1)
	}
	return nil
}

// applyFilePragma sets a pragma that is a property of the database file.
func (c *Cache) applyFilePragma(ctx context.Context, name settings.Name, v any) error {
	cn, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.release(cn)
	return cn.pragma(strings.TrimPrefix(string(name), "sqlite_"), v)
}

// Reload rereads every setting from the Settings table, picking up changes
// made by another process.
func (c *Cache) Reload(ctx context.Context) error {
	c.settingsMu.Lock()
	defer c.settingsMu.Unlock()
	cn, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.release(cn)
	rows, err := cn.queryRows(`SELECT key, value FROM Settings`, 2)
	if err != nil {
		return fmt.Errorf("engine: reload settings: %w", err)
	}
	next := *c.settings.Load()
	for _, r := range rows {
		key, _ := r[0].(string)
		name := settings.Name(key)
		if _, unknown := next.Get(name); unknown != nil {
			continue
		}
		if err := next.Set(name, r[1]); err != nil {
			return fmt.Errorf("engine: reload settings: %w", err)
		}
	}
	c.settings.Store(&next)
	c.pragmaGen.Add(1)
	return nil
}

// CreateTagIndex creates the tag index and persists tag_index = 1.
func (c *Cache) CreateTagIndex(ctx context.Context) error {
	return c.Reset(ctx, settings.NameTagIndex, true)
}

// DropTagIndex drops the tag index and persists tag_index = 0.
func (c *Cache) DropTagIndex(ctx context.Context) error {
	return c.Reset(ctx, settings.NameTagIndex, false)
}

var errNoRow = errors.New("no row")
