package cacheserver_test

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// hotGets sums diskcache_hot_value_gets_total{result} over the databases.
func hotGets(t *testing.T, srv *testserver.Server, result string) int {
	t.Helper()
	n := 0
	for _, l := range strings.Split(scrape(t, srv), "\n") {
		if strings.HasPrefix(l, "diskcache_hot_value_gets_total{") && strings.Contains(l, `result="`+result+`"`) {
			v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", l, err)
			}
			n += int(v)
		}
	}
	return n
}

func TestHotValuesServeRepeatedGets(t *testing.T) {
	srv, c := startServer(t)
	cache := c.Cache("")
	ctx := t.Context()
	k := kv.TextKey("greeting")
	want := func(v string) {
		t.Helper()
		it, ok, err := cache.Get(ctx, k)
		if err != nil || !ok || string(it.Value.Data) != v {
			t.Fatalf("GET = %q, %v, %v; want %q", it.Value.Data, ok, err, v)
		}
	}
	if err := cache.Set(ctx, k, kv.Text("hello"), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		want("hello")
	}
	if n := hotGets(t, srv, "hit"); n != 3 {
		t.Fatalf("gets answered from memory = %d, want 3 (the set's value went to memory)", n)
	}
	// A write replaces what memory holds.
	if err := cache.Set(ctx, k, kv.Text("bye"), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	want("bye")
	if _, err := cache.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := cache.Get(ctx, k); ok || err != nil {
		t.Fatalf("GET after DELETE = %v, %v; want a miss", ok, err)
	}

	off, c0 := startServer(t, "--hot-value-bytes", "0")
	if err := c0.Cache("").Set(ctx, k, kv.Text("hello"), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, ok, err := c0.Cache("").Get(ctx, k); !ok || err != nil {
			t.Fatalf("GET = %v, %v", ok, err)
		}
	}
	if n := hotGets(t, off, "hit"); n != 0 {
		t.Fatalf("--hot-value-bytes 0: %d gets answered from memory", n)
	}
}

// TestSecondServerOnOneDataDirFails starts a second server on a running
// server's data directory: it exits at once saying another process has the
// database open, instead of serving values the first one changes behind
// its in-memory copies; the first one serves on. With --hot-value-bytes 0
// the directory is shared, as python-diskcache shares its directories.
func TestSecondServerOnOneDataDirFails(t *testing.T) {
	first, c := startServer(t)
	if err := c.Cache("").Set(t.Context(), kv.TextKey("k"), kv.Int(1), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testserver.Binary(t), "--data-dir", first.DataDir, "--listen", "127.0.0.1:0", "--insecure-no-auth")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("second server on one data directory: %v, want a non-zero exit\n%s", err, out)
	}
	if !strings.Contains(string(out), "another process has the database open") {
		t.Fatalf("second server's output does not say why it stopped:\n%s", out)
	}
	if v, ok, err := c.Cache("").Get(t.Context(), kv.TextKey("k")); err != nil || !ok || !v.Value.Equal(kv.Int(1)) {
		t.Fatalf("first server after the second one failed: get = %+v, %v, %v", v, ok, err)
	}

	shared := filepath.Join(t.TempDir(), "data")
	for range 2 {
		testserver.Start(t, testserver.Options{DataDir: shared, Args: []string{"--hot-value-bytes", "0"}})
	}
}
