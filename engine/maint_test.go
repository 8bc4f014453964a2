package engine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

func utKinds(warns []kv.Warning) []kv.WarningKind {
	var out []kv.WarningKind
	for _, w := range warns {
		out = append(out, w.Kind)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func utCheck(t *testing.T, c *Cache, fix bool) []kv.Warning {
	t.Helper()
	warns, err := c.Check(utCtx, fix)
	if err != nil {
		t.Fatalf("Check(%v): %v", fix, err)
	}
	return warns
}

func utWantKinds(t *testing.T, warns []kv.Warning, want ...kv.WarningKind) {
	t.Helper()
	sort.Slice(want, func(i, j int) bool { return want[i] < want[j] })
	if got := utKinds(warns); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Fatalf("warnings = %v (%+v), want kinds %v", got, warns, want)
	}
}

func TestCheckClean(t *testing.T) {
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 10})
	utWantKinds(t, utCheck(t, c, false))
	for i := 0; i < 20; i++ {
		utSet(t, c, kv.IntKey(int64(i)), kv.Bytes(utBig(10*i, 'c')), kv.SetOptions{})
	}
	c.Delete(utCtx, kv.IntKey(3))
	utWantKinds(t, utCheck(t, c, false))
	utWantKinds(t, utCheck(t, c, true))
	for i := 4; i < 20; i++ {
		utWant(t, c, kv.IntKey(int64(i)), kv.Bytes(utBig(10*i, 'c')))
	}
}

func TestCheckWrongFileSize(t *testing.T) {
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 10})
	utSet(t, c, kv.TextKey("k"), kv.Bytes(utBig(100, 'w')), kv.SetOptions{})
	path := utFileOf(t, c, kv.TextKey("k"))
	if err := os.WriteFile(path, utBig(150, 'w'), 0o644); err != nil {
		t.Fatal(err)
	}
	warns := utCheck(t, c, false)
	utWantKinds(t, warns, kv.WarnFileSize)
	if warns[0].Path != path {
		t.Fatalf("warning path = %q, want %q", warns[0].Path, path)
	}
	// Without fix nothing changes.
	if r := utMustRow(t, c, kv.TextKey("k")); r.size != 100 {
		t.Fatalf("size = %d after Check(false)", r.size)
	}
	// A read answers a miss and counts it.
	if _, ok, err := c.Get(utCtx, kv.TextKey("k"), GetOptions{}); ok || err != nil {
		t.Fatalf("Get of a grown value file = %v, %v; want a miss", ok, err)
	}
	if n := c.Counters().Corrupt; n != 1 {
		t.Fatalf("Counters().Corrupt = %d, want 1", n)
	}
	// Fix removes the item and its file.
	utWantKinds(t, utCheck(t, c, true), kv.WarnFileSize)
	if n := utQueryInt(t, c, `SELECT count(*) FROM Cache`); n != 0 {
		t.Fatalf("%d rows after fix, want 0", n)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("value file after fix: %v", err)
	}
	if got := utQueryInt(t, c, `SELECT value FROM Settings WHERE key = 'size'`); got != 0 {
		t.Fatalf("Settings.size = %d, want 0", got)
	}
	utWantKinds(t, utCheck(t, c, false))
}

func TestCheckMissingFile(t *testing.T) {
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 10})
	utSet(t, c, kv.TextKey("k"), kv.Bytes(utBig(100, 'm')), kv.SetOptions{})
	utSet(t, c, kv.TextKey("keep"), kv.Bytes(utBig(100, 'n')), kv.SetOptions{})
	path := utFileOf(t, c, kv.TextKey("k"))
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	warns := utCheck(t, c, false)
	var missing []kv.Warning
	for _, w := range warns {
		if w.Kind == kv.WarnFileMissing {
			missing = append(missing, w)
		} else if w.Kind != kv.WarnEmptyDir {
			t.Fatalf("unexpected warning %+v", w)
		}
	}
	if len(missing) != 1 || missing[0].Path != path {
		t.Fatalf("missing-file warnings = %+v", missing)
	}
	utCheck(t, c, true)
	if _, ok := utRowOf(t, c, kv.TextKey("k")); ok {
		t.Fatal("row of the missing file not deleted by fix")
	}
	if n := utLen(t, c); n != 1 {
		t.Fatalf("Len = %d, want 1", n)
	}
	if got := utQueryInt(t, c, `SELECT value FROM Settings WHERE key = 'size'`); got != 100 {
		t.Fatalf("Settings.size = %d, want 100", got)
	}
	utWant(t, c, kv.TextKey("keep"), kv.Bytes(utBig(100, 'n')))
	utCheckConverges(t, c)
}

