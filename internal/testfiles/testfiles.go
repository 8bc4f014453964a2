// Package testfiles is what the tests of several packages use to look at a
// data directory.
package testfiles

import (
	"errors"
	"io/fs"
	"path/filepath"
	"testing"
)

// Below lists the files below dir, relative to it; none when dir does not
// exist.
func Below(t testing.TB, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			files = append(files, rel)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return files
}
