package engine

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// CheckFanout refuses a directory whose databases hold items under another
// fanout, and nothing else.
func TestCheckFanout(t *testing.T) {
	openWith := func(t *testing.T, dir string, n, items int) {
		t.Helper()
		f, err := OpenFanout(t.Context(), dir, FanoutOptions{Fanout: n})
		if err != nil {
			t.Fatal(err)
		}
		for i := range items {
			if err := f.Set(t.Context(), kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}

	if err := CheckFanout(filepath.Join(t.TempDir(), "none"), 8); err != nil {
		t.Errorf("a directory not yet made: %v", err)
	}

	four := t.TempDir()
	openWith(t, four, 4, 50)
	if err := CheckFanout(four, 4); err != nil {
		t.Errorf("its own fanout: %v", err)
	}
	for _, n := range []int{2, 3, 5, 8} {
		if err := CheckFanout(four, n); !errors.Is(err, ErrFanoutMismatch) {
			t.Errorf("fanout %d on a directory of 4 databases with items: %v, want ErrFanoutMismatch", n, err)
		}
	}

	// Databases without items do not count: a first start cut short, or a
	// cache never written.
	empty := t.TempDir()
	openWith(t, empty, 4, 0)
	if err := CheckFanout(empty, 8); err != nil {
		t.Errorf("fanout 8 on 4 empty databases: %v", err)
	}

	// Other names in the directory (named caches, quarantine) are not
	// fanout databases.
	if err := os.MkdirAll(filepath.Join(four, "cache", "007"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(four, "0007"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := CheckFanout(four, 4); err != nil {
		t.Errorf("its own fanout, with other directories beside: %v", err)
	}
}

// A directory python-diskcache's FanoutCache wrote with 4 shards is refused
// with any other fanout.
func TestCheckFanoutPythonDirectory(t *testing.T) {
	foRequirePython(t)
	dir := t.TempDir()
	script := `import sys, diskcache
c = diskcache.FanoutCache(sys.argv[1], shards=4)
for i in range(40):
    c[i] = i
c.close()`
	if out, err := exec.Command(foPython, "-c", script, dir).CombinedOutput(); err != nil {
		t.Fatalf("python-diskcache: %v\n%s", err, out)
	}
	if err := CheckFanout(dir, 4); err != nil {
		t.Errorf("its own fanout: %v", err)
	}
	if err := CheckFanout(dir, 8); !errors.Is(err, ErrFanoutMismatch) {
		t.Errorf("fanout 8: %v, want ErrFanoutMismatch", err)
	}
}