// utCheckConverges runs Check(fix) until it finds nothing (a fix may leave
// a newly empty parent directory for the next run, as in python-diskcache).
func utCheckConverges(t *testing.T, c *Cache) {
	t.Helper()
	for i := 0; i < 4; i++ {
		if len(utCheck(t, c, true)) == 0 {
			return
		}
	}
	t.Fatalf("Check(fix) still warns: %+v", utCheck(t, c, false))
}

func TestCheckUnknownFileAndEmptyDir(t *testing.T) {
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 10})
	utSet(t, c, kv.TextKey("k"), kv.Bytes(utBig(100, 'u')), kv.SetOptions{})
	known := utFileOf(t, c, kv.TextKey("k"))
	// The directories made below must not be the known file's (its name is
	// random): they are to be emptied and removed.
	rel, err := filepath.Rel(c.Directory(), known)
	if err != nil {
		t.Fatal(err)
	}
	dirA, dirE := "ab", "ee"
	switch strings.SplitN(filepath.ToSlash(rel), "/", 2)[0] {
	case dirA:
		dirA = "ac"
	case dirE:
		dirE = "ef"
	}
	unknown := filepath.Join(c.Directory(), dirA, "cd", "0123456789abcdef0123456789ab.val")
	if err := os.MkdirAll(filepath.Dir(unknown), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unknown, []byte("stray"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A stray file beside a known one.
	stray := filepath.Join(filepath.Dir(known), "stray.txt")
	if err := os.WriteFile(stray, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(c.Directory(), dirE, "ff")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	warns := utCheck(t, c, false)
	utWantKinds(t, warns, kv.WarnUnknownFile, kv.WarnUnknownFile, kv.WarnEmptyDir)
	paths := map[string]kv.WarningKind{}
	for _, w := range warns {
		paths[w.Path] = w.Kind
	}
	if paths[unknown] != kv.WarnUnknownFile || paths[stray] != kv.WarnUnknownFile || paths[empty] != kv.WarnEmptyDir {
		t.Fatalf("warnings = %+v", warns)
	}
	// Nothing is touched without fix.
	for _, p := range []string{unknown, stray, empty} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("Check(false) removed %s", p)
		}
	}
	utCheck(t, c, true)
	for _, p := range []string{unknown, stray, empty} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("Check(true) left %s", p)
		}
	}
	utCheckConverges(t, c)
	// The known file and its value survive; the database files are never
	// reported.
	utWant(t, c, kv.TextKey("k"), kv.Bytes(utBig(100, 'u')))
	if _, err := os.Stat(known); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dirA, dirE} {
		if _, err := os.Stat(filepath.Join(c.Directory(), d)); !os.IsNotExist(err) {
			t.Fatalf("directory %s left", d)
		}
	}
}

func TestCheckMetadataMismatch(t *testing.T) {
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 10})
	for i := 0; i < 3; i++ {
		utSet(t, c, kv.IntKey(int64(i)), kv.Bytes(utBig(20, 'x')), kv.SetOptions{})
	}
	utExec(t, c, `UPDATE Settings SET value = 99 WHERE key = 'count'`)
	utExec(t, c, `UPDATE Settings SET value = 7 WHERE key = 'size'`)
	utWantKinds(t, utCheck(t, c, false), kv.WarnCountMismach, kv.WarnSizeMismatch)
	if n := utLen(t, c); n != 99 {
		t.Fatalf("Len = %d, want the corrupted 99 before fix", n)
	}
	utWantKinds(t, utCheck(t, c, true), kv.WarnCountMismach, kv.WarnSizeMismatch)
	if n := utLen(t, c); n != 3 {
		t.Fatalf("Len = %d after fix, want 3", n)
	}
	if got := utQueryInt(t, c, `SELECT value FROM Settings WHERE key = 'size'`); got != 60 {
		t.Fatalf("Settings.size = %d after fix, want 60", got)
	}
	utWantKinds(t, utCheck(t, c, false))
}

