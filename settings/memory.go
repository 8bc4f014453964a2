package settings

// What a shard's memory is made of (docs/operations.md, Memory): the hot
// values and the Go runtime live in the Go heap; SQLite's page caches,
// thread stacks and SQLite's other allocations live outside it, where the
// Go runtime neither sees nor bounds them. The operator estimates a shard's
// need from these (MemoryLimitTooLow); the cacheserver sets its Go memory
// limit from them (--memory-limit).
const (
	// SQLiteCachePages is the page cache SQLite may fill per connection to
	// a database: python-diskcache's sqlite_cache_size, 2^13 pages.
	SQLiteCachePages = 1 << 13
	// MemoryGoBaseline is what the Go heap holds besides the hot values:
	// the runtime, the connections' buffers and request bodies in flight.
	MemoryGoBaseline = 32 << 20
	// MemoryOutsideGo is what lives outside the Go heap besides the SQLite
	// page caches: thread stacks, cgo, and SQLite's schemas, statements
	// and WAL indexes.
	MemoryOutsideGo = 16 << 20
	// MemoryBaseline is what a shard uses besides its hot values and its
	// SQLite page caches.
	MemoryBaseline = MemoryGoBaseline + MemoryOutsideGo
)

// SQLiteCacheBytes is what one connection's page cache holds at most with
// SQLite's cache_size cacheSize (pages when positive, KiB when negative)
// and pages of pageSize bytes.
func SQLiteCacheBytes(cacheSize, pageSize int64) int64 {
	if cacheSize < 0 {
		return -cacheSize << 10
	}
	return cacheSize * pageSize
}

// GoMemoryLimit is the soft memory limit for the Go runtime of a shard
// whose container may use limit bytes, whose SQLite page caches may hold
// sqlite bytes and which keeps hot bytes of values in memory: what limit
// leaves after sqlite and MemoryOutsideGo, but at least hot +
// MemoryGoBaseline, the heap's own share of the operator's estimate (a
// limit below what the heap holds anyway would keep the garbage collector
// running without saving the shard from the OOM killer), and at most limit.
// floored says the floor applied: limit is below the estimate. 0 (no limit)
// when limit is 0.
func GoMemoryLimit(limit, hot, sqlite int64) (goLimit int64, floored bool) {
	if limit <= 0 {
		return 0, false
	}
	goLimit = limit - sqlite - MemoryOutsideGo
	if floor := hot + MemoryGoBaseline; goLimit < floor {
		goLimit, floored = floor, true
	}
	return min(goLimit, limit), floored
}
