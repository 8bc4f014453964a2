package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// ErrFanoutMismatch: a directory's fanout databases hold items and were
// made for another fanout.
var ErrFanoutMismatch = errors.New("fanout mismatch")

// CheckFanout refuses to let a FanoutCache of fanout n open dir when the
// fanout databases already there hold items and are not exactly n. A key's
// database is its hash modulo the fanout, so with another fanout most keys
// would be looked up in a database that does not hold them: they would
// read as misses, and come back, stale, once the old fanout returned.
// python-diskcache's FanoutCache opens such a directory all the same;
// OpenFanout does too, for that library's sake. Databases without items
// (a first start cut short) do not count.
func CheckFanout(dir string, n int) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("engine: check fanout of %s: %w", dir, err)
	}
	var found []int // indexes of the fanout databases there
	for _, e := range entries {
		if i, ok := fanoutIndex(e); ok {
			if _, err := os.Stat(filepath.Join(dir, e.Name(), DBName)); err == nil {
				found = append(found, i)
			}
		}
	}
	if len(found) == 0 || len(found) == n && slices.Max(found) == n-1 {
		return nil
	}
	if !slices.ContainsFunc(found, func(i int) bool { return holdsItems(filepath.Join(dir, fmt.Sprintf("%03d", i), DBName)) }) {
		return nil
	}
	return fmt.Errorf("engine: %s holds %d fanout databases (%03d to %03d) with items, made for another fanout than %d: "+
		"most keys would be looked up in databases that do not hold them; open it with its own fanout: %w",
		dir, len(found), slices.Min(found), slices.Max(found), n, ErrFanoutMismatch)
}

// fanoutIndex is the index of a fanout database's directory ("000", "001", …).
func fanoutIndex(e fs.DirEntry) (int, bool) {
	name := e.Name()
	if !e.IsDir() || len(name) < 3 {
		return 0, false
	}
	i, err := strconv.Atoi(name)
	if err != nil || i < 0 || fmt.Sprintf("%03d", i) != name {
		return 0, false
	}
	return i, true
}

// holdsItems reports whether the database at path has a row in its Cache
// table; false when it cannot tell (a damaged database is OpenFanout's to
// quarantine).
func holdsItems(path string) bool {
	cn, err := openConn(path, time.Second, false)
	if err != nil {
		return false
	}
	defer cn.close()
	n, err := cn.queryInt(`SELECT EXISTS (SELECT 1 FROM Cache)`)
	return err == nil && n == 1
}