func TestExpireCounts(t *testing.T) {
	c, clk := openTest(t, map[settings.Name]any{settings.NameCullLimit: 0, settings.NameDiskMinFileSize: 10})
	for i := 0; i < 250; i++ {
		utSet(t, c, kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfter(time.Duration(i%5+1) * time.Second)})
	}
	for i := 250; i < 260; i++ {
		utSet(t, c, kv.IntKey(int64(i)), kv.Bytes(utBig(50, 'e')), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	}
	for i := 260; i < 280; i++ {
		utSet(t, c, kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{})
	}
	if n, err := c.Expire(utCtx, 0); n != 0 || err != nil {
		t.Fatalf("Expire before anything expired = %d, %v", n, err)
	}
	// An explicit time: items with expire_time < now.
	if n, err := c.Expire(utCtx, t0+2.5); n != 50+50+10 || err != nil {
		t.Fatalf("Expire(t0+2.5) = %d, %v; want 110", n, err)
	}
	clk.Advance(time.Hour)
	if n, err := c.Expire(utCtx, 0); n != 150 || err != nil {
		t.Fatalf("Expire = %d, %v; want 150", n, err)
	}
	if n := utLen(t, c); n != 20 {
		t.Fatalf("Len = %d, want 20", n)
	}
	if files := utValFiles(t, c); len(files) != 0 {
		t.Fatalf("files left: %v", files)
	}
	if got := c.Counters().Expired; got != 260 {
		t.Fatalf("Counters().Expired = %d, want 260", got)
	}
}

func TestEvictByTag(t *testing.T) {
	for _, tagIndex := range []bool{false, true} {
		t.Run(fmt.Sprintf("tag_index=%v", tagIndex), func(t *testing.T) {
			c, _ := openTest(t, map[settings.Name]any{settings.NameTagIndex: tagIndex, settings.NameDiskMinFileSize: 10})
			for i := 0; i < 250; i++ {
				utSet(t, c, kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{Tag: kv.TextKey("a")})
			}
			for i := 250; i < 300; i++ {
				utSet(t, c, kv.IntKey(int64(i)), kv.Bytes(utBig(20, 'b')), kv.SetOptions{Tag: kv.IntKey(7)})
			}
			for i := 300; i < 330; i++ {
				utSet(t, c, kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{})
			}
			utSet(t, c, kv.IntKey(330), kv.Int(1), kv.SetOptions{Tag: kv.BytesKey([]byte("a"))}) // not the text tag "a"
			if n, err := c.Evict(utCtx, kv.TextKey("a")); n != 250 || err != nil {
				t.Fatalf("Evict(a) = %d, %v; want 250", n, err)
			}
			if n, err := c.Evict(utCtx, kv.TextKey("a")); n != 0 || err != nil {
				t.Fatalf("second Evict(a) = %d, %v", n, err)
			}
			if n, err := c.Evict(utCtx, kv.FloatKey(7)); n != 50 || err != nil { // 7.0 == 7 in SQLite
				t.Fatalf("Evict(7.0) = %d, %v; want 50", n, err)
			}
			if n, err := c.Evict(utCtx, kv.Key{}); n != 0 || err != nil {
				t.Fatalf("Evict(none) = %d, %v", n, err)
			}
			if n := utLen(t, c); n != 31 {
				t.Fatalf("Len = %d, want 31", n)
			}
			if files := utValFiles(t, c); len(files) != 0 {
				t.Fatalf("files left: %v", files)
			}
			if n, err := c.Evict(utCtx, kv.BytesKey([]byte("a"))); n != 1 || err != nil {
				t.Fatalf("Evict(b'a') = %d, %v", n, err)
			}
		})
	}
}

