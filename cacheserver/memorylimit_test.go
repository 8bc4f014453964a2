package cacheserver_test

import (
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// TestGoMemoryLimitFromTheContainer starts real servers with the
// container's memory limit, as the operator passes it (the environment
// variable DISKCACHE_MEMORY_LIMIT, from the downward API) or as a flag, and
// reads back the Go memory limit they run with from GET /v1/config and from
// the Go collector's go_gc_gomemlimit_bytes in /metrics: the limit less the
// page caches of the databases (2 × 8192 pages of 4096 bytes: 64 MiB) and
// 16 MiB. GOMEMLIMIT in the environment wins over it.
func TestGoMemoryLimitFromTheContainer(t *testing.T) {
	const mi = 1 << 20
	args := []string{"--fanout", "2", "--page-size", "4096"}
	for _, c := range []struct {
		name   string
		args   []string
		env    []string
		wantGo int64
		log    string
	}{
		{"from the environment, as the operator passes it", args, []string{"DISKCACHE_MEMORY_LIMIT=1073741824", "GOMEMLIMIT="},
			(1024 - 64 - 16) * mi, "Go memory limit: --memory-limit less the SQLite page caches"},
		{"GOMEMLIMIT wins", append([]string{"--memory-limit", "1073741824"}, args...), []string{"GOMEMLIMIT=300MiB"},
			300 * mi, "Go memory limit from GOMEMLIMIT in the environment"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := testserver.Start(t, testserver.Options{Args: c.args, Env: c.env})
			cfg := serverConfig(t, srv)
			if cfg.MemoryLimitBytes != 1024*mi || cfg.GoMemoryLimitBytes != c.wantGo {
				t.Errorf("GET /v1/config: memory_limit_bytes %d, go_memory_limit_bytes %d; want %d, %d",
					cfg.MemoryLimitBytes, cfg.GoMemoryLimitBytes, 1024*mi, c.wantGo)
			}
			if got := metricValue(t, srv, "go_gc_gomemlimit_bytes"); got != float64(c.wantGo) {
				t.Errorf("go_gc_gomemlimit_bytes %v, want %d", got, c.wantGo)
			}
			if !strings.Contains(srv.Logs(), c.log) {
				t.Errorf("no log line %q:\n%s", c.log, srv.Logs())
			}
		})
	}
}
