package cacheserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/diskcache-operator/diskcache-operator/engine"
)

// reserveFileName is the file in the data directory that holds space back
// for a full disk (python-diskcache ignores files it does not know).
const reserveFileName = ".diskcache-reserve"

// diskGuard keeps a full data volume manageable. It holds a reserve file
// of --disk-reserve-bytes; the first write that fails for lack of space
// marks the disk full and deletes the reserve, so that deletes, clear,
// evict and cull (which SQLite must journal) have room to free space.
// While full, requests that store new data are refused with 507 at once;
// /readyz stays 200 (status disk_full), so that the deletes and settings
// that free space still reach the shard. Once the volume has twice the reserve free
// again, the reserve is taken back and the disk is no longer full.
type diskGuard struct {
	dir     string
	reserve int64
	log     *slog.Logger
	gauge   prometheus.Gauge

	mu   sync.Mutex
	full bool
	// fullFlag mirrors full for the lock-free check of every request.
	fullFlag atomic.Bool
	// giveBack, when set, copies the databases' logs back and restarts
	// them, so that what deletes freed reaches the file system: without
	// commits (writes refused) nothing else does. Run in the background
	// while full and short of space, at most every giveBackEvery.
	giveBack     func(context.Context) error
	givingBack   bool
	lastGiveBack time.Time
}

// giveBackEvery spaces the checkpoints a full volume asks for.
const giveBackEvery = 2 * time.Second

func newDiskGuard(dir string, reserve int64, log *slog.Logger, gauge prometheus.Gauge) *diskGuard {
	d := &diskGuard{dir: dir, reserve: reserve, log: log, gauge: gauge}
	if _, err := os.Stat(d.path()); errors.Is(err, fs.ErrNotExist) && !d.roomForReserve() {
		// Released when the volume filled, and not taken back since: the
		// space left is the deletes', and the databases' start needs some.
		d.markFull(errors.New("less than twice the disk reserve free at start"))
		return d
	}
	switch err := d.fillReserve(); {
	case engine.IsNoSpace(err):
		d.markFull(err)
	case err != nil:
		log.Warn("serving without a disk reserve", slog.Any("error", err))
		d.reserve = 0
	}
	return d
}

func (d *diskGuard) path() string { return filepath.Join(d.dir, reserveFileName) }

// fillReserve allocates the reserve file (really allocated, not sparse).
func (d *diskGuard) fillReserve() error {
	if d.reserve <= 0 {
		return nil
	}
	if st, err := os.Stat(d.path()); err == nil && st.Size() == d.reserve {
		return nil
	}
	f, err := os.OpenFile(d.path(), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("disk reserve: %w", err)
	}
	err = syscall.Fallocate(int(f.Fd()), 0, 0, d.reserve)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(d.path())
		return fmt.Errorf("disk reserve: %w", err)
	}
	return nil
}

// noteError marks the disk full when err is a write failing for space.
func (d *diskGuard) noteError(err error) {
	if engine.IsNoSpace(err) {
		d.markFull(err)
	}
}

func (d *diskGuard) markFull(cause error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.full {
		return
	}
	d.full = true
	d.fullFlag.Store(true)
	d.gauge.Set(1)
	if err := os.Remove(d.path()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.Error("data volume full; could not release the reserve", slog.Any("error", err))
	}
	d.log.Error("data volume full: refusing new data until space is freed; deletes, clear, evict and cull go on",
		slog.String("data_dir", d.dir), slog.Int64("reserve_bytes", d.reserve), slog.Any("error", cause))
}

// isFull reports whether the disk is full, first checking whether space
// has come back.
func (d *diskGuard) isFull() bool {
	if !d.fullFlag.Load() {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.full {
		return false
	}
	if !d.roomForReserve() {
		d.giveBackSpace()
		return true
	}
	if err := d.fillReserve(); err != nil {
		return true
	}
	d.full = false
	d.fullFlag.Store(false)
	d.gauge.Set(0)
	d.log.Info("data volume has space again: accepting new data", slog.String("data_dir", d.dir))
	return false
}

// storesData reports whether a route stores new data, which a full disk
// refuses up front. Deletes, pops, clear, evict, expire, cull, check and
// settings changes go on, and so do the releases of locks and semaphores.
func storesData(pattern string) bool {
	method, path, _ := strings.Cut(pattern, " ")
	if method == "PUT" {
		return !strings.HasSuffix(path, "/tag-index")
	}
	if method != "POST" {
		return false
	}
	for _, suffix := range []string{"/add", "/replace", "/push", "/items", "/batch/set", "/setdefault", "/incr", "/decr", "/acquire", "/refresh"} {
		if strings.HasSuffix(path, suffix) {
			return true
		}
	}
	// An average's new value, a rate limit's count: each a row written.
	return strings.Contains(path, "/averages/") || strings.Contains(path, "/ratelimits/")
}

// giveBackSpace starts giveBack in the background unless it runs or ran
// within giveBackEvery; d.mu is held.
func (d *diskGuard) giveBackSpace() {
	if d.giveBack == nil || d.givingBack || time.Since(d.lastGiveBack) < giveBackEvery {
		return
	}
	d.givingBack = true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.giveBack(ctx); err != nil {
			d.log.Warn("full data volume: could not copy the logs back to give space back", slog.Any("error", err))
		}
		d.mu.Lock()
		d.givingBack = false
		d.lastGiveBack = time.Now()
		d.mu.Unlock()
	}()
}

// roomForReserve reports whether the volume has twice the reserve free (at
// least 2 MiB): enough to take the reserve back and still store.
func (d *diskGuard) roomForReserve() bool {
	var st syscall.Statfs_t
	return syscall.Statfs(d.dir, &st) == nil && int64(st.Bavail)*st.Bsize >= 2*max(d.reserve, 1<<20)
}