func TestClearCounts(t *testing.T) {
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 10})
	if n, err := c.Clear(utCtx); n != 0 || err != nil {
		t.Fatalf("Clear empty = %d, %v", n, err)
	}
	for i := 0; i < 230; i++ {
		v := kv.Int(int64(i))
		if i%10 == 0 {
			v = kv.Bytes(utBig(30, 'c'))
		}
		utSet(t, c, kv.IntKey(int64(i)), v, kv.SetOptions{Expire: kv.ExpireAfter(time.Duration(i%3-1) * time.Hour)})
	}
	n, err := c.Clear(utCtx)
	if err != nil || n+c.Counters().Expired != 230 {
		t.Fatalf("Clear = %d, %v (+%d culled on write); want 230 in all", n, err, c.Counters().Expired)
	}
	if l := utLen(t, c); l != 0 {
		t.Fatalf("Len = %d after Clear", l)
	}
	if files := utValFiles(t, c); len(files) != 0 {
		t.Fatalf("files left: %v", files)
	}
	if got := utQueryInt(t, c, `SELECT value FROM Settings WHERE key = 'size'`); got != 0 {
		t.Fatalf("Settings.size = %d", got)
	}
	// Clear counts expired items too.
	c2, clk := openTest(t, map[settings.Name]any{settings.NameCullLimit: 0})
	for i := 0; i < 120; i++ {
		utSet(t, c2, kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	}
	clk.Advance(time.Minute)
	if n, err := c2.Clear(utCtx); n != 120 || err != nil {
		t.Fatalf("Clear = %d, %v; want 120", n, err)
	}
}

func TestStats(t *testing.T) {
	c, _ := openTest(t, nil)
	utSet(t, c, kv.TextKey("k"), kv.Int(1), kv.SetOptions{})
	// Off by default: nothing is counted.
	utGet(t, c, kv.TextKey("k"))
	utGet(t, c, kv.TextKey("nope"))
	if h, m, err := c.Stats(utCtx, true, false); h != 0 || m != 0 || err != nil {
		t.Fatalf("Stats = %d, %d, %v", h, m, err)
	}
	if !c.Settings().Statistics {
		t.Fatal("Stats(enable) did not turn statistics on")
	}
	utGet(t, c, kv.TextKey("k"))
	utGet(t, c, kv.TextKey("k"))
	utGet(t, c, kv.TextKey("nope"))
	if h, m, _ := c.Stats(utCtx, true, false); h != 2 || m != 1 {
		t.Fatalf("Stats = %d, %d; want 2, 1", h, m)
	}
	// Reset returns the counts from before the reset.
	if h, m, _ := c.Stats(utCtx, true, true); h != 2 || m != 1 {
		t.Fatalf("Stats(reset) = %d, %d; want 2, 1", h, m)
	}
	if h, m, _ := c.Stats(utCtx, true, false); h != 0 || m != 0 {
		t.Fatalf("Stats after reset = %d, %d", h, m)
	}
	// Transactional reads count too.
	c.Transact(utCtx, func(tx *Tx) error {
		tx.Get(kv.TextKey("k"), GetOptions{})
		tx.Get(kv.TextKey("nope"), GetOptions{})
		return nil
	})
	if h, m, _ := c.Stats(utCtx, true, false); h != 1 || m != 1 {
		t.Fatalf("Stats after tx reads = %d, %d", h, m)
	}
	// Disabling stops counting, persists, and keeps the counts.
	if h, m, _ := c.Stats(utCtx, false, false); h != 1 || m != 1 {
		t.Fatalf("Stats(disable) = %d, %d", h, m)
	}
	if c.Settings().Statistics {
		t.Fatal("statistics still on")
	}
	if got := utQueryInt(t, c, `SELECT value FROM Settings WHERE key = 'statistics'`); got != 0 {
		t.Fatalf("stored statistics = %d", got)
	}
	utGet(t, c, kv.TextKey("k"))
	utGet(t, c, kv.TextKey("nope"))
	if h, m, _ := c.Stats(utCtx, true, false); h != 1 || m != 1 {
		t.Fatalf("Stats after disabled reads = %d, %d", h, m)
	}
	if got := utQueryInt(t, c, `SELECT value FROM Settings WHERE key = 'statistics'`); got != 1 {
		t.Fatalf("stored statistics = %d", got)
	}
	// Rolled-back reads are not counted.
	boom := errors.New("boom")
	c.Transact(utCtx, func(tx *Tx) error {
		tx.Get(kv.TextKey("k"), GetOptions{})
		return boom
	})
	if h, m, _ := c.Stats(utCtx, true, false); h != 1 || m != 1 {
		t.Fatalf("Stats after a rolled-back read = %d, %d", h, m)
	}
}

