package cacheserver

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
)

// TestFsyncValueFilesFlag: with --fsync-value-files every value file a
// write creates is synced (in the server's cache, a named cache, a deque
// and an index); without it none is.
func TestFsyncValueFilesFlag(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(map[bool]string{false: "off", true: "on"}[on], func(t *testing.T) {
			args := []string{"--data-dir", t.TempDir(), "--insecure-no-auth", "--fanout", "2"}
			if on {
				args = append(args, "--fsync-value-files")
			}
			cfg, err := LoadConfig(args, func(string) string { return "" })
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			synced := map[string]bool{}
			cfg.syncFile = func(f *os.File) error {
				mu.Lock()
				synced[f.Name()] = true
				mu.Unlock()
				return f.Sync()
			}
			srv, err := New(context.Background(), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.Close() })
			value := bytes.Repeat([]byte("v"), 64<<10) // above every disk_min_file_size
			for _, req := range []struct{ method, target string }{
				{"PUT", "/v1/keys/k"},
				{"PUT", "/v1/caches/named/keys/k"},
				{"POST", "/v1/deques/dq/push"},
				{"PUT", "/v1/indexes/ix/keys/k"},
			} {
				rec := httptest.NewRecorder()
				srv.Handler().ServeHTTP(rec, httptest.NewRequest(req.method, req.target, bytes.NewReader(value)))
				if rec.Code >= 300 {
					t.Fatalf("%s %s: %d %s", req.method, req.target, rec.Code, rec.Body)
				}
			}
			rec := httptest.NewRecorder()
			srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/config", nil))
			var conf wire.ServerConfig
			if err := json.Unmarshal(rec.Body.Bytes(), &conf); err != nil || conf.FsyncValueFiles != on {
				t.Errorf("GET /v1/config: %s (%v)", rec.Body, err)
			}
			var files []string
			_ = filepath.WalkDir(cfg.DataDir, func(p string, _ os.DirEntry, err error) error {
				if err == nil && strings.HasSuffix(p, ".val") {
					files = append(files, p)
				}
				return err
			})
			if len(files) != 4 {
				t.Fatalf("value files: %v", files)
			}
			// Each file is synced under its incoming name, before it takes
			// its place, then the directory that names it there.
			incoming := 0
			for name := range synced {
				if strings.HasPrefix(filepath.Base(name), ".incoming-") {
					incoming++
				}
			}
			if want := map[bool]int{false: 0, true: len(files)}[on]; incoming != want {
				t.Errorf("--fsync-value-files=%v: %d value files synced, want %d (synced: %v)", on, incoming, want, synced)
			}
			for _, f := range files {
				if synced[filepath.Dir(f)] != on {
					t.Errorf("--fsync-value-files=%v: the directory of %s synced: %v", on, f, synced[filepath.Dir(f)])
				}
			}
		})
	}
}
