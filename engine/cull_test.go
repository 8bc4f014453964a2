package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

func utLive(t *testing.T, c *Cache, names ...string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, n := range names {
		_, ok := utRowOf(t, c, kv.TextKey(n))
		out[n] = ok
	}
	return out
}

func utWantRows(t *testing.T, c *Cache, present []string, absent []string) {
	t.Helper()
	for n, ok := range utLive(t, c, present...) {
		if !ok {
			t.Errorf("%s was culled, want it kept", n)
		}
	}
	for n, ok := range utLive(t, c, absent...) {
		if ok {
			t.Errorf("%s was kept, want it culled", n)
		}
	}
}

// utFill stores k0..k<n-1>, one second apart, with culling off.
func utFill(t *testing.T, policy settings.EvictionPolicy, n int) (*Cache, *fakeClock) {
	t.Helper()
	c, clk := openTest(t, map[settings.Name]any{settings.NameEvictionPolicy: string(policy), settings.NameCullLimit: 0})
	for i := 0; i < n; i++ {
		clk.Advance(time.Second)
		utSet(t, c, kv.TextKey(fmt.Sprintf("k%d", i)), kv.Int(int64(i)), kv.SetOptions{})
	}
	return c, clk
}

// utOverLimit makes every following write cull up to limit rows.
func utOverLimit(t *testing.T, c *Cache, limit int) {
	t.Helper()
	if err := c.Reset(utCtx, settings.NameSizeLimit, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(utCtx, settings.NameCullLimit, limit); err != nil {
		t.Fatal(err)
	}
}

func TestEvictionLeastRecentlyStored(t *testing.T) {
	c, clk := utFill(t, settings.PolicyLeastRecentlyStored, 5)
	// Reads do not count; rewriting does.
	utGet(t, c, kv.TextKey("k0"))
	clk.Advance(time.Second)
	utSet(t, c, kv.TextKey("k1"), kv.Int(1), kv.SetOptions{})
	utOverLimit(t, c, 2)
	clk.Advance(time.Second)
	utSet(t, c, kv.TextKey("new"), kv.Int(9), kv.SetOptions{})
	utWantRows(t, c, []string{"k1", "k4", "k3", "new"}, []string{"k0", "k2"})
	if got := c.Counters(); got.Evicted != 2 || got.Expired != 0 {
		t.Fatalf("Counters = %+v, want 2 evicted", got)
	}
}

func TestEvictionLeastRecentlyUsed(t *testing.T) {
	c, clk := utFill(t, settings.PolicyLeastRecentlyUsed, 5)
	clk.Advance(time.Second)
	utGet(t, c, kv.TextKey("k0"))
	clk.Advance(time.Second)
	utGet(t, c, kv.TextKey("k1"))
	if r := utMustRow(t, c, kv.TextKey("k1")); r.accessTime != t0+7 || r.storeTime != t0+2 {
		t.Fatalf("row after get = %+v, want access_time updated only", r)
	}
	// A miss and Contains do not touch anything.
	c.Contains(utCtx, kv.TextKey("k2"))
	utOverLimit(t, c, 2)
	clk.Advance(time.Second)
	utSet(t, c, kv.TextKey("new"), kv.Int(9), kv.SetOptions{})
	utWantRows(t, c, []string{"k0", "k1", "k4", "new"}, []string{"k2", "k3"})
}

func TestEvictionLeastFrequentlyUsed(t *testing.T) {
	c, _ := utFill(t, settings.PolicyLeastFrequentlyUsed, 5)
	for _, k := range []string{"k0", "k0", "k1", "k3", "k4"} {
		if _, ok := utGet(t, c, kv.TextKey(k)); !ok {
			t.Fatalf("miss on %s", k)
		}
	}
	if r := utMustRow(t, c, kv.TextKey("k0")); r.accessCount != 2 {
		t.Fatalf("access_count = %d, want 2", r.accessCount)
	}
	utOverLimit(t, c, 1)
	utSet(t, c, kv.TextKey("new"), kv.Int(9), kv.SetOptions{})
	utWantRows(t, c, []string{"k0", "k1", "k3", "k4", "new"}, []string{"k2"})
	// Ties break by rowid: "new" (count 0) goes before "new2" (count 0).
	utSet(t, c, kv.TextKey("new2"), kv.Int(9), kv.SetOptions{})
	utWantRows(t, c, []string{"k0", "k1", "k3", "k4", "new2"}, []string{"new"})
	// With a budget of two: the new item (count 0) goes first, then the
	// lowest count with the lowest rowid (k1, count 1, before k3 and k4).
	utGet(t, c, kv.TextKey("new2"))
	utGet(t, c, kv.TextKey("new2"))
	if err := c.Reset(utCtx, settings.NameCullLimit, 2); err != nil {
		t.Fatal(err)
	}
	utSet(t, c, kv.TextKey("new3"), kv.Int(9), kv.SetOptions{})
	utWantRows(t, c, []string{"k0", "k3", "k4", "new2"}, []string{"new3", "k1"})
}

func TestEvictionNone(t *testing.T) {
	c, clk := utFill(t, settings.PolicyNone, 5)
	utSet(t, c, kv.TextKey("exp"), kv.Int(0), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	utOverLimit(t, c, 10)
	clk.Advance(2 * time.Second)
	utSet(t, c, kv.TextKey("new"), kv.Int(9), kv.SetOptions{})
	// Nothing evicted by policy, but expired items are still culled.
	utWantRows(t, c, []string{"k0", "k1", "k2", "k3", "k4", "new"}, []string{"exp"})
	if got := c.Counters(); got.Evicted != 0 || got.Expired != 1 {
		t.Fatalf("Counters = %+v", got)
	}
	n, err := c.Cull(utCtx)
	if err != nil || n != 0 {
		t.Fatalf("Cull under none = %d, %v", n, err)
	}
	if l := utLen(t, c); l != 6 {
		t.Fatalf("Len = %d, want 6", l)
	}
	// Cull still expires under none, and counts what it expired (the
	// reference's "expired + evicted"; python-diskcache 5.4 returns 0 here).
	if err := c.Reset(utCtx, settings.NameCullLimit, 0); err != nil {
		t.Fatal(err)
	}
	utSet(t, c, kv.TextKey("e1"), kv.Int(0), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	utSet(t, c, kv.TextKey("e2"), kv.Int(0), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	clk.Advance(2 * time.Second)
	if n, err := c.Cull(utCtx); err != nil || n != 2 {
		t.Fatalf("Cull under none with 2 expired = %d, %v", n, err)
	}
	if l := utLen(t, c); l != 6 {
		t.Fatalf("Len = %d, want 6", l)
	}
}

func TestCullLimitPerWrite(t *testing.T) {
	c, clk := utFill(t, settings.PolicyLeastRecentlyStored, 4)
	// Five expired items with expire times out of rowid order.
	for i, d := range []int{5, 3, 1, 4, 2} {
		utSet(t, c, kv.TextKey(fmt.Sprintf("e%d", i)), kv.Int(0), kv.SetOptions{Expire: kv.ExpireAfter(time.Duration(d) * time.Second)})
	}
	clk.Advance(10 * time.Second)
	if err := c.Reset(utCtx, settings.NameCullLimit, 3); err != nil {
		t.Fatal(err)
	}
	// Under the size limit: only expired items go, earliest expire_time first.
	utSet(t, c, kv.TextKey("w1"), kv.Int(1), kv.SetOptions{})
	utWantRows(t, c, []string{"e0", "e3", "k0", "k1", "k2", "k3", "w1"}, []string{"e2", "e4", "e1"})
	if got := c.Counters(); got.Expired != 3 || got.Evicted != 0 {
		t.Fatalf("Counters = %+v, want 3 expired", got)
	}
	// Over the size limit: the two remaining expired ones, then one by policy.
	if err := c.Reset(utCtx, settings.NameSizeLimit, 0); err != nil {
		t.Fatal(err)
	}
	utSet(t, c, kv.TextKey("w2"), kv.Int(1), kv.SetOptions{})
	utWantRows(t, c, []string{"k1", "k2", "k3", "w1", "w2"}, []string{"e0", "e3", "k0"})
	if got := c.Counters(); got.Expired != 5 || got.Evicted != 1 {
		t.Fatalf("Counters = %+v, want 5 expired, 1 evicted", got)
	}
	// Every kind of write culls: add, incr on a missing key, push.
	if ok, _ := c.Add(utCtx, kv.TextKey("w3"), kv.Int(1), kv.SetOptions{}); !ok {
		t.Fatal("Add failed")
	}
	utWantRows(t, c, []string{"w1", "w2", "w3"}, []string{"k1", "k2", "k3"})
	if _, err := c.Incr(utCtx, kv.TextKey("w4"), kv.Int(1), kv.Int(0)); err != nil {
		t.Fatal(err)
	}
	if n := utLen(t, c); n != 1 {
		t.Fatalf("Len = %d after incr culled 3", n)
	}
	if _, err := c.Push(utCtx, kv.Int(1), QueueOptions{}, kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := utLen(t, c); n != 0 {
		// push culls after inserting: its own item is the most recent, but with
		// size_limit 0 and budget 3 it goes too.
		t.Fatalf("Len = %d after push", n)
	}
	if got := c.Counters(); got.Evicted != 1+3+3+2 {
		t.Fatalf("Counters = %+v", got)
	}
}

func TestCullLimitZeroDisables(t *testing.T) {
	c, clk := openTest(t, map[settings.Name]any{settings.NameCullLimit: 0, settings.NameSizeLimit: 0})
	for i := 0; i < 5; i++ {
		utSet(t, c, kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	}
	clk.Advance(time.Minute)
	for i := 5; i < 10; i++ {
		utSet(t, c, kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{})
	}
	if n := utLen(t, c); n != 10 {
		t.Fatalf("Len = %d, want 10: cull_limit 0 disables culling", n)
	}
	if got := c.Counters(); got != (Counters{}) {
		t.Fatalf("Counters = %+v", got)
	}
}

func TestCullUntilUnderLimit(t *testing.T) {
	const fileSize = 64 << 10
	c, clk := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 1024, settings.NameCullLimit: 0})
	for i := 0; i < 30; i++ {
		clk.Advance(time.Second)
		utSet(t, c, kv.IntKey(int64(i)), kv.Bytes(utBig(fileSize, byte('a'+i%26))), kv.SetOptions{})
	}
	for i := 30; i < 35; i++ {
		utSet(t, c, kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	}
	clk.Advance(2 * time.Second)
	vol, err := c.Volume(utCtx)
	if err != nil {
		t.Fatal(err)
	}
	// Over the limit by 15.5 files: Cull removes 10 per round, so 20 go.
	if err := c.Reset(utCtx, settings.NameSizeLimit, vol-fileSize*31/2); err != nil {
		t.Fatal(err)
	}
	n, err := c.Cull(utCtx)
	if err != nil || n != 5+20 {
		t.Fatalf("Cull = %d, %v; want 25 (5 expired + 20 evicted)", n, err)
	}
	for i := 0; i < 35; i++ {
		_, ok := utRowOf(t, c, kv.IntKey(int64(i)))
		if want := i >= 20 && i < 30; ok != want {
			t.Errorf("key %d kept = %v, want %v", i, ok, want)
		}
	}
	if files := utValFiles(t, c); len(files) != 10 {
		t.Fatalf("%d value files left, want 10", len(files))
	}
	if got := c.Counters(); got.Expired != 5 || got.Evicted != 20 {
		t.Fatalf("Counters = %+v", got)
	}
	vol2, _ := c.Volume(utCtx)
	if vol2 > c.Settings().SizeLimit {
		t.Fatalf("volume %d still over the limit %d", vol2, c.Settings().SizeLimit)
	}
	// Under the limit: nothing more.
	if n, err := c.Cull(utCtx); n != 0 || err != nil {
		t.Fatalf("second Cull = %d, %v", n, err)
	}
}

func TestVolume(t *testing.T) {
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 100})
	vol := func() int64 {
		v, err := c.Volume(utCtx)
		if err != nil {
			t.Fatal(err)
		}
		want := utQueryInt(t, c, `PRAGMA page_count`)*utQueryInt(t, c, `PRAGMA page_size`) +
			utQueryInt(t, c, `SELECT value FROM Settings WHERE key = 'size'`)
		if v != want {
			t.Fatalf("Volume = %d, want pages + Settings.size = %d", v, want)
		}
		return v
	}
	empty := vol()
	if empty <= 0 {
		t.Fatalf("Volume = %d", empty)
	}
	utSet(t, c, kv.TextKey("a"), kv.Bytes(utBig(5000, 'a')), kv.SetOptions{})
	utSet(t, c, kv.TextKey("b"), kv.Text(string(utBig(3000, 'b'))), kv.SetOptions{})
	if v := vol(); v < empty+8000 {
		t.Fatalf("Volume = %d, want at least %d", v, empty+8000)
	}
	if got := utQueryInt(t, c, `SELECT value FROM Settings WHERE key = 'size'`); got != 8000 {
		t.Fatalf("Settings.size = %d, want 8000", got)
	}
	c.Delete(utCtx, kv.TextKey("a"))
	vol()
	if got := utQueryInt(t, c, `SELECT value FROM Settings WHERE key = 'size'`); got != 3000 {
		t.Fatalf("Settings.size = %d, want 3000", got)
	}
}
