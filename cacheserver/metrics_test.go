package cacheserver_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
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

// TestMetricsRequireToken: with --metrics-require-token /metrics answers
// 401 without the data token and serves the metrics with it; without the
// flag it stays public (Prometheus without credentials).
func TestMetricsRequireToken(t *testing.T) {
	scrape := func(srv *testserver.Server, token string) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	locked := testserver.Start(t, testserver.Options{Args: []string{"--metrics-require-token"}})
	if code, body := scrape(locked, ""); code != http.StatusUnauthorized || !strings.Contains(body, `"unauthorized"`) {
		t.Errorf("without a token: %d %s", code, body)
	}
	if code, body := scrape(locked, "wrong"); code != http.StatusUnauthorized {
		t.Errorf("with a wrong token: %d %s", code, body)
	}
	if code, body := scrape(locked, locked.Token); code != http.StatusOK || !strings.Contains(body, "diskcache_items{") {
		t.Errorf("with the token: %d %.200s", code, body)
	}
	open := testserver.Start(t, testserver.Options{})
	if code, body := scrape(open, ""); code != http.StatusOK || !strings.Contains(body, "diskcache_items{") {
		t.Errorf("public /metrics: %d %.200s", code, body)
	}
}
