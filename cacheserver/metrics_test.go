package cacheserver_test

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// The per-database gauges carry the index of the database in the fanout as
// their "database" label (a shard is a pod, not one of these).
func TestMetricsPerFanoutDatabase(t *testing.T) {
	srv, c := startServer(t, "--fanout", "3")
	for i := range 10 {
		if err := c.Cache("").Set(context.Background(), kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	databases := map[string]bool{}
	items := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, m := range []string{"diskcache_items", "diskcache_volume_bytes", "diskcache_value_file_bytes"} {
			rest, ok := strings.CutPrefix(line, m+"{")
			if !ok {
				continue
			}
			labels, value, _ := strings.Cut(rest, "} ")
			db, ok := strings.CutPrefix(labels, `database="`)
			if !ok || strings.Contains(labels, ",") {
				t.Fatalf("%s has labels {%s}, want only database", m, labels)
			}
			databases[m+"/"+strings.TrimSuffix(db, `"`)] = true
			if m == "diskcache_items" {
				n, err := strconv.ParseFloat(value, 64)
				if err != nil {
					t.Fatal(err)
				}
				items += n
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(databases) != 9 || !databases["diskcache_items/2"] || items != 10 {
		t.Fatalf("series %v with %v items; want 3 metrics × databases 0-2 and 10 items", databases, items)
	}
}
