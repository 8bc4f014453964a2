package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// withStderr runs f with os.Stderr (where the flag package writes the
// usage) sent to a file, and returns what f wrote there.
func withStderr(t *testing.T, f func()) string {
	t.Helper()
	out, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	saved := os.Stderr
	os.Stderr = out
	defer func() { os.Stderr = saved }()
	f()
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// -h and --help print the usage and exit 0, with no error line.
func TestHelpExitsZero(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		var errOut bytes.Buffer
		status := -1
		usage := withStderr(t, func() { status = exitStatus(run([]string{arg}, nil), &errOut) })
		if status != 0 {
			t.Errorf("%s: exit status %d, want 0", arg, status)
		}
		if errOut.Len() > 0 {
			t.Errorf("%s: error output %q, want none", arg, errOut.String())
		}
		if !strings.Contains(usage, "Usage of cacheserver:") || !strings.Contains(usage, "-data-dir") {
			t.Errorf("%s: usage not printed:\n%s", arg, usage)
		}
		if strings.Contains(usage, "help requested") {
			t.Errorf("%s: %q in the output:\n%s", arg, flag.ErrHelp, usage)
		}
	}
}

// Errors are prefixed with "cacheserver: " exactly once, whether or not
// they already carry it, and exit 1.
func TestErrorPrefixedOnce(t *testing.T) {
	for _, err := range []error{
		errors.New("--token-file is required"),
		fmt.Errorf("cacheserver: open /data: %w", errors.New("database is locked")),
	} {
		var out bytes.Buffer
		if status := exitStatus(err, &out); status != 1 {
			t.Errorf("%v: exit status %d, want 1", err, status)
		}
		if got := out.String(); !strings.HasPrefix(got, "cacheserver: ") || strings.Count(got, "cacheserver: ") != 1 {
			t.Errorf("%v: wrote %q, want one cacheserver: prefix", err, got)
		}
	}
	// A real one: a bad flag value, from LoadConfig.
	var out bytes.Buffer
	withStderr(t, func() {
		if status := exitStatus(run([]string{"--fanout", "x"}, nil), &out); status != 1 {
			t.Errorf("--fanout x: exit status %d, want 1", status)
		}
	})
	if got := out.String(); !strings.HasPrefix(got, "cacheserver: invalid value") {
		t.Errorf("--fanout x: wrote %q", got)
	}
	if status := exitStatus(nil, &out); status != 0 {
		t.Errorf("nil error: exit status %d", status)
	}
}
