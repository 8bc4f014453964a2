package engine

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/internal/testfiles"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// TestDropCollectionRemovesItsFilesOnly: a dropped named cache leaves no
// file or directory of its own (its database and the value files of its
// large values) while the collections nested under its name, and the same
// name in another kind, keep theirs; it comes back empty on next use.
func TestDropCollectionRemovesItsFilesOnly(t *testing.T) {
	ctx := context.Background()
	f, _ := openFanoutTest(t, FanoutOptions{Fanout: 2})
	big := kv.Bytes(bytes.Repeat([]byte("v"), 100_000)) // stored as a value file
	for _, name := range []string{"a", "a/b", "solo/x"} {
		c, err := f.Cache(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"k1", "k2"} {
			if err := c.Set(ctx, kv.TextKey(k), big, kv.SetOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	d, err := f.Deque(ctx, "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Append(ctx, big); err != nil {
		t.Fatal(err)
	}
	cacheDir := filepath.Join(f.Directory(), "cache")
	nested := testfiles.Below(t, filepath.Join(cacheDir, "a", "b"))

	if n, err := f.DropCache(ctx, "a"); err != nil || n != 2 {
		t.Fatalf("DropCache(a) = %d, %v; want 2 items", n, err)
	}
	// Only the directory of the nested cache is left under cache/a.
	entries, err := os.ReadDir(filepath.Join(cacheDir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "b" {
		t.Fatalf("cache/a holds %v after the drop, want only b (the nested cache)", entries)
	}
	if got := testfiles.Below(t, filepath.Join(cacheDir, "a", "b")); len(got) != len(nested) {
		t.Fatalf("the nested cache's files went from %v to %v", nested, got)
	}
	if b, _ := f.Cache(ctx, "a/b"); mustLen(t, b) != 2 {
		t.Fatal("the nested cache lost items")
	}
	if mustLen(t, d.Cache()) != 1 {
		t.Fatal("the deque of the same name lost its item")
	}

	// A name whose directories hold nothing else goes with its parents.
	if n, err := f.DropCache(ctx, "solo/x"); err != nil || n != 2 {
		t.Fatalf("DropCache(solo/x) = %d, %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(cacheDir, "solo")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("cache/solo is left after its only collection was dropped: %v", err)
	}

	// Dropping again, or a name never used, is a no-op.
	for _, name := range []string{"a", "never"} {
		if n, err := f.DropCache(ctx, name); err != nil || n != 0 {
			t.Fatalf("DropCache(%s) again = %d, %v", name, n, err)
		}
	}
	if _, err := os.Stat(filepath.Join(cacheDir, "never")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("dropping a name never used created its directory")
	}
	// The name comes back empty.
	c, err := f.Cache(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if mustLen(t, c) != 0 {
		t.Fatal("a dropped cache came back with items")
	}
	if _, ok, err := c.Get(ctx, kv.TextKey("k1"), GetOptions{}); err != nil || ok {
		t.Fatalf("a dropped key reads back: %v, %v", ok, err)
	}
	if _, err := f.DropCache(ctx, "../x"); !errors.Is(err, kv.ErrInvalidName) {
		t.Fatalf("DropCache(../x) = %v, want ErrInvalidName", err)
	}
}

// TestDropCollectionNotOpen: a collection on disk that this process has
// not opened (written before a restart) is dropped all the same.
func TestDropCollectionNotOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f, err := OpenFanout(ctx, dir, FanoutOptions{Fanout: 1})
	if err != nil {
		t.Fatal(err)
	}
	x, err := f.Index(ctx, "i")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := x.Set(ctx, kv.IntKey(int64(i)), kv.Int(1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f, err = OpenFanout(ctx, dir, FanoutOptions{Fanout: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := f.DropIndex(ctx, "i"); err != nil || n != 3 {
		t.Fatalf("DropIndex = %d, %v; want 3", n, err)
	}
	if got := testfiles.Below(t, filepath.Join(dir, "index")); len(got) != 0 {
		t.Fatalf("files left: %v", got)
	}
}

// TestDropWaitsForOperationsAndStaleHandlesFail: a drop waits for a
// transaction in progress on the collection (it commits, and goes with the
// collection); a handle taken before the drop fails with ErrClosed, and
// opening the name again gives a new, empty collection.
func TestDropWaitsForOperationsAndStaleHandlesFail(t *testing.T) {
	ctx := context.Background()
	f, _ := openFanoutTest(t, FanoutOptions{Fanout: 1})
	d, err := f.Deque(ctx, "q", 0)
	if err != nil {
		t.Fatal(err)
	}
	inTx, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := d.Cache().Transact(ctx, func(tx *Tx) error {
			close(inTx)
			<-release
			return tx.Set(kv.TextKey("in-tx"), kv.Int(1), kv.SetOptions{})
		})
		if err != nil {
			t.Errorf("the transaction under way failed: %v", err)
		}
	}()
	<-inTx
	dropped := make(chan int64)
	go func() {
		n, err := f.DropDeque(ctx, "q")
		if err != nil {
			t.Errorf("DropDeque: %v", err)
		}
		dropped <- n
	}()
	// The drop is closing the deque, waiting for the transaction's
	// connection, when the transaction goes on.
	for !d.Cache().closed.Load() {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	<-dropped
	if err := d.Append(ctx, kv.Int(1)); !errors.Is(err, kv.ErrClosed) {
		t.Fatalf("Append on a handle from before the drop = %v, want ErrClosed", err)
	}
	again, err := f.Deque(ctx, "q", 0)
	if err != nil {
		t.Fatal(err)
	}
	if again == d {
		t.Fatal("Deque(q) after the drop is the dropped handle")
	}
	if n, _ := again.Len(ctx); n != 0 {
		t.Fatalf("the deque came back with %d items", n)
	}
	if err := again.Append(ctx, kv.Int(2)); err != nil {
		t.Fatal(err)
	}
	if n, _ := again.Len(ctx); n != 1 {
		t.Fatalf("Len = %d after one append", n)
	}
}

func mustLen(t *testing.T, c *Cache) int64 {
	t.Helper()
	n, err := c.Len(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestIfExistsCreatesNothing: the read-side opens answer an empty stand-in
// for a collection that does not exist, without creating it, and the
// collection itself once a write made it.
func TestIfExistsCreatesNothing(t *testing.T) {
	ctx := context.Background()
	f, _ := openFanoutTest(t, FanoutOptions{Fanout: 1})
	d, err := f.DequeIfExists(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := d.Len(ctx); err != nil || n != 0 {
		t.Fatalf("Len of a deque that does not exist = %d, %v", n, err)
	}
	c, err := f.CacheIfExists(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := c.Get(ctx, kv.TextKey("k"), GetOptions{}); err != nil || ok {
		t.Fatalf("Get on a cache that does not exist = %v, %v", ok, err)
	}
	for _, kind := range []string{"cache", "deque", "index"} {
		if got := testfiles.Below(t, filepath.Join(f.Directory(), kind)); len(got) != 0 {
			t.Fatalf("reads created %s files: %v", kind, got)
		}
	}
	real, err := f.Deque(ctx, "q", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := real.Append(ctx, kv.Int(1)); err != nil {
		t.Fatal(err)
	}
	d, err = f.DequeIfExists(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	if d.Cache() != real.Cache() {
		t.Fatal("DequeIfExists does not answer the deque once it exists")
	}
	if _, err := f.IndexIfExists(ctx, "../x"); !errors.Is(err, kv.ErrInvalidName) {
		t.Fatalf("IndexIfExists(../x) = %v", err)
	}
}
