package engine

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// TestSyncFileBeforeCommit: with Options.SyncFile a new value file is
// synced whole, then the directories naming it, while its row is not yet
// visible; a failed sync fails the write and leaves neither row nor file.
func TestSyncFileBeforeCommit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	value := bytes.Repeat([]byte("v"), 4096)
	var c *Cache
	var synced []string
	var failSync error
	key := kv.TextKey("k")
	c, err := Open(ctx, dir, Options{
		Settings: map[settings.Name]any{settings.NameDiskMinFileSize: int64(1024)},
		SyncFile: func(f *os.File) error {
			synced = append(synced, f.Name())
			if strings.HasSuffix(f.Name(), ".val") {
				if b, err := os.ReadFile(f.Name()); err != nil || !bytes.Equal(b, value) {
					t.Errorf("synced %s holds %d bytes (%v), want the whole value", f.Name(), len(b), err)
				}
				if _, ok, err := c.Get(ctx, key, GetOptions{}); ok || err != nil {
					t.Errorf("the row of %s is visible (%v) before its file is synced", f.Name(), err)
				}
			}
			return failSync
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })

	if err := c.Set(ctx, kv.TextKey("k"), kv.Bytes(value), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	files := valueFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("value files: %v", files)
	}
	// The file is synced under its incoming name, before it takes its
	// place; then the directories that name it there.
	want := []string{filepath.Dir(files[0]), filepath.Dir(filepath.Dir(files[0])), dir}
	if len(synced) != 4 || !strings.HasPrefix(synced[0], filepath.Join(dir, incomingPrefix)) || strings.Join(synced[1:], "\n") != strings.Join(want, "\n") {
		t.Fatalf("synced\n%s\nwant an incoming file, then\n%s", strings.Join(synced, "\n"), strings.Join(want, "\n"))
	}

	// A small value lives in its row: nothing to sync but SQLite's own.
	synced = nil
	if err := c.Set(ctx, kv.TextKey("small"), kv.Bytes([]byte("x")), kv.SetOptions{}); err != nil || len(synced) != 0 {
		t.Fatalf("small value: %v, synced %v", err, synced)
	}

	failSync, key = errors.New("disk gone"), kv.TextKey("lost")
	if err := c.Set(ctx, key, kv.Bytes(value), kv.SetOptions{}); !errors.Is(err, failSync) {
		t.Fatalf("Set with a failing sync = %v", err)
	}
	if _, ok, _ := c.Get(ctx, kv.TextKey("lost"), GetOptions{}); ok {
		t.Fatal("a value whose file failed to sync was stored")
	}
	if files := valueFiles(t, dir); len(files) != 1 {
		t.Fatalf("value files after the failed sync: %v", files)
	}
}

func valueFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".val") {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// BenchmarkSetFileValue measures what Options.SyncFile costs a write of a
// file-backed value (run it with TMPDIR on the disk in question: a tmpfs
// syncs for free).
func BenchmarkSetFileValue(b *testing.B) {
	for _, sync := range []bool{false, true} {
		b.Run(map[bool]string{false: "nosync", true: "fsync"}[sync], func(b *testing.B) {
			opts := Options{}
			if sync {
				opts.SyncFile = (*os.File).Sync
			}
			c, err := Open(context.Background(), b.TempDir(), opts)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			value := kv.Bytes(bytes.Repeat([]byte("v"), 64<<10))
			b.SetBytes(64 << 10)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := c.Set(context.Background(), kv.IntKey(int64(i)), value, kv.SetOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
