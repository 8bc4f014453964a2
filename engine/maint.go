package engine

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// Len returns Settings.count: the number of items, expired ones included.
func (c *Cache) Len(ctx context.Context) (int64, error) {
	return c.readSetting(ctx, "count")
}

// ValueFileBytes returns Settings.size: the bytes of all value files.
func (c *Cache) ValueFileBytes(ctx context.Context) (int64, error) {
	return c.readSetting(ctx, "size")
}

// StatCounts reads the hit and miss counters without changing anything.
func (c *Cache) StatCounts(ctx context.Context) (hits, misses int64, err error) {
	if hits, err = c.readSetting(ctx, "hits"); err != nil {
		return 0, 0, err
	}
	misses, err = c.readSetting(ctx, "misses")
	return hits, misses, err
}

func (c *Cache) readSetting(ctx context.Context, name string) (int64, error) {
	cn, err := c.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.release(cn)
	n, err := cn.queryInt(`SELECT value FROM Settings WHERE key = ?`, name)
	if err != nil {
		return 0, fmt.Errorf("engine: read %s: %w", name, err)
	}
	return n, nil
}

// Stats returns the hit and miss counts as they were before any reset,
// resets them to zero when reset is set, and turns statistics on or off.
func (c *Cache) Stats(ctx context.Context, enable, reset bool) (hits, misses int64, err error) {
	err = c.write(ctx, "stats", func(tx *Tx) error {
		var err error
		if hits, err = tx.cn.queryInt(`SELECT value FROM Settings WHERE key = 'hits'`); err != nil {
			return err
		}
		if misses, err = tx.cn.queryInt(`SELECT value FROM Settings WHERE key = 'misses'`); err != nil {
			return err
		}
		if reset {
			if _, err := tx.cn.exec(`UPDATE Settings SET value = 0 WHERE key IN ('hits', 'misses')`); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	if c.Settings().Statistics != enable {
		err = c.Reset(ctx, settings.NameStatistics, enable)
	}
	return hits, misses, err
}

// Check verifies the database and value files as python-diskcache's
// check() does; with fix it repairs what it finds: VACUUM, row sizes that
// differ from their file, rows whose file is gone, files no row names,
// empty directories, and the count and size metadata.
func (c *Cache) Check(ctx context.Context, fix bool) ([]kv.Warning, error) {
	var warns []kv.Warning
	cn, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := cn.queryRows(`PRAGMA integrity_check`, 1)
	if err == nil && !(len(rows) == 1 && rows[0][0] == "ok") {
		for _, r := range rows {
			warns = append(warns, kv.Warning{Kind: kv.WarnIntegrity, Message: fmt.Sprint(r[0])})
		}
	}
	if err == nil && fix {
		// VACUUM writes the whole database into the log: copy it back
		// here, where the caller asked for maintenance, rather than
		// after the next batch of writes (past walInlineSize), which
		// would hold up the writes queued behind it.
		if err = cn.execScript(`VACUUM`); err == nil {
			_, err = c.checkpoint(cn, "PASSIVE")
		}
	}
	c.release(cn)
	if err != nil {
		return warns, fmt.Errorf("engine: check: %w", err)
	}

	err = c.write(ctx, "check", func(tx *Tx) error {
		rows, err := tx.cn.queryRows(`SELECT rowid, size, filename FROM Cache WHERE filename IS NOT NULL`, 3)
		if err != nil {
			return err
		}
		known := map[string]bool{}
		for _, r := range rows {
			rowid, size, name := r[0].(int64), toInt(r[1]), fmt.Sprint(r[2])
			full := filepath.Join(c.dir, filepath.FromSlash(name))
			known[full] = true
			st, err := os.Stat(full)
			if err == nil {
				if st.Size() != size {
					warns = append(warns, kv.Warning{Kind: kv.WarnFileSize, Path: full,
						Message: fmt.Sprintf("wrong file size: %s, %d != %d", full, st.Size(), size)})
					// The file no longer holds the value written (reads
					// answer a miss): remove the item and its file.
					// python-diskcache instead records the new size and
					// serves the damaged bytes.
					if fix {
						if err := tx.deleteRow(rowid); err != nil {
							return err
						}
						tx.removeAfterCommit(name)
					}
				}
				continue
			}
			warns = append(warns, kv.Warning{Kind: kv.WarnFileMissing, Path: full, Message: "file not found: " + full})
			if fix {
				if err := tx.deleteRow(rowid); err != nil {
					return err
				}
			}
		}
		var unknown, empty []string
		err = filepath.WalkDir(c.dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // vanished while walking
			}
			if d.IsDir() {
				if path != c.dir {
					// A sub-collection nested inside this directory (python's
					// layout allows cache "a/b" inside cache "a") is another
					// cache: its files are not ours to judge.
					if _, err := os.Stat(filepath.Join(path, DBName)); err == nil {
						return filepath.SkipDir
					}
					if ents, err := os.ReadDir(path); err == nil && len(ents) == 0 {
						empty = append(empty, path)
					}
				}
				return nil
			}
			rel, _ := filepath.Rel(c.dir, path)
			if !known[path] && !strings.Contains(filepath.Base(path), DBName) && !c.isPending(filepath.ToSlash(rel)) {
				unknown = append(unknown, path)
			}
			return nil
		})
		if err != nil {
			return err
		}
		sort.Strings(unknown)
		for _, p := range unknown {
			warns = append(warns, kv.Warning{Kind: kv.WarnUnknownFile, Path: p, Message: "unknown file: " + p})
			if fix {
				_ = os.Remove(p)
			}
		}
		for _, p := range empty {
			warns = append(warns, kv.Warning{Kind: kv.WarnEmptyDir, Path: p, Message: "empty directory: " + p})
			if fix {
				_ = os.Remove(p)
			}
		}
		if fix && (len(unknown) > 0 || len(empty) > 0) {
			// Removing files and directories can empty their parents; prune
			// those too so one fix leaves nothing for the next check.
			for _, p := range append(unknown, empty...) {
				for dir := filepath.Dir(p); len(dir) > len(c.dir); dir = filepath.Dir(dir) {
					if os.Remove(dir) != nil {
						break
					}
				}
			}
		}
		for _, m := range []struct {
			name, actual string
			kind         kv.WarningKind
			label        string
		}{
			{"count", `SELECT COUNT(key) FROM Cache`, kv.WarnCountMismach, "Settings.count != COUNT(Cache.key)"},
			{"size", `SELECT COALESCE(SUM(size), 0) FROM Cache`, kv.WarnSizeMismatch, "Settings.size != SUM(Cache.size)"},
		} {
			stored, err := tx.cn.queryInt(`SELECT value FROM Settings WHERE key = ?`, m.name)
			if err != nil {
				return err
			}
			actual, err := tx.cn.queryInt(m.actual)
			if err != nil {
				return err
			}
			if stored != actual {
				warns = append(warns, kv.Warning{Kind: m.kind, Message: fmt.Sprintf("%s; %d != %d", m.label, stored, actual)})
				if fix {
					if _, err := tx.cn.exec(`UPDATE Settings SET value = ? WHERE key = ?`, actual, m.name); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	return warns, err
}
