package testfiles

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestBelow(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"a", filepath.Join("b", "c"), filepath.Join("b", "d", "e")} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := []string{"a", filepath.Join("b", "c"), filepath.Join("b", "d", "e")}
	if got := Below(t, dir); !slices.Equal(got, want) {
		t.Errorf("Below = %q; want %q", got, want)
	}
	if got := Below(t, filepath.Join(dir, "missing")); len(got) != 0 {
		t.Errorf("Below of a missing directory = %q; want none", got)
	}
}
