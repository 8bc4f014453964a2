package engine

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// newFileName returns a value file name as python-diskcache makes them:
// 16 random bytes in hex, split as ab/cd/rest.val, relative to the cache
// directory and always with forward slashes.
func newFileName() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	h := hex.EncodeToString(b[:])
	return h[0:2] + "/" + h[2:4] + "/" + h[4:] + ".val"
}

// incomingPrefix starts the names of value files being written: each is
// written in the cache directory under such a name and renamed to its
// place once whole, so an upload that a crash cuts leaves a file that
// Open of a cache this process alone writes removes (and Check reports)
// instead of an orphan among the value files.
const incomingPrefix = ".incoming-"

// createValueFile writes r to a new value file and returns its relative
// name and size. The file is written under an incoming name, then given
// its place: a name created exclusively first (so no other value's file is
// replaced), retried because another process may prune an empty directory
// between MkdirAll and OpenFile.
func (c *Cache) createValueFile(r io.Reader) (string, int64, error) {
	incoming, n, err := c.writeIncoming(r)
	if err != nil {
		return "", 0, err
	}
	defer c.unpend(incoming)
	src := filepath.Join(c.dir, incoming)
	var name, full string
	created := false // whether name is ours to remove
	newDirs := false // whether MkdirAll may have created the two directories
	for attempt := 1; attempt <= 10; attempt++ {
		name = newFileName()
		full = filepath.Join(c.dir, filepath.FromSlash(name))
		if _, serr := os.Stat(filepath.Dir(full)); serr != nil {
			newDirs = true
		}
		_ = os.MkdirAll(filepath.Dir(full), 0o755)
		var f *os.File
		if f, err = os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); err == nil {
			created = true
			c.pend(name) // from now on: Check must not take it for unknown
			err = f.Close()
			break
		}
	}
	if err == nil {
		err = os.Rename(src, full)
	}
	if err == nil && c.syncFile != nil {
		err = c.syncDirs(filepath.Dir(full), newDirs)
	}
	if err != nil {
		_ = os.Remove(src)
		if created {
			c.removeFile(name)
			c.unpend(name)
		}
		return "", 0, fmt.Errorf("engine: create value file: %w", err)
	}
	return name, n, nil
}

// writeIncoming writes r to a new file under an incoming name, pending
// (Check leaves it alone) until the caller unpends it.
func (c *Cache) writeIncoming(r io.Reader) (string, int64, error) {
	name := incomingPrefix + newFileName()[6:]
	full := filepath.Join(c.dir, name)
	f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", 0, fmt.Errorf("engine: create value file: %w", err)
	}
	c.pend(name)
	n, err := io.Copy(f, r)
	if err == nil && c.syncFile != nil {
		err = c.syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(full)
		c.unpend(name)
		return "", 0, fmt.Errorf("engine: write value file: %w", err)
	}
	return name, n, nil
}

// removeIncoming removes the incoming files a process that stopped while
// writing them left in the cache directory. Only for a directory this
// process alone writes (Options.Exclusive, Options.SoleWriter): in a
// shared one they may be another process's.
func (c *Cache) removeIncoming() error {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() && strings.HasPrefix(e.Name(), incomingPrefix) {
			if err := os.Remove(filepath.Join(c.dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// syncDirs syncs the directory that holds a new value file's name and,
// when it may be new itself, its parent and the cache directory, whose
// entries name it.
func (c *Cache) syncDirs(dir string, newDirs bool) error {
	dirs := []string{dir}
	if newDirs {
		dirs = append(dirs, filepath.Dir(dir), c.dir)
	}
	for _, d := range dirs {
		f, err := os.Open(d)
		if err != nil {
			return err
		}
		err = c.syncFile(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sync %s: %w", d, err)
		}
	}
	return nil
}

// pend marks a value file as written but not yet committed, so Check does
// not take it for an unknown file; unpend ends that.
func (c *Cache) pend(name string) {
	c.pendingMu.Lock()
	c.pending[name] = struct{}{}
	c.pendingMu.Unlock()
}

func (c *Cache) unpend(names ...string) {
	c.pendingMu.Lock()
	for _, n := range names {
		delete(c.pending, n)
	}
	c.pendingMu.Unlock()
}

func (c *Cache) isPending(name string) bool {
	c.pendingMu.Lock()
	defer c.pendingMu.Unlock()
	_, ok := c.pending[name]
	return ok
}

// removeFile removes a value file and prunes its now empty directories.
// Errors are ignored: another process may have removed them first.
func (c *Cache) removeFile(name string) {
	full := filepath.Join(c.dir, filepath.FromSlash(name))
	if err := os.Remove(full); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return
	}
	for dir := filepath.Dir(full); dir != c.dir && len(dir) > len(c.dir); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			return
		}
	}
}

// openValueFile opens a value file for reading.
func (c *Cache) openValueFile(name string) (*os.File, error) {
	return os.Open(filepath.Join(c.dir, filepath.FromSlash(name)))
}
