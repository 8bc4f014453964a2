package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// foClock is a settable clock safe for concurrent use.
type foClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFoClock() *foClock { return &foClock{t: time.Unix(1_700_000_000, 0)} }

func (c *foClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *foClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// openFanoutTest opens a FanoutCache in a temporary directory with a fake
// clock and a generous timeout, so that no test depends on lock timing.
func openFanoutTest(t *testing.T, opts FanoutOptions) (*FanoutCache, *foClock) {
	t.Helper()
	clk := newFoClock()
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	if opts.Timeout == 0 {
		opts.Timeout = time.Minute
	}
	f, err := OpenFanout(context.Background(), t.TempDir(), opts)
	if err != nil {
		t.Fatalf("OpenFanout: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f, clk
}

// foKeys returns keys of every kind.
func foKeys() []kv.Key {
	keys := []kv.Key{
		kv.TextKey("alpha"), kv.TextKey("ключ"), kv.BytesKey([]byte("beta")), kv.BytesKey(nil),
		kv.IntKey(0), kv.IntKey(-7), kv.IntKey(1 << 40), kv.FloatKey(1.5), kv.FloatKey(-0.25),
		kv.PickleKey([]byte("\x80\x05\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x8c\x05tuple\x4b\x01\x86.")),
	}
	for i := range 40 {
		keys = append(keys, kv.TextKey(fmt.Sprintf("k%02d", i)))
	}
	return keys
}

func TestFanoutLayoutAndPlacement(t *testing.T) {
	ctx := context.Background()
	f, _ := openFanoutTest(t, FanoutOptions{Fanout: 4})
	for i := range 4 {
		if got, want := f.Database(i).Directory(), filepath.Join(f.Directory(), fmt.Sprintf("%03d", i)); got != want {
			t.Fatalf("database %d directory = %s, want %s", i, got, want)
		}
		if _, err := os.Stat(filepath.Join(f.Directory(), fmt.Sprintf("%03d", i), DBName)); err != nil {
			t.Fatalf("database %d database: %v", i, err)
		}
	}
	used := map[int]bool{}
	for i, k := range foKeys() {
		if err := f.Set(ctx, k, kv.Int(int64(i)), kv.SetOptions{}); err != nil {
			t.Fatalf("Set(%s): %v", k, err)
		}
		want := int(fanoutHash(k) % 4)
		if got := f.DatabaseIndex(k); got != want {
			t.Fatalf("DatabaseIndex(%s) = %d, want %d", k, got, want)
		}
		used[want] = true
		for s := range 4 {
			ok, err := f.Database(s).Contains(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			if ok != (s == want) {
				t.Fatalf("key %s in database %d: %v (its database is %d)", k, s, ok, want)
			}
		}
		if f.DatabaseFor(k) != f.Database(want) {
			t.Fatalf("DatabaseFor(%s) is not database %d", k, want)
		}
	}
	if len(used) != 4 {
		t.Fatalf("keys landed in %d databases, want all 4", len(used))
	}
	if f.DatabaseCount() != 4 {
		t.Fatalf("DatabaseCount = %d", f.DatabaseCount())
	}
}

func TestFanoutDefaultsAndSizeLimit(t *testing.T) {
	ctx := context.Background()
	f, err := OpenFanout(ctx, t.TempDir(), FanoutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.DatabaseCount() != DefaultFanout || f.Timeout() != DefaultFanoutTimeout {
		t.Fatalf("defaults: %d databases, timeout %v", f.DatabaseCount(), f.Timeout())
	}
	for i := range f.DatabaseCount() {
		if got := f.Database(i).Settings().SizeLimit; got != (1<<30)/8 {
			t.Fatalf("database %d size_limit = %d, want 2^30/8", i, got)
		}
	}

	dir := t.TempDir()
	g, err := OpenFanout(ctx, dir, FanoutOptions{Fanout: 4, Settings: map[settings.Name]any{settings.NameSizeLimit: 4000, settings.NameCullLimit: 3}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		s := g.Database(i).Settings()
		if s.SizeLimit != 1000 || s.CullLimit != 3 {
			t.Fatalf("database %d: size_limit %d cull_limit %d, want 1000 and 3", i, s.SizeLimit, s.CullLimit)
		}
	}
	if err := g.Reset(ctx, settings.NameSizeLimit, 8000); err != nil {
		t.Fatal(err)
	}
	if err := g.Reset(ctx, settings.NameCullLimit, 5); err != nil {
		t.Fatal(err)
	}
	if g.Settings().SizeLimit != 2000 {
		t.Fatalf("after Reset, size_limit per database = %d, want 2000", g.Settings().SizeLimit)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	// Persisted in every database: a plain Cache on a database directory sees it.
	for i := range 4 {
		c, err := Open(ctx, filepath.Join(dir, fmt.Sprintf("%03d", i)), Options{})
		if err != nil {
			t.Fatal(err)
		}
		s := c.Settings()
		c.Close()
		if s.SizeLimit != 2000 || s.CullLimit != 5 {
			t.Fatalf("database %d on disk: size_limit %d cull_limit %d", i, s.SizeLimit, s.CullLimit)
		}
	}

	if _, err := OpenFanout(ctx, t.TempDir(), FanoutOptions{Fanout: -1}); !errors.Is(err, kv.ErrInvalidSetting) {
		t.Fatalf("Fanout -1: %v", err)
	}
	if _, err := OpenFanout(ctx, t.TempDir(), FanoutOptions{Settings: map[settings.Name]any{settings.NameSizeLimit: "big"}}); !errors.Is(err, kv.ErrInvalidSetting) {
		t.Fatalf("bad size_limit: %v", err)
	}
}

func TestFanoutSingleKeyOperations(t *testing.T) {
	ctx := context.Background()
	f, clk := openFanoutTest(t, FanoutOptions{Fanout: 3})
	k := kv.TextKey("a")
	if err := f.Set(ctx, k, kv.Text("one"), kv.SetOptions{Tag: kv.TextKey("t")}); err != nil {
		t.Fatal(err)
	}
	it, ok, err := f.Get(ctx, k, GetOptions{})
	if err != nil || !ok || !it.Value.Equal(kv.Text("one")) || !it.Tag.Equal(kv.TextKey("t")) {
		t.Fatalf("Get = %+v %v %v", it, ok, err)
	}
	if ok, err := f.TrySet(ctx, k, kv.Text("two"), kv.SetOptions{}); !ok || err != nil {
		t.Fatalf("TrySet = %v %v", ok, err)
	}
	if added, err := f.Add(ctx, k, kv.Text("three"), kv.SetOptions{}); added || err != nil {
		t.Fatalf("Add on live key = %v %v", added, err)
	}
	if added, err := f.Add(ctx, kv.TextKey("b"), kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfter(time.Minute)}); !added || err != nil {
		t.Fatalf("Add new key = %v %v", added, err)
	}
	if ok, err := f.Contains(ctx, kv.TextKey("b")); !ok || err != nil {
		t.Fatalf("Contains = %v %v", ok, err)
	}
	if ok, err := f.Touch(ctx, kv.TextKey("b"), kv.ExpireAfter(time.Hour)); !ok || err != nil {
		t.Fatalf("Touch = %v %v", ok, err)
	}
	clk.Advance(2 * time.Minute)
	if ok, _ := f.Contains(ctx, kv.TextKey("b")); !ok {
		t.Fatal("touched key expired at its old expiry")
	}
	if ok, err := f.Touch(ctx, kv.TextKey("missing"), kv.Expiry{}); ok || err != nil {
		t.Fatalf("Touch missing = %v %v", ok, err)
	}
	v, err := f.Incr(ctx, kv.IntKey(5), kv.Int(3), kv.Int(10))
	if err != nil || !v.Equal(kv.Int(13)) {
		t.Fatalf("Incr = %v %v", v, err)
	}
	v, err = f.Decr(ctx, kv.IntKey(5), kv.Int(1), kv.Value{})
	if err != nil || !v.Equal(kv.Int(12)) {
		t.Fatalf("Decr = %v %v", v, err)
	}
	if _, err := f.Incr(ctx, kv.IntKey(6), kv.Int(1), kv.Value{}); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Incr missing without default: %v", err)
	}
	if _, err := f.Incr(ctx, k, kv.Int(1), kv.Int(0)); !errors.Is(err, kv.ErrNotNumeric) {
		t.Fatalf("Incr on text: %v", err)
	}
	it, ok, err = f.Pop(ctx, k, GetOptions{})
	if err != nil || !ok || !it.Value.Equal(kv.Text("two")) {
		t.Fatalf("Pop = %+v %v %v", it, ok, err)
	}
	if _, ok, _ := f.Pop(ctx, k, GetOptions{}); ok {
		t.Fatal("Pop twice")
	}
	if ok, err := f.Delete(ctx, kv.IntKey(5)); !ok || err != nil {
		t.Fatalf("Delete = %v %v", ok, err)
	}
	if ok, err := f.Delete(ctx, kv.IntKey(5)); ok || err != nil {
		t.Fatalf("Delete twice = %v %v", ok, err)
	}
	if err := f.Set(ctx, kv.Key{}, kv.Int(1), kv.SetOptions{}); !errors.Is(err, kv.ErrInvalidKey) {
		t.Fatalf("Set with no key: %v", err)
	}
}

func TestFanoutBulkOperations(t *testing.T) {
	ctx := context.Background()
	f, clk := openFanoutTest(t, FanoutOptions{Fanout: 4, Settings: map[settings.Name]any{settings.NameTagIndex: true}})
	keys := foKeys()
	for i, k := range keys {
		opts := kv.SetOptions{}
		switch i % 3 {
		case 0:
			opts.Expire = kv.ExpireAfter(time.Minute)
		case 1:
			opts.Tag = kv.TextKey("odd")
		}
		if err := f.Set(ctx, k, kv.Int(int64(i)), opts); err != nil {
			t.Fatal(err)
		}
	}
	var expiring, tagged int64
	for i := range keys {
		switch i % 3 {
		case 0:
			expiring++
		case 1:
			tagged++
		}
	}
	n, err := f.Len(ctx)
	if err != nil || n != int64(len(keys)) {
		t.Fatalf("Len = %d %v", n, err)
	}

	// Keys: database 0's keys in insertion order, then database 1's, …
	var want []kv.Key
	for s := range 4 {
		for _, k := range keys {
			if f.DatabaseIndex(k) == s {
				want = append(want, k)
			}
		}
	}
	var got []kv.Key
	for k, err := range f.Keys(ctx, false) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, k)
	}
	if !slices.EqualFunc(got, want, kv.Key.Equal) {
		t.Fatalf("Keys = %v\nwant %v", got, want)
	}
	got = got[:0]
	for k, err := range f.Keys(ctx, true) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, k)
	}
	slices.Reverse(want)
	if !slices.EqualFunc(got, want, kv.Key.Equal) {
		t.Fatalf("Keys reversed = %v\nwant %v", got, want)
	}
	count := 0
	for range f.Keys(ctx, false) {
		count++
		if count == 3 {
			break
		}
	}

	var vol int64
	for s := range 4 {
		v, err := f.Database(s).Volume(ctx)
		if err != nil {
			t.Fatal(err)
		}
		vol += v
	}
	if v, err := f.Volume(ctx); err != nil || v != vol {
		t.Fatalf("Volume = %d %v, want %d", v, err, vol)
	}

	clk.Advance(2 * time.Minute)
	if n, err := f.Expire(ctx, 0); err != nil || n != expiring {
		t.Fatalf("Expire = %d %v, want %d", n, err, expiring)
	}
	if c := f.Counters(); c.Expired != expiring {
		t.Fatalf("Counters = %+v", c)
	}
	if n, err := f.Evict(ctx, kv.TextKey("odd")); err != nil || n != tagged {
		t.Fatalf("Evict = %d %v, want %d", n, err, tagged)
	}
	if n, err := f.Cull(ctx); err != nil || n != 0 {
		t.Fatalf("Cull = %d %v", n, err)
	}
	rest := int64(len(keys)) - expiring - tagged
	if n, err := f.Len(ctx); err != nil || n != rest {
		t.Fatalf("Len = %d %v, want %d", n, err, rest)
	}
	if warns, err := f.Check(ctx, false); err != nil || len(warns) != 0 {
		t.Fatalf("Check = %v %v", warns, err)
	}
	if n, err := f.Clear(ctx); err != nil || n != rest {
		t.Fatalf("Clear = %d %v, want %d", n, err, rest)
	}
	if err := f.DropTagIndex(ctx); err != nil || f.Settings().TagIndex {
		t.Fatalf("DropTagIndex: %v", err)
	}
	if err := f.CreateTagIndex(ctx); err != nil || !f.Database(3).Settings().TagIndex {
		t.Fatalf("CreateTagIndex: %v", err)
	}
}

func TestFanoutCullSizeLimitIsTotal(t *testing.T) {
	ctx := context.Background()
	// 2 databases sharing 2 MB: each holds about 1 MB of 64 KB value files.
	f, _ := openFanoutTest(t, FanoutOptions{Fanout: 2, Settings: map[settings.Name]any{
		settings.NameSizeLimit: 2 << 20, settings.NameCullLimit: 0,
	}})
	big := kv.Bytes(make([]byte, 64<<10))
	for i := range 60 {
		if err := f.Set(ctx, kv.IntKey(int64(i)), big, kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := f.Cull(ctx)
	if err != nil || n == 0 {
		t.Fatalf("Cull = %d %v", n, err)
	}
	for s := range 2 {
		v, err := f.Database(s).Volume(ctx)
		if err != nil || v > 1<<20 {
			t.Fatalf("database %d volume after cull = %d %v, want ≤ 1 MB", s, v, err)
		}
	}
}

func TestFanoutStats(t *testing.T) {
	ctx := context.Background()
	f, _ := openFanoutTest(t, FanoutOptions{Fanout: 4})
	if _, _, err := f.Stats(ctx, true, false); err != nil {
		t.Fatal(err)
	}
	for s := range 4 {
		if !f.Database(s).Settings().Statistics {
			t.Fatalf("database %d statistics off", s)
		}
	}
	keys := foKeys()[:12]
	for _, k := range keys {
		if err := f.Set(ctx, k, kv.Int(1), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if _, ok, err := f.Get(ctx, k, GetOptions{}); !ok || err != nil {
				t.Fatal(ok, err)
			}
		}
		if _, ok, err := f.Get(ctx, kv.TextKey("miss-"+k.String()), GetOptions{}); ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	h, m, err := f.Stats(ctx, true, true)
	if err != nil || h != int64(2*len(keys)) || m != int64(len(keys)) {
		t.Fatalf("Stats = %d %d %v", h, m, err)
	}
	h, m, err = f.Stats(ctx, false, false)
	if err != nil || h != 0 || m != 0 {
		t.Fatalf("Stats after reset = %d %d %v", h, m, err)
	}
	if f.Settings().Statistics {
		t.Fatal("statistics still on")
	}
}

func TestFanoutTransact(t *testing.T) {
	ctx := context.Background()
	f, _ := openFanoutTest(t, FanoutOptions{Fanout: 4})
	keys := foKeys()[:20]
	errBoom := errors.New("boom")
	err := f.Transact(ctx, func(tx *FanoutTx) error {
		if tx.DatabaseCount() != 4 {
			t.Errorf("DatabaseCount = %d", tx.DatabaseCount())
		}
		for i, k := range keys {
			if err := tx.Set(k, kv.Int(int64(i)), kv.SetOptions{}); err != nil {
				return err
			}
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Transact = %v", err)
	}
	if n, _ := f.Len(ctx); n != 0 {
		t.Fatalf("rolled back transaction left %d items", n)
	}

	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic not propagated")
			}
		}()
		_ = f.Transact(ctx, func(tx *FanoutTx) error {
			for _, k := range keys {
				_ = tx.Set(k, kv.Int(1), kv.SetOptions{})
			}
			panic("boom")
		})
	}()
	if n, _ := f.Len(ctx); n != 0 {
		t.Fatalf("panicking transaction left %d items", n)
	}

	err = f.Transact(ctx, func(tx *FanoutTx) error {
		for i, k := range keys {
			if added, err := tx.Add(k, kv.Int(int64(i)), kv.SetOptions{}); err != nil || !added {
				return fmt.Errorf("add %s: %v %w", k, added, err)
			}
		}
		// Reads inside see the writes.
		for i, k := range keys {
			it, ok, err := tx.Get(k, GetOptions{})
			if err != nil || !ok || !it.Value.Equal(kv.Int(int64(i))) {
				return fmt.Errorf("get %s: %v %v %w", k, it.Value, ok, err)
			}
			if tx.DatabaseFor(k) != tx.Database(f.DatabaseIndex(k)) {
				return fmt.Errorf("DatabaseFor(%s) is not its database", k)
			}
		}
		if _, err := tx.Incr(kv.TextKey("total"), kv.Int(5), kv.Int(0)); err != nil {
			return err
		}
		if _, err := tx.Decr(kv.TextKey("total"), kv.Int(2), kv.Int(0)); err != nil {
			return err
		}
		if ok, err := tx.Touch(keys[0], kv.ExpireAfter(time.Hour)); !ok || err != nil {
			return fmt.Errorf("touch: %v %w", ok, err)
		}
		if ok, err := tx.Contains(keys[1]); !ok || err != nil {
			return fmt.Errorf("contains: %v %w", ok, err)
		}
		if ok, err := tx.Delete(keys[1]); !ok || err != nil {
			return fmt.Errorf("delete: %v %w", ok, err)
		}
		if _, ok, err := tx.Pop(keys[2], GetOptions{}); !ok || err != nil {
			return fmt.Errorf("pop: %v %w", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := f.Len(ctx); n != int64(len(keys))-2+1 {
		t.Fatalf("Len after commit = %d", n)
	}
	if it, ok, _ := f.Get(ctx, kv.TextKey("total"), GetOptions{}); !ok || !it.Value.Equal(kv.Int(3)) {
		t.Fatalf("total = %v", it.Value)
	}
}

// holdDatabase holds a write transaction on database i of a second FanoutCache on
// dir until the returned release function is called.
func holdDatabase(t *testing.T, dir string, databases, i int) (release func()) {
	t.Helper()
	ctx := context.Background()
	other, err := OpenFanout(ctx, dir, FanoutOptions{Fanout: databases, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan struct{})
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- other.Database(i).Transact(ctx, func(tx *Tx) error {
			close(held)
			<-stop
			return nil
		})
	}()
	select {
	case <-held:
	case err := <-done:
		t.Fatalf("holding database %d: %v", i, err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(stop)
			if err := <-done; err != nil {
				t.Errorf("holder: %v", err)
			}
			other.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// keyInDatabase returns a text key that f places in database i.
func keyInDatabase(f *FanoutCache, i int, prefix string) kv.Key {
	for n := 0; ; n++ {
		k := kv.TextKey(fmt.Sprintf("%s-%d", prefix, n))
		if f.DatabaseIndex(k) == i {
			return k
		}
	}
}

func TestFanoutSwallowTimeouts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// Statistics make Get write, so that it can time out too.
	settings := map[settings.Name]any{settings.NameStatistics: true}
	f, err := OpenFanout(ctx, dir, FanoutOptions{Fanout: 4, SwallowTimeouts: true, Settings: settings})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	strict, err := OpenFanout(ctx, dir, FanoutOptions{Fanout: 4, Settings: settings})
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	if !f.SwallowTimeouts() || strict.SwallowTimeouts() {
		t.Fatal("SwallowTimeouts accessor")
	}

	busy := keyInDatabase(f, 2, "busy")
	free := keyInDatabase(f, 1, "free")
	if err := f.Set(ctx, busy, kv.Int(1), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	release := holdDatabase(t, dir, 4, 2)

	// Swallowed: python-diskcache's FanoutCache answers.
	if ok, err := f.TrySet(ctx, busy, kv.Int(2), kv.SetOptions{}); ok || err != nil {
		t.Fatalf("TrySet = %v %v, want false nil", ok, err)
	}
	if err := f.Set(ctx, busy, kv.Int(2), kv.SetOptions{}); err != nil {
		t.Fatalf("Set = %v, want nil", err)
	}
	if ok, err := f.Add(ctx, keyInDatabase(f, 2, "new"), kv.Int(2), kv.SetOptions{}); ok || err != nil {
		t.Fatalf("Add = %v %v", ok, err)
	}
	if ok, err := f.Touch(ctx, busy, kv.ExpireAfter(time.Hour)); ok || err != nil {
		t.Fatalf("Touch = %v %v", ok, err)
	}
	if ok, err := f.Delete(ctx, busy); ok || err != nil {
		t.Fatalf("Delete = %v %v", ok, err)
	}
	if _, ok, err := f.Get(ctx, busy, GetOptions{}); ok || err != nil {
		t.Fatalf("Get = %v %v, want a miss", ok, err)
	}
	if _, ok, err := f.Pop(ctx, busy, GetOptions{}); ok || err != nil {
		t.Fatalf("Pop = %v %v, want a miss", ok, err)
	}
	if v, err := f.Incr(ctx, busy, kv.Int(1), kv.Int(0)); err != nil || v.Type != kv.ValueNone {
		t.Fatalf("Incr = %v %v, want the zero Value", v, err)
	}
	if v, err := f.Decr(ctx, busy, kv.Int(1), kv.Int(0)); err != nil || v.Type != kv.ValueNone {
		t.Fatalf("Decr = %v %v, want the zero Value", v, err)
	}
	// Reads that do not write and other databases are unaffected.
	if ok, err := f.Contains(ctx, busy); !ok || err != nil {
		t.Fatalf("Contains = %v %v", ok, err)
	}
	if err := f.Set(ctx, free, kv.Int(1), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}

	// Strict: the same timeouts are errors.
	if err := strict.Set(ctx, busy, kv.Int(2), kv.SetOptions{}); !errors.Is(err, kv.ErrTimeout) {
		t.Fatalf("strict Set = %v", err)
	}
	if _, err := strict.Add(ctx, busy, kv.Int(2), kv.SetOptions{}); !errors.Is(err, kv.ErrTimeout) {
		t.Fatalf("strict Add = %v", err)
	}
	if _, _, err := strict.Get(ctx, busy, GetOptions{}); !errors.Is(err, kv.ErrTimeout) {
		t.Fatalf("strict Get = %v", err)
	}
	if _, err := strict.Incr(ctx, busy, kv.Int(1), kv.Int(0)); !errors.Is(err, kv.ErrTimeout) {
		t.Fatalf("strict Incr = %v", err)
	}
	if _, err := strict.Delete(ctx, busy); !errors.Is(err, kv.ErrTimeout) {
		t.Fatalf("strict Delete = %v", err)
	}

	release()
	// Nothing the timed-out calls did reached the database.
	it, ok, err := f.Get(ctx, busy, GetOptions{})
	if err != nil || !ok || !it.Value.Equal(kv.Int(1)) {
		t.Fatalf("after release Get = %v %v %v", it.Value, ok, err)
	}
	if ok, err := f.TrySet(ctx, busy, kv.Int(3), kv.SetOptions{}); !ok || err != nil {
		t.Fatalf("after release TrySet = %v %v", ok, err)
	}
}

func TestFanoutBulkRetriesBusyDatabase(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f, err := OpenFanout(ctx, dir, FanoutOptions{Fanout: 3, SwallowTimeouts: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range 30 {
		if err := f.Set(ctx, kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	before := make([]int64, 3)
	for s := range 3 {
		before[s], _ = f.Database(s).Len(ctx)
	}

	// Database 0 stays busy: Clear retries it until ctx ends, never returning
	// ErrTimeout, and reaches no later database.
	release := holdDatabase(t, dir, 3, 0)
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	n, err := f.Clear(cctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kv.ErrTimeout) || n != 0 {
		t.Fatalf("Clear on a busy database = %d %v", n, err)
	}
	for s := range 3 {
		if n, _ := f.Database(s).Len(ctx); n != before[s] {
			t.Fatalf("database %d lost items: %d of %d", s, n, before[s])
		}
	}

	// Busy while Clear starts, released meanwhile: Clear removes everything.
	done := make(chan struct{})
	var cleared int64
	go func() {
		defer close(done)
		cleared, err = f.Clear(ctx)
	}()
	release()
	<-done
	if err != nil || cleared != 30 {
		t.Fatalf("Clear = %d %v, want 30", cleared, err)
	}

	// Transact waits for a busy database too, and gives up with ctx, rolling
	// back the databases it already held.
	release = holdDatabase(t, dir, 3, 2)
	cctx, cancel = context.WithCancel(ctx)
	cancel()
	err = f.Transact(cctx, func(tx *FanoutTx) error {
		t.Error("fn ran without every database")
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Transact on a busy database = %v", err)
	}
	release()
	if err := f.Transact(ctx, func(tx *FanoutTx) error { return tx.Set(kv.IntKey(1), kv.Int(1), kv.SetOptions{}) }); err != nil {
		t.Fatal(err)
	}
}

func TestFanoutConcurrentAddExactlyOnce(t *testing.T) {
	ctx := context.Background()
	f, _ := openFanoutTest(t, FanoutOptions{Fanout: 8})
	const workers, keys = 16, 1000
	var mu sync.Mutex
	winners := map[int]int{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range keys {
				// Each worker walks the keys from a different start.
				k := (i + w*keys/workers) % keys
				added, err := f.Add(ctx, kv.IntKey(int64(k)), kv.Int(int64(w)), kv.SetOptions{})
				if err != nil {
					errs <- err
					return
				}
				if added {
					mu.Lock()
					winners[k]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(winners) != keys {
		t.Fatalf("%d keys added, want %d", len(winners), keys)
	}
	for k, n := range winners {
		if n != 1 {
			t.Fatalf("key %d added %d times", k, n)
		}
	}
	if n, _ := f.Len(ctx); n != keys {
		t.Fatalf("Len = %d", n)
	}
}

func TestFanoutConcurrentIncr(t *testing.T) {
	ctx := context.Background()
	f, _ := openFanoutTest(t, FanoutOptions{Fanout: 4})
	const workers, rounds = 8, 50
	keys := []kv.Key{kv.TextKey("a"), kv.TextKey("b"), kv.IntKey(3), kv.BytesKey([]byte("d")), kv.FloatKey(5.5)}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				for _, k := range keys {
					if _, err := f.Incr(ctx, k, kv.Int(1), kv.Int(0)); err != nil {
						errs <- err
						return
					}
				}
				if _, err := f.Decr(ctx, kv.TextKey("down"), kv.Int(2), kv.Int(0)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, k := range keys {
		it, ok, err := f.Get(ctx, k, GetOptions{})
		if err != nil || !ok || !it.Value.Equal(kv.Int(workers*rounds)) {
			t.Fatalf("%s = %v %v %v, want %d", k, it.Value, ok, err, workers*rounds)
		}
	}
	it, _, _ := f.Get(ctx, kv.TextKey("down"), GetOptions{})
	if !it.Value.Equal(kv.Int(-2 * workers * rounds)) {
		t.Fatalf("down = %v", it.Value)
	}
}

func TestFanoutSubCollections(t *testing.T) {
	ctx := context.Background()
	f, _ := openFanoutTest(t, FanoutOptions{Fanout: 2})
	c, err := f.Cache(ctx, "a/b")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(f.Directory(), "cache", "a", "b"); c.Directory() != want {
		t.Fatalf("cache directory %s, want %s", c.Directory(), want)
	}
	if err := c.Set(ctx, kv.TextKey("x"), kv.Int(1), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	if again, _ := f.Cache(ctx, "a/b"); again != c {
		t.Fatal("Cache(a/b) opened twice")
	}
	if other, _ := f.Cache(ctx, "a"); other == c || other.Directory() != filepath.Join(f.Directory(), "cache", "a") {
		t.Fatal("Cache(a) is not its own cache")
	}
	if c.Settings().EvictionPolicy != settings.PolicyLeastRecentlyStored {
		t.Fatalf("named cache policy %s", c.Settings().EvictionPolicy)
	}

	d, err := f.Deque(ctx, "q/1", 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(f.Directory(), "deque", "q", "1"); d.Directory() != want {
		t.Fatalf("deque directory %s", d.Directory())
	}
	if d.Cache().Settings().EvictionPolicy != settings.PolicyNone || d.Maxlen() != 3 {
		t.Fatalf("deque policy %s maxlen %d", d.Cache().Settings().EvictionPolicy, d.Maxlen())
	}
	if again, _ := f.Deque(ctx, "q/1", 10); again != d || again.Maxlen() != 3 {
		t.Fatal("Deque(q/1) not cached as first opened")
	}
	x, err := f.Index(ctx, "i")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(f.Directory(), "index", "i"); x.Directory() != want || x.Cache().Settings().EvictionPolicy != settings.PolicyNone {
		t.Fatalf("index directory %s policy %s", x.Directory(), x.Cache().Settings().EvictionPolicy)
	}
	if again, _ := f.Index(ctx, "i"); again != x {
		t.Fatal("Index(i) opened twice")
	}
	// The same name in different kinds is a different collection.
	if err := d.Append(ctx, kv.Int(1)); err != nil {
		t.Fatal(err)
	}
	if err := x.Set(ctx, kv.TextKey("k"), kv.Int(2)); err != nil {
		t.Fatal(err)
	}
	// Sub-collections are not in the databases.
	if n, _ := f.Len(ctx); n != 0 {
		t.Fatalf("fanout Len = %d", n)
	}

	for _, bad := range []string{"", "../x", "a/../../b", "/abs", "a//b", `a\b`, "\x00"} {
		if _, err := f.Cache(ctx, bad); !errors.Is(err, kv.ErrInvalidName) {
			t.Errorf("Cache(%q) = %v", bad, err)
		}
		if _, err := f.Deque(ctx, bad, 0); !errors.Is(err, kv.ErrInvalidName) {
			t.Errorf("Deque(%q) = %v", bad, err)
		}
		if _, err := f.Index(ctx, bad); !errors.Is(err, kv.ErrInvalidName) {
			t.Errorf("Index(%q) = %v", bad, err)
		}
	}

	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, kv.TextKey("y"), kv.Int(1), kv.SetOptions{}); !errors.Is(err, kv.ErrClosed) {
		t.Fatalf("named cache after Close: %v", err)
	}
	if err := d.Append(ctx, kv.Int(1)); !errors.Is(err, kv.ErrClosed) {
		t.Fatalf("deque after Close: %v", err)
	}
	if _, err := x.Len(ctx); !errors.Is(err, kv.ErrClosed) {
		t.Fatalf("index after Close: %v", err)
	}
	if _, err := f.Cache(ctx, "a/b"); !errors.Is(err, kv.ErrClosed) {
		t.Fatalf("Cache after Close: %v", err)
	}
	if err := f.Set(ctx, kv.TextKey("k"), kv.Int(1), kv.SetOptions{}); !errors.Is(err, kv.ErrClosed) {
		t.Fatalf("Set after Close: %v", err)
	}

	// Reopened, everything is where it was.
	g, err := OpenFanout(ctx, f.Directory(), FanoutOptions{Fanout: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	c2, _ := g.Cache(ctx, "a/b")
	if it, ok, _ := c2.Get(ctx, kv.TextKey("x"), GetOptions{}); !ok || !it.Value.Equal(kv.Int(1)) {
		t.Fatal("named cache item lost")
	}
	d2, _ := g.Deque(ctx, "q/1", 0)
	if vs, _ := d2.Slice(ctx); len(vs) != 1 || !vs[0].Equal(kv.Int(1)) {
		t.Fatalf("deque = %v", vs)
	}
	x2, _ := g.Index(ctx, "i")
	if v, ok, _ := x2.Get(ctx, kv.TextKey("k")); !ok || !v.Equal(kv.Int(2)) {
		t.Fatal("index item lost")
	}
}

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"a/b", true},
		{"a/b/c", true},
		{"with space", true},
		{"ünïcode/名前", true},
		{"a.b", true},
		{"...", true},
		{".hidden", true},
		{"", false},
		{".", false},
		{"..", false},
		{"../x", false},
		{"x/..", false},
		{"a/../../b", false},
		{"a/./b", false},
		{"/abs", false},
		{"a/", false},
		{"a//b", false},
		{`a\b`, false},
		{`..\x`, false},
		{"\x00", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\x7fb", false},
		{"\u0085", false},
		{"\xff", false},
		// A nested name's directory lies in the collection above it: not
		// on its database or value-file directories.
		{"cache.db", true},
		{"ab", true},
		{"x/cache.db", false},
		{"x/cache.db-wal", false},
		{"x/y/cache.db-shm", false},
		{"x/ab", false},
		{"x/0f", false},
		{"x/AB", true},
		{"x/abc", true},
		{"x/cache.dbx/y", false},
		{"x/my-cache.db", true},
		{strings.Repeat("a", MaxNameSegmentLength), true},
		{strings.Repeat("a", MaxNameSegmentLength+1), false},
		{strings.Repeat("a/", MaxNameLength/2) + "a", false},
	} {
		err := ValidateName(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, kv.ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, not ErrInvalidName", tc.name, err)
		}
	}
}

func TestFanoutNamesStayInside(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	f, err := OpenFanout(ctx, filepath.Join(root, "fc"), FanoutOptions{Fanout: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, name := range []string{"../escape", "a/../../escape", "/tmp/escape", `..\escape`} {
		if _, err := f.Cache(ctx, name); !errors.Is(err, kv.ErrInvalidName) {
			t.Fatalf("Cache(%q) = %v", name, err)
		}
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "fc" {
		t.Fatalf("something was created outside the fanout directory: %v", ents)
	}
}
