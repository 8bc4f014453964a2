package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestPackIsReadableAndReproducible(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "hello")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	const ref = "example.test/hello:v1"
	pack := func(out string) string {
		t.Helper()
		err := run(spec{out: out, tags: list{ref}, files: list{bin + ":/usr/bin/hello"}, nonroot: true, user: "65532:65532",
			entrypoint: list{"/usr/bin/hello"}, cmd: list{"serve"}, env: list{"A=b"}, labels: list{"k=v"}})
		if err != nil {
			t.Fatal(err)
		}
		tag, err := name.NewTag(ref)
		if err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(out, &tag)
		if err != nil {
			t.Fatal(err)
		}
		id, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Config.User != "65532:65532" || cfg.Config.Entrypoint[0] != "/usr/bin/hello" ||
			cfg.Config.Cmd[0] != "serve" || cfg.Config.Labels["k"] != "v" || cfg.OS != "linux" || cfg.Architecture != "amd64" {
			t.Fatalf("config = %+v", cfg.Config)
		}
		got := layerHeaders(t, out, ref)
		for _, want := range []string{"usr/", "usr/bin/", "usr/bin/hello", "etc/passwd", "etc/group", "tmp/", "home/nonroot/"} {
			if got[want] == nil {
				t.Errorf("layer lacks %s (has %v)", want, got)
			}
		}
		if h := got["tmp/"]; h != nil && h.Mode != 0o1777 {
			t.Errorf("/tmp mode = %o", h.Mode)
		}
		if h := got["usr/bin/hello"]; h != nil && (h.Mode != 0o755 || !h.ModTime.Equal(epoch)) {
			t.Errorf("hello: mode %o, mtime %v", h.Mode, h.ModTime)
		}
		return id.String()
	}
	a := pack(filepath.Join(dir, "a.tar"))
	b := pack(filepath.Join(dir, "b.tar"))
	if a != b {
		t.Errorf("the same files gave two image IDs: %s, %s", a, b)
	}
}

// layerHeaders reads the one layer of image ref in tarball out: its tar
// headers by name.
func layerHeaders(t *testing.T, out, ref string) map[string]*tar.Header {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h
	}
}

// TestPackDirectory: -dir adds a tree with its permission bits and its
// symbolic links as links; -exclude leaves out names at any depth and
// paths in the image, with everything under an excluded directory.
func TestPackDirectory(t *testing.T) {
	src := filepath.Join(t.TempDir(), "lib")
	write := func(rel string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(rel), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("os.py", 0o644)
	write("lib-dynload/_json.so", 0o755)
	write("json/__init__.py", 0o644)
	write("json/__pycache__/__init__.cpython-311.pyc", 0o644)
	write("__pycache__/os.cpython-311.pyc", 0o644)
	write("test/test_os.py", 0o644)
	write("unittest/test/test_case.py", 0o644)
	if err := os.Symlink("os.py", filepath.Join(src, "alias.py")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/nowhere.py", filepath.Join(src, "dangling.py")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "img.tar")
	const ref = "example.test/dir:v1"
	err := run(spec{out: out, tags: list{ref}, dirs: list{src + ":/usr/lib/python3.11"},
		excludes: list{"__pycache__", "/usr/lib/python3.11/test"}})
	if err != nil {
		t.Fatal(err)
	}
	got := layerHeaders(t, out, ref)
	want := map[string]int64{
		"usr/":                            0o755,
		"usr/lib/":                        0o755,
		"usr/lib/python3.11/":             0o755,
		"usr/lib/python3.11/os.py":        0o644,
		"usr/lib/python3.11/lib-dynload/": 0o755,
		"usr/lib/python3.11/lib-dynload/_json.so":       0o755,
		"usr/lib/python3.11/json/__init__.py":           0o644,
		"usr/lib/python3.11/unittest/test/test_case.py": 0o644,
	}
	for n, mode := range want {
		h := got[n]
		if h == nil {
			t.Errorf("layer lacks %s", n)
			continue
		}
		if h.Mode != mode || !h.ModTime.Equal(epoch) {
			t.Errorf("%s: mode %o, mtime %v", n, h.Mode, h.ModTime)
		}
	}
	for n, target := range map[string]string{"usr/lib/python3.11/alias.py": "os.py", "usr/lib/python3.11/dangling.py": "/etc/nowhere.py"} {
		if h := got[n]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != target {
			t.Errorf("%s: want a link to %s, got %+v", n, target, h)
		}
	}
	var names []string
	for n := range got {
		names = append(names, n)
	}
	sort.Strings(names)
	all := []string{"usr/", "usr/lib/", "usr/lib/python3.11/", "usr/lib/python3.11/alias.py",
		"usr/lib/python3.11/dangling.py", "usr/lib/python3.11/json/", "usr/lib/python3.11/json/__init__.py",
		"usr/lib/python3.11/lib-dynload/", "usr/lib/python3.11/lib-dynload/_json.so", "usr/lib/python3.11/os.py",
		"usr/lib/python3.11/unittest/", "usr/lib/python3.11/unittest/test/", "usr/lib/python3.11/unittest/test/test_case.py"}
	if strings.Join(names, " ") != strings.Join(all, " ") {
		t.Errorf("layer has\n%v\nwant (no __pycache__, no /usr/lib/python3.11/test)\n%v", names, all)
	}
}
