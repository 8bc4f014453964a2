package cacheserver

import "testing"

// planGoMemory: the Go memory limit is --memory-limit less the SQLite page
// caches and settings.MemoryOutsideGo, never below the heap's own share
// (hot values + settings.MemoryGoBaseline) nor above the container's limit;
// none without --memory-limit; and GOMEMLIMIT in the environment wins.
func TestPlanGoMemory(t *testing.T) {
	const mi = 1 << 20
	for _, c := range []struct {
		name                     string
		memoryLimit, hot, sqlite int64
		gomemlimit               string
		wantLimit                int64
		wantFrom                 string
		wantFloored              bool
	}{
		{name: "no limit", hot: 32 * mi, sqlite: 128 * mi},
		{name: "the defaults in 1Gi", memoryLimit: 1024 * mi, hot: 32 * mi, sqlite: 128 * mi,
			wantLimit: (1024 - 128 - 16) * mi, wantFrom: memoryLimitFromFlag},
		// 208Mi is the operator's estimate with the defaults: the heap
		// gets exactly its share.
		{name: "the estimate", memoryLimit: 208 * mi, hot: 32 * mi, sqlite: 128 * mi,
			wantLimit: (32 + 32) * mi, wantFrom: memoryLimitFromFlag},
		{name: "below the estimate: the floor", memoryLimit: 128 * mi, hot: 32 * mi, sqlite: 128 * mi,
			wantLimit: (32 + 32) * mi, wantFrom: memoryLimitFromFlag, wantFloored: true},
		{name: "below the floor: the container's limit", memoryLimit: 40 * mi, hot: 32 * mi, sqlite: 128 * mi,
			wantLimit: 40 * mi, wantFrom: memoryLimitFromFlag, wantFloored: true},
		{name: "GOMEMLIMIT wins", memoryLimit: 1024 * mi, hot: 32 * mi, sqlite: 128 * mi, gomemlimit: "300MiB",
			wantFrom: memoryLimitFromEnv},
		{name: "GOMEMLIMIT=off wins", memoryLimit: 1024 * mi, hot: 32 * mi, sqlite: 128 * mi, gomemlimit: "off",
			wantFrom: memoryLimitFromEnv},
	} {
		p := planGoMemory(c.memoryLimit, c.hot, c.sqlite, c.gomemlimit)
		if p.limit != c.wantLimit || p.from != c.wantFrom || p.floored != c.wantFloored {
			t.Errorf("%s: limit %d from %q floored %v, want %d from %q floored %v",
				c.name, p.limit, p.from, p.floored, c.wantLimit, c.wantFrom, c.wantFloored)
		}
	}
}