// TestResetPersists changes every setting with Reset, reopens the cache
// and reads the settings back.
func TestResetPersists(t *testing.T) {
	changes := []struct {
		name   settings.Name
		value  any
		check  func(Settings) bool
		pragma string
		want   int64
	}{
		{settings.NameStatistics, true, func(s Settings) bool { return s.Statistics }, "", 0},
		{settings.NameTagIndex, 1, func(s Settings) bool { return s.TagIndex }, "", 0},
		{settings.NameEvictionPolicy, "least-frequently-used", func(s Settings) bool { return s.EvictionPolicy == settings.PolicyLeastFrequentlyUsed }, "", 0},
		{settings.NameSizeLimit, int64(1 << 40), func(s Settings) bool { return s.SizeLimit == 1<<40 }, "", 0},
		{settings.NameCullLimit, 3, func(s Settings) bool { return s.CullLimit == 3 }, "", 0},
		{settings.NameSQLiteCacheSize, 1000, func(s Settings) bool { return s.SQLiteCacheSize == 1000 }, "cache_size", 1000},
		{settings.NameSQLiteMmapSize, 0, func(s Settings) bool { return s.SQLiteMmapSize == 0 }, "mmap_size", 0},
		{settings.NameSQLiteSynchronous, 2, func(s Settings) bool { return s.SQLiteSynchronous == 2 }, "synchronous", 2},
		{settings.NameDiskMinFileSize, 777, func(s Settings) bool { return s.DiskMinFileSize == 777 }, "", 0},
		{settings.NameDiskPickleProtocol, 2, func(s Settings) bool { return s.DiskPickleProtocol == 2 }, "", 0},
		{settings.NameSQLiteAutoVacuum, 0, func(s Settings) bool { return s.SQLiteAutoVacuum == 0 }, "", 0},
		{settings.NameSQLiteJournalMode, "DELETE", func(s Settings) bool { return s.SQLiteJournalMode == "delete" }, "", 0},
	}
	for _, ch := range changes {
		t.Run(string(ch.name), func(t *testing.T) {
			dir := t.TempDir()
			clk := newClock()
			c := utOpenAt(t, dir, clk, nil)
			utSet(t, c, kv.TextKey("k"), kv.Int(1), kv.SetOptions{})
			if err := c.Reset(utCtx, ch.name, ch.value); err != nil {
				t.Fatalf("Reset(%s, %v): %v", ch.name, ch.value, err)
			}
			if !ch.check(c.Settings()) {
				t.Fatalf("Settings after Reset = %+v", c.Settings())
			}
			if ch.pragma != "" {
				// Every connection picks the new pragma up.
				for i := 0; i < 3; i++ {
					if got := utEnginePragma(t, c, ch.pragma); got != ch.want {
						t.Fatalf("PRAGMA %s = %d, want %d", ch.pragma, got, ch.want)
					}
				}
			}
			now := c.Settings()
			stored, _ := now.Get(ch.name)
			db := utRawDB(t, c)
			var got any
			if err := db.QueryRow(`SELECT value FROM Settings WHERE key = ?`, ch.name).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(stored) {
				t.Fatalf("stored %s = %v, want %v", ch.name, got, stored)
			}
			db.Close()
			// The cache still works.
			utSet(t, c, kv.TextKey("k2"), kv.Int(2), kv.SetOptions{})
			utWant(t, c, kv.TextKey("k"), kv.Int(1))
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			c2 := utOpenAt(t, dir, clk, nil)
			if !ch.check(c2.Settings()) {
				t.Fatalf("Settings after reopen = %+v", c2.Settings())
			}
			utWant(t, c2, kv.TextKey("k2"), kv.Int(2))
		})
	}
}

