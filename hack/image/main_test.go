package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
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
		err := run(out, list{ref}, list{bin + ":/usr/bin/hello"}, true, "65532:65532",
			list{"/usr/bin/hello"}, list{"serve"}, list{"A=b"}, list{"k=v"})
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
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got[h.Name] = h
		}
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
