package cacheserver

import (
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"

	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// Where the Go memory limit comes from.
const (
	memoryLimitFromFlag = "memory-limit"
	memoryLimitFromEnv  = "GOMEMLIMIT"
)

// goMemoryPlan is the Go memory limit a server sets at start: without one
// the garbage collector lets the heap grow to twice what is live (GOGC), and
// a burst (hot values filling, large bodies, many connections) can take the
// container past its memory limit, where the kernel kills it.
type goMemoryPlan struct {
	// limit is what to give runtime/debug.SetMemoryLimit; 0: leave the
	// runtime's (none, or GOMEMLIMIT's).
	limit int64
	// from is memoryLimitFromFlag, memoryLimitFromEnv, or "" (none).
	from string
	// sqlite is what the fanout databases' page caches may hold, outside
	// the Go heap; floored: --memory-limit leaves the heap less than its
	// share of the operator's estimate, and limit is held at that share.
	sqlite  int64
	floored bool
}

// planGoMemory decides the Go memory limit for a container limit of
// memoryLimit bytes (--memory-limit; 0: unknown), hot bytes of hot values
// and SQLite page caches of sqlite bytes. GOMEMLIMIT, when the environment
// sets it (gomemlimit: its value), is what the runtime already runs with,
// and wins.
func planGoMemory(memoryLimit, hot, sqlite int64, gomemlimit string) goMemoryPlan {
	p := goMemoryPlan{sqlite: sqlite}
	switch {
	case gomemlimit != "":
		p.from = memoryLimitFromEnv
	case memoryLimit > 0:
		p.from = memoryLimitFromFlag
		p.limit, p.floored = settings.GoMemoryLimit(memoryLimit, hot, sqlite)
	}
	return p
}

// sqliteCacheBytes is what the page caches of the fanout databases may hold
// with one connection each: cache_size (the cache's sqlite_cache_size) pages
// of each database's own page size (one that exists keeps the size it was
// created with).
func sqliteCacheBytes(fc *engine.FanoutCache) int64 {
	cacheSize := fc.Settings().SQLiteCacheSize
	var n int64
	for i := range fc.DatabaseCount() {
		n += settings.SQLiteCacheBytes(cacheSize, fc.Database(i).PageSize())
	}
	return n
}

// applyGoMemoryLimit sets the process's Go memory limit as planGoMemory
// decides for cfg, and logs it.
func applyGoMemoryLimit(cfg *Config, fc *engine.FanoutCache, gomemlimit string, log *slog.Logger) {
	p := planGoMemory(cfg.MemoryLimit, cfg.HotValueBytes, sqliteCacheBytes(fc), gomemlimit)
	if p.limit > 0 {
		debug.SetMemoryLimit(p.limit)
	}
	attrs := []any{slog.Int64("go_memory_limit", goMemoryLimit()), slog.Int64("memory_limit", cfg.MemoryLimit),
		slog.Int64("sqlite_page_caches", p.sqlite), slog.Int64("hot_value_bytes", cfg.HotValueBytes)}
	switch {
	case p.from == memoryLimitFromEnv:
		log.Info("Go memory limit from GOMEMLIMIT in the environment, which wins over --memory-limit",
			append(attrs, slog.String("GOMEMLIMIT", gomemlimit))...)
	case p.floored:
		log.Warn(fmt.Sprintf("--memory-limit leaves the Go heap less than hot-value-bytes + %d MiB after the SQLite page caches and %d MiB for threads: "+
			"the Go memory limit is held at that floor and the shard may be OOMKilled; raise the memory limit (docs/operations.md, Memory)",
			settings.MemoryGoBaseline>>20, settings.MemoryOutsideGo>>20), attrs...)
	case p.from == memoryLimitFromFlag:
		log.Info(fmt.Sprintf("Go memory limit: --memory-limit less the SQLite page caches and %d MiB for threads", settings.MemoryOutsideGo>>20), attrs...)
	default:
		log.Info("no Go memory limit (no --memory-limit, no GOMEMLIMIT)", attrs...)
	}
}

// goMemoryLimit is the Go runtime's memory limit; 0: none.
func goMemoryLimit() int64 {
	if n := debug.SetMemoryLimit(-1); n != math.MaxInt64 {
		return n
	}
	return 0
}