func TestResetJournalModeApplies(t *testing.T) {
	c, _ := openTest(t, nil)
	utSet(t, c, kv.TextKey("k"), kv.Int(1), kv.SetOptions{})
	if err := c.Reset(utCtx, settings.NameSQLiteJournalMode, "delete"); err != nil {
		t.Fatal(err)
	}
	if got := utEngineString(t, c, "PRAGMA journal_mode"); got != "delete" {
		t.Fatalf("journal_mode = %q, want delete", got)
	}
	if _, err := os.Stat(filepath.Join(c.Directory(), DBName+"-wal")); !os.IsNotExist(err) {
		t.Fatalf("WAL file still there after leaving WAL mode: %v", err)
	}
	if err := c.Reset(utCtx, settings.NameSQLiteJournalMode, "wal"); err != nil {
		t.Fatal(err)
	}
	if got := utEngineString(t, c, "PRAGMA journal_mode"); got != "wal" {
		t.Fatalf("journal_mode = %q, want wal", got)
	}
	utWant(t, c, kv.TextKey("k"), kv.Int(1))
}

func utEnginePragma(t *testing.T, c *Cache, name string) int64 {
	t.Helper()
	cn, err := c.acquire(utCtx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.release(cn)
	n, err := cn.queryInt("PRAGMA " + name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func utEngineString(t *testing.T, c *Cache, q string) string {
	t.Helper()
	cn, err := c.acquire(utCtx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.release(cn)
	row, ok, err := cn.queryRow(q, 1)
	if err != nil || !ok {
		t.Fatalf("%s: %v, %v", q, ok, err)
	}
	return fmt.Sprint(row[0])
}

func TestOpenSettingsPersist(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	c := utOpenAt(t, dir, clk, map[settings.Name]any{settings.NameSizeLimit: 4096, settings.NameEvictionPolicy: "least-recently-used", settings.NameCullLimit: 0})
	c.Close()
	c = utOpenAt(t, dir, clk, nil)
	s := c.Settings()
	if s.SizeLimit != 4096 || s.EvictionPolicy != settings.PolicyLeastRecentlyUsed || s.CullLimit != 0 {
		t.Fatalf("settings after reopen = %+v", s)
	}
	// Defaults for the rest.
	d := DefaultSettings()
	if s.DiskMinFileSize != d.DiskMinFileSize || s.SQLiteJournalMode != "wal" || s.Statistics || s.TagIndex {
		t.Fatalf("settings after reopen = %+v", s)
	}
	c.Close()
	// Explicit options win over stored ones, and are stored in turn.
	c = utOpenAt(t, dir, clk, map[settings.Name]any{settings.NameSizeLimit: 8192})
	c.Close()
	c = utOpenAt(t, dir, clk, nil)
	if s := c.Settings(); s.SizeLimit != 8192 || s.EvictionPolicy != settings.PolicyLeastRecentlyUsed {
		t.Fatalf("settings = %+v", s)
	}
	// Metadata rows exist.
	for _, m := range []string{"count", "size", "hits", "misses"} {
		utQueryInt(t, c, `SELECT value FROM Settings WHERE key = ?`, m)
	}
}

func TestInvalidSettings(t *testing.T) {
	c, _ := openTest(t, nil)
	before := c.Settings()
	bad := []struct {
		name  settings.Name
		value any
	}{
		{"no_such_setting", 1},
		{"count", 5},
		{settings.NameEvictionPolicy, "random"},
		{settings.NameEvictionPolicy, 1},
		{settings.NameSizeLimit, -1},
		{settings.NameCullLimit, -1},
		{settings.NameDiskMinFileSize, -10},
		{settings.NameSizeLimit, "big"},
		{settings.NameStatistics, "yes"},
		{settings.NameSQLiteJournalMode, "bogus"},
		{settings.NameSQLiteJournalMode, 3},
		{settings.NameSQLiteCacheSize, 1.5e300},
	}
	for _, b := range bad {
		if err := c.Reset(utCtx, b.name, b.value); !errors.Is(err, kv.ErrInvalidSetting) {
			t.Errorf("Reset(%s, %v) = %v, want ErrInvalidSetting", b.name, b.value, err)
		}
		if _, err := Open(utCtx, t.TempDir(), Options{Settings: map[settings.Name]any{b.name: b.value}}); !errors.Is(err, kv.ErrInvalidSetting) {
			t.Errorf("Open with %s=%v: %v, want ErrInvalidSetting", b.name, b.value, err)
		}
	}
	if got := c.Settings(); got != before {
		t.Fatalf("settings changed by rejected resets: %+v", got)
	}
	if got := utQueryInt(t, c, `SELECT COUNT(*) FROM Settings WHERE key = 'no_such_setting'`); got != 0 {
		t.Fatal("unknown setting stored")
	}
	if got := utQueryInt(t, c, `SELECT value FROM Settings WHERE key = 'count'`); got != 0 {
		t.Fatalf("count metadata = %d", got)
	}
}

func utIndexExists(t *testing.T, c *Cache, name string) bool {
	t.Helper()
	return utQueryInt(t, c, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = ?`, name) == 1
}

func TestTagIndex(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	c := utOpenAt(t, dir, clk, nil)
	if utIndexExists(t, c, "Cache_tag_rowid") {
		t.Fatal("tag index exists by default")
	}
	if err := c.CreateTagIndex(utCtx); err != nil {
		t.Fatal(err)
	}
	if !utIndexExists(t, c, "Cache_tag_rowid") || !c.Settings().TagIndex {
		t.Fatal("CreateTagIndex did not create it")
	}
	if got := utQueryInt(t, c, `SELECT value FROM Settings WHERE key = 'tag_index'`); got != 1 {
		t.Fatalf("stored tag_index = %d", got)
	}
	c.Close()
	c = utOpenAt(t, dir, clk, nil)
	if !utIndexExists(t, c, "Cache_tag_rowid") || !c.Settings().TagIndex {
		t.Fatal("tag index lost on reopen")
	}
	if err := c.DropTagIndex(utCtx); err != nil {
		t.Fatal(err)
	}
	if utIndexExists(t, c, "Cache_tag_rowid") || c.Settings().TagIndex {
		t.Fatal("DropTagIndex did not drop it")
	}
	c.Close()
	c = utOpenAt(t, dir, clk, nil)
	if utIndexExists(t, c, "Cache_tag_rowid") {
		t.Fatal("tag index back after reopen")
	}
	// Opening with tag_index creates it; opening with it off drops it.
	c.Close()
	c = utOpenAt(t, dir, clk, map[settings.Name]any{settings.NameTagIndex: true})
	if !utIndexExists(t, c, "Cache_tag_rowid") {
		t.Fatal("Open(tag_index=1) did not create the index")
	}
	c.Close()
	c = utOpenAt(t, dir, clk, map[settings.Name]any{settings.NameTagIndex: 0})
	if utIndexExists(t, c, "Cache_tag_rowid") {
		t.Fatal("Open(tag_index=0) did not drop the index")
	}
}

func TestPolicyIndexes(t *testing.T) {
	c, _ := openTest(t, nil)
	if !utIndexExists(t, c, "Cache_store_time") || !utIndexExists(t, c, "Cache_key_raw") || !utIndexExists(t, c, "Cache_expire_time") {
		t.Fatal("default indexes missing")
	}
	if err := c.Reset(utCtx, settings.NameEvictionPolicy, "least-recently-used"); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(utCtx, settings.NameEvictionPolicy, settings.PolicyLeastFrequentlyUsed); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(utCtx, settings.NameEvictionPolicy, "none"); err != nil {
		t.Fatal(err)
	}
	// Created on change, never dropped.
	for _, idx := range []string{"Cache_store_time", "Cache_access_time", "Cache_access_count"} {
		if !utIndexExists(t, c, idx) {
			t.Errorf("index %s missing", idx)
		}
	}
	for _, trg := range []string{"Settings_count_insert", "Settings_count_delete", "Settings_size_insert", "Settings_size_update", "Settings_size_delete"} {
		if utQueryInt(t, c, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = ?`, trg) != 1 {
			t.Errorf("trigger %s missing", trg)
		}
	}
}

func TestUncleanDirectory(t *testing.T) {
	for _, suffix := range []string{"/", "/./", "/sub/../"} {
		dir := t.TempDir() + suffix
		c := utOpenAt(t, dir, newClock(), map[settings.Name]any{settings.NameDiskMinFileSize: 10})
		if c.Directory() != filepath.Clean(dir) {
			t.Fatalf("Directory() = %q, want %q", c.Directory(), filepath.Clean(dir))
		}
		utSet(t, c, kv.TextKey("k"), kv.Bytes(utBig(100, 'x')), kv.SetOptions{})
		c.Delete(utCtx, kv.TextKey("k"))
		// The value file's directories are pruned: nothing for Check.
		utWantKinds(t, utCheck(t, c, false))
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	a := utOpenAt(t, dir, clk, nil)
	b := utOpenAt(t, dir, clk, nil)
	if err := b.Reset(utCtx, settings.NameCullLimit, 2); err != nil {
		t.Fatal(err)
	}
	if err := b.Reset(utCtx, settings.NameSQLiteCacheSize, 123); err != nil {
		t.Fatal(err)
	}
	if a.Settings().CullLimit != 10 {
		t.Fatal("settings changed before Reload")
	}
	if err := a.Reload(utCtx); err != nil {
		t.Fatal(err)
	}
	if s := a.Settings(); s.CullLimit != 2 || s.SQLiteCacheSize != 123 {
		t.Fatalf("settings after Reload = %+v", s)
	}
	if got := utEnginePragma(t, a, "cache_size"); got != 123 {
		t.Fatalf("cache_size after Reload = %d", got)
	}
}

// TestCheckLeavesAValueBeingWritten runs Check(fix) while a streamed value
// is half written: the file is not taken for an unknown one, and the value
// reads back whole once its write ends.
func TestCheckLeavesAValueBeingWritten(t *testing.T) {
	c, _ := openTest(t, nil)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- c.Set(utCtx, kv.TextKey("big"), kv.Bytes(nil), kv.SetOptions{Body: pr}) }()
	half := utBig(1<<20, 'h')
	if _, err := pw.Write(half); err != nil { // returns once Set has read it all
		t.Fatal(err)
	}
	utWantKinds(t, utCheck(t, c, true))
	if _, err := pw.Write(half); err != nil {
		t.Fatal(err)
	}
	_ = pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("Set of a streamed value that Check(fix) ran beside: %v", err)
	}
	utWant(t, c, kv.TextKey("big"), kv.Bytes(append(half, half...)))
	utWantKinds(t, utCheck(t, c, false))
}

// TestOpenRemovesUnfinishedValueFiles: an exclusive cache removes at Open
// the files a process stopped in the middle of writing, which a shared
// cache leaves to Check (they may be another process's) and Check(fix)
// removes.
func TestOpenRemovesUnfinishedValueFiles(t *testing.T) {
	for _, exclusive := range []bool{true, false} {
		t.Run(fmt.Sprintf("exclusive=%v", exclusive), func(t *testing.T) {
			dir := t.TempDir()
			c, err := Open(utCtx, dir, Options{Exclusive: exclusive})
			if err != nil {
				t.Fatal(err)
			}
			utSet(t, c, kv.TextKey("kept"), kv.Bytes(utBig(100<<10, 'k')), kv.SetOptions{})
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			// What a process killed while streaming a value leaves.
			cut := filepath.Join(dir, incomingPrefix+"0123456789abcdef0123456789ab.val")
			if err := os.WriteFile(cut, utBig(64<<10, 'x'), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err = Open(utCtx, dir, Options{Exclusive: exclusive})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			if _, err := os.Stat(cut); exclusive != errors.Is(err, os.ErrNotExist) {
				t.Errorf("after Open the unfinished file: %v; want it removed only by an exclusive cache", err)
			}
			if !exclusive {
				utWantKinds(t, utCheck(t, c, true), kv.WarnUnknownFile)
				if _, err := os.Stat(cut); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("after Check(fix) the unfinished file: %v; want it removed", err)
				}
			}
			utWantKinds(t, utCheck(t, c, false))
			utWant(t, c, kv.TextKey("kept"), kv.Bytes(utBig(100<<10, 'k')))
		})
	}
}
