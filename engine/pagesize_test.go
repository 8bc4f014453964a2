package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// A database Open creates gets Options.PageSize; one that exists keeps its
// own, whatever a later Open asks for; python-diskcache reads it, values
// spread over overflow pages and a key longer than an index page holds
// included.
func TestPageSizeOfNewDatabases(t *testing.T) {
	dir := t.TempDir()
	longKey := kv.TextKey(strings.Repeat("k", 700)) // past what an index cell of a 2 KiB page holds
	small, large := kv.Bytes([]byte("a small value")), kv.Bytes(bytes.Repeat([]byte("0123456789"), 1000))

	c, err := Open(utCtx, dir, Options{PageSize: 2048})
	if err != nil {
		t.Fatal(err)
	}
	utSet(t, c, kv.TextKey("small"), small, kv.SetOptions{})
	utSet(t, c, kv.TextKey("large"), large, kv.SetOptions{})
	utSet(t, c, longKey, small, kv.SetOptions{})
	if got := utQueryInt(t, c, "PRAGMA page_size"); got != 2048 {
		t.Fatalf("page_size of a new database = %d, want 2048", got)
	}
	if got, want := c.pageSize, int64(2048); got != want {
		t.Fatalf("the cache counts its volume in pages of %d bytes, want %d", got, want)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c, err = Open(utCtx, dir, Options{PageSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	if got := utQueryInt(t, c, "PRAGMA page_size"); got != 2048 {
		t.Fatalf("page_size after reopening with PageSize 1024 = %d, want the 2048 it was created with", got)
	}
	utWant(t, c, kv.TextKey("large"), large)
	utWant(t, c, longKey, small)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	o := cxRequireOracle(t)
	script := `
import diskcache, json, sys
c = diskcache.Cache(sys.argv[1])
print(json.dumps([c.get("small").decode(), len(c.get("large")), c.get("k" * 700).decode(), c.check()]))
`
	out, err := exec.Command(o.python, "-c", script, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("python-diskcache: %v\n%s", err, out)
	}
	var got []any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("python-diskcache: %s", out)
	}
	if want := []any{"a small value", 10000.0, "a small value", []any{}}; !equalJSON(got, want) {
		t.Fatalf("python-diskcache read %v, want %v", got, want)
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestPageSizeMustBeAPowerOfTwo(t *testing.T) {
	for _, n := range []int{-1, 256, 1000, 3072, 131072} {
		if _, err := Open(utCtx, t.TempDir(), Options{PageSize: n}); !errors.Is(err, kv.ErrInvalidSetting) {
			t.Errorf("Open with PageSize %d: %v, want ErrInvalidSetting", n, err)
		}
	}
}
