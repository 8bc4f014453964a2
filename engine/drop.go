package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// DropCache removes the named cache called name: its items, its settings
// and its files (nested collections, "name/…", stay). It waits for the
// operations in progress on it; handles returned by Cache before are closed
// (calls on them fail with kv.ErrClosed) and the next Cache(name) creates it
// anew. It returns how many items the cache held: 0, and no error, when
// there is no such cache.
func (f *FanoutCache) DropCache(ctx context.Context, name string) (int64, error) {
	return dropSub(ctx, f, fanoutCacheDir, name, f.caches, func(c *Cache) *Cache { return c })
}

// DropDeque is DropCache for the deque called name.
func (f *FanoutCache) DropDeque(ctx context.Context, name string) (int64, error) {
	return dropSub(ctx, f, fanoutDequeDir, name, f.deques, (*Deque).Cache)
}

// DropIndex is DropCache for the index called name.
func (f *FanoutCache) DropIndex(ctx context.Context, name string) (int64, error) {
	return dropSub(ctx, f, fanoutIndexDir, name, f.indexes, (*Index).Cache)
}

// dropSub removes the sub-collection called name of one kind. While it
// runs, openSub of the same name waits (it would open the files being
// removed), and so does another drop of it.
func dropSub[T any](ctx context.Context, f *FanoutCache, kind, name string, open map[string]T, unwrap func(T) *Cache) (int64, error) {
	dir, err := f.lockSub(ctx, kind, name)
	if err != nil {
		return 0, err
	}
	x, isOpen := open[name]
	done := make(chan struct{})
	if f.dropping == nil {
		f.dropping = make(map[string]chan struct{})
	}
	f.dropping[dir] = done
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.dropping, dir)
		f.mu.Unlock()
		close(done)
	}()

	var c *Cache
	if isOpen {
		c = unwrap(x)
	} else {
		if _, err := os.Stat(filepath.Join(dir, DBName)); errors.Is(err, os.ErrNotExist) {
			// No such collection; what a drop cut short left goes.
			return 0, f.removeCollectionFiles(dir, filepath.Join(f.dir, kind))
		}
		if c, err = Open(ctx, dir, f.subOptions(nil)); err != nil {
			if IsCorruptDatabase(err) {
				// Damaged beyond opening: what a drop is for. Its items
				// cannot be counted.
				return 0, f.removeCollectionFiles(dir, filepath.Join(f.dir, kind))
			}
			return 0, fmt.Errorf("drop %s %q: %w", kind, name, err)
		}
	}
	n, err := c.Len(ctx)
	corrupt := IsCorruptDatabase(err)
	if err != nil && !corrupt {
		if !isOpen {
			_ = c.Close()
		}
		return 0, fmt.Errorf("drop %s %q: %w", kind, name, err)
	}
	if isOpen {
		f.mu.Lock()
		delete(open, name)
		if e, ok := f.recentAt[c]; ok {
			f.recent.Remove(e)
			delete(f.recentAt, c)
		}
		f.mu.Unlock()
	}
	// Close waits for the connections in use, and checkpoints the log, so
	// that no write lands in the files once they are gone.
	if err := c.Close(); err != nil && !corrupt && !IsCorruptDatabase(err) {
		return 0, fmt.Errorf("drop %s %q: close: %w", kind, name, err)
	}
	if err := f.removeCollectionFiles(dir, filepath.Join(f.dir, kind)); err != nil {
		return 0, fmt.Errorf("drop %s %q: %w", kind, name, err)
	}
	return n, nil
}

// waitDropped waits, with f.mu held (released while it waits), until no
// drop of the collection in dir is running.
func (f *FanoutCache) waitDropped(ctx context.Context, dir string) error {
	for {
		if f.closed {
			return kv.ErrClosed
		}
		done := f.dropping[dir]
		if done == nil {
			return nil
		}
		f.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			f.mu.Lock()
			return ctx.Err()
		}
		f.mu.Lock()
	}
}

// removeCollectionFiles removes the files of the collection in dir, then
// dir and its parents up to base while they are empty. A collection's own
// files are the regular files in dir (its database, the database's log and
// the value files being written) and its value directories; any other
// directory holds a nested collection and stays. The database goes first,
// and durably: a drop cut short leaves value files nobody names (which the
// next drop of the name, or check, removes), never a collection that comes
// back with some of its items.
func (f *FanoutCache) removeCollectionFiles(dir, base string) error {
	for _, name := range []string{DBName + "-wal", DBName + "-shm", DBName} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := f.syncDir(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch {
		case !e.IsDir():
			err = os.Remove(p)
		case IsValueDirName(e.Name()):
			err = os.RemoveAll(p)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	// Under f.mu, as openSub creates directories: it could otherwise find
	// a parent gone between creating it and its child.
	f.mu.Lock()
	defer f.mu.Unlock()
	for d := dir; d != base && strings.HasPrefix(d, base+string(os.PathSeparator)); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break // not empty: a nested collection
		}
	}
	return nil
}

// syncDir makes the removals in dir durable.
func (f *FanoutCache) syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	sync := f.syncFile
	if sync == nil {
		sync = (*os.File).Sync
	}
	err = sync(d)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
