package cacheserver_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

func usage(t *testing.T, s *testserver.Server) wire.Usage {
	t.Helper()
	st, _, b := do(t, http.MethodGet, s.URL+"/v1/usage", s.Token, nil, nil)
	var u wire.Usage
	if st != http.StatusOK || json.Unmarshal(b, &u) != nil {
		t.Fatalf("GET /v1/usage: %d %s", st, b)
	}
	return u
}

// TestUsageCountsRequestsAtTheOwner: a request forwarded by one shard counts
// as served at its owner only, a cluster-wide operation once on each shard,
// and reading the figures counts nowhere (the autoscaler's reads must not
// be load).
func TestUsageCountsRequestsAtTheOwner(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	a, b := c.Shards[0], c.Shards[1]
	ua0, ub0 := usage(t, a), usage(t, b)
	if ua0.Shard != 0 || ub0.Shard != 1 || ua0.Started == "" {
		t.Fatalf("usage %+v %+v", ua0, ub0)
	}
	if again := usage(t, a); again.ServedRequests != ua0.ServedRequests || again.Started != ua0.Started {
		t.Fatalf("reading the figures changed them: %+v then %+v", ua0, again)
	}
	// Keys owned by shard 1, all sent to shard 0.
	sent := 0
	for i := 0; sent < 25; i++ {
		key := fmt.Sprint("k", i)
		if ownerOf(key, 2) != 1 {
			continue
		}
		if st, _, body := do(t, http.MethodPut, a.URL+"/v1/keys/"+key, a.Token, []byte("v"), nil); st/100 != 2 {
			t.Fatalf("PUT %s: %d %s", key, st, body)
		}
		sent++
	}
	if st, _, body := do(t, http.MethodGet, a.URL+"/v1/info", a.Token, nil, nil); st != http.StatusOK {
		t.Fatalf("info: %d %s", st, body)
	}
	for _, s := range c.Shards {
		if e, n, m := metricValue(t, s, "diskcache_topology_epoch"), metricValue(t, s, "diskcache_topology_shards"), metricValue(t, s, "diskcache_topology_moving"); e != 1 || n != 2 || m != 0 {
			t.Errorf("%s: topology gauges epoch %v, shards %v, moving %v; want 1, 2, 0", s.URL, e, n, m)
		}
	}
	ua, ub := usage(t, a), usage(t, b)
	if got := ub.ServedRequests - ub0.ServedRequests; got != int64(sent)+1 {
		t.Errorf("owner served %d requests, want the %d forwarded writes and its part of info", got, sent)
	}
	if got := ua.ServedRequests - ua0.ServedRequests; got != 1 {
		t.Errorf("the forwarding shard served %d requests, want only its part of info", got)
	}
}

// TestUsageReportsDiskUseAndEvictions: disk_bytes is the data directory's
// allocated space less the reserve, it falls when items are removed, and
// evicted_items counts what culling removed.
func TestUsageReportsDiskUseAndEvictions(t *testing.T) {
	const limit, reserve = 4 << 20, 1 << 20
	srv, c := startServer(t, "--size-limit", strconv.Itoa(limit), "--fanout", "2", "--disk-reserve-bytes", strconv.Itoa(reserve))
	cache := c.Cache("")
	write := func(prefix string, n int) {
		for i := range n {
			if err := cache.Set(t.Context(), kv.TextKey(fmt.Sprint(prefix, i)), kv.Bytes(make([]byte, 100<<10)), kv.SetOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	empty := usage(t, srv)
	write("a", 20) // 2 MB in value files, under the limit
	u := usage(t, srv)
	if u.SizeLimit != limit || u.EvictedItems != 0 || u.VolumeBytes < 2_000_000 {
		t.Fatalf("after 2 MB: %+v", u)
	}
	if dir := allocated(t, srv.DataDir); u.DiskBytes != dir-reserve || u.DiskBytes < u.VolumeBytes {
		t.Errorf("disk_bytes %d; the directory holds %d with a %d reserve, volume %d", u.DiskBytes, dir, reserve, u.VolumeBytes)
	}
	if u.DiskBytes-empty.DiskBytes < 2_000_000 {
		t.Errorf("disk_bytes grew by %d for 2 MB of values", u.DiskBytes-empty.DiskBytes)
	}
	write("b", 40) // 4 MB more: culling must evict
	full := usage(t, srv)
	if full.EvictedItems == 0 {
		t.Errorf("nothing evicted after writing twice the limit: %+v", full)
	}
	if _, err := cache.Clear(t.Context()); err != nil {
		t.Fatal(err)
	}
	if cleared := usage(t, srv); cleared.DiskBytes >= full.DiskBytes-2_000_000 {
		t.Errorf("disk_bytes %d after clear, %d before", cleared.DiskBytes, full.DiskBytes)
	}
}

func allocated(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		total += info.Sys().(*syscall.Stat_t).Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// TestMetricsReportFill: /metrics says how full the shard is (its files
// against size_limit and the filesystem) and counts what culling removed
// from named caches too, as /v1/usage does for the autoscaler.
func TestMetricsReportFill(t *testing.T) {
	const limit, reserve = 4 << 20, 1 << 20
	srv, c := startServer(t, "--size-limit", strconv.Itoa(limit), "--fanout", "2", "--disk-reserve-bytes", strconv.Itoa(reserve))
	named := c.Cache("sessions") // a fanout database's share of size_limit: 2 MB
	for i := range 40 {
		if err := named.Set(t.Context(), kv.TextKey(fmt.Sprint("n", i)), kv.Bytes(make([]byte, 100<<10)), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	u := usage(t, srv)
	if u.EvictedItems == 0 {
		t.Errorf("usage counts no evictions after 4 MB into a named cache of 2 MB: %+v", u)
	}
	if got := metricValue(t, srv, "diskcache_evicted_total"); got != float64(u.EvictedItems) {
		t.Errorf("diskcache_evicted_total %v, usage evicted_items %d", got, u.EvictedItems)
	}
	if got := metricValue(t, srv, "diskcache_size_limit_bytes"); got != limit {
		t.Errorf("diskcache_size_limit_bytes %v, want %d", got, limit)
	}
	used := metricValue(t, srv, "diskcache_disk_used_bytes")
	if dir := allocated(t, srv.DataDir); used != float64(dir-reserve) || used < 2_000_000 {
		t.Errorf("diskcache_disk_used_bytes %v; the directory holds %d with a %d reserve", used, dir, reserve)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(srv.DataDir, &st); err != nil {
		t.Fatal(err)
	}
	size, avail := metricValue(t, srv, "diskcache_filesystem_size_bytes"), metricValue(t, srv, "diskcache_filesystem_avail_bytes")
	if size != float64(st.Blocks)*float64(st.Bsize) || avail <= 0 || avail > size {
		t.Errorf("filesystem size %v avail %v; statfs says %d blocks of %d", size, avail, st.Blocks, st.Bsize)
	}
}
