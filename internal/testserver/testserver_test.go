package testserver

import (
	"os"
	"path/filepath"
	"testing"
)

// A process started by a test process (a fuzzing worker) builds into the
// directory its parent made and passed on, and one that finds the binary
// there does not build again: nothing of theirs is left for the parent to
// miss when it removes its directory.
func TestBuildUsesTheDirectoryPassedOn(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(binDirEnv, dir)

	path, err := build()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "cacheserver"); path != want {
		t.Fatalf("built %s, want %s", path, want)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("the directory holds %d files after a build, want only the binary", len(entries))
	}

	// A marker in place of the binary: a second process must take it as
	// it is rather than build over it.
	if err := os.WriteFile(path, []byte("built by another process"), 0o755); err != nil {
		t.Fatal(err)
	}
	again, err := build()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(again)
	if err != nil {
		t.Fatal(err)
	}
	if again != path || string(got) != "built by another process" {
		t.Fatalf("the second build gave %s (%d bytes), want the file already at %s", again, len(got), path)
	}
}
