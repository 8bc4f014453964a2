package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

func utReverse(keys []kv.Key) []kv.Key {
	out := make([]kv.Key, len(keys))
	for i, k := range keys {
		out[len(keys)-1-i] = k
	}
	return out
}

func TestKeysInsertionOrder(t *testing.T) {
	c, clk := openTest(t, map[settings.Name]any{settings.NameCullLimit: 0})
	if got := utKeys(t, c.Keys(utCtx, false)); len(got) != 0 {
		t.Fatalf("Keys of an empty cache = %v", got)
	}
	if got := utKeys(t, c.Keys(utCtx, true)); len(got) != 0 {
		t.Fatalf("reverse Keys of an empty cache = %v", got)
	}
	var want []kv.Key
	for i := 0; i < 250; i++ { // more than one page
		var k kv.Key
		switch i % 4 {
		case 0:
			k = kv.TextKey(fmt.Sprintf("t%03d", 250-i))
		case 1:
			k = kv.IntKey(int64(-i))
		case 2:
			k = kv.BytesKey([]byte{byte(i)})
		default:
			k = kv.FloatKey(float64(i) + 0.5)
		}
		var exp kv.Expiry
		if i%2 == 1 {
			exp = kv.ExpireAfter(time.Second)
		}
		utSet(t, c, k, kv.Int(int64(i)), kv.SetOptions{Expire: exp})
		want = append(want, k)
	}
	clk.Advance(time.Hour) // expired items are still iterated
	utSameKeys(t, utKeys(t, c.Keys(utCtx, false)), want)
	utSameKeys(t, utKeys(t, c.Keys(utCtx, true)), utReverse(want))

	// Overwriting keeps the place (even of an expired item); delete + set
	// moves to the end.
	utSet(t, c, want[0], kv.Int(0), kv.SetOptions{})
	utSet(t, c, want[1], kv.Int(0), kv.SetOptions{})
	if ok, _ := c.Delete(utCtx, want[2]); !ok {
		t.Fatal("Delete failed")
	}
	utSet(t, c, want[2], kv.Int(0), kv.SetOptions{})
	moved := append(append([]kv.Key{want[0], want[1]}, want[3:]...), want[2])
	utSameKeys(t, utKeys(t, c.Keys(utCtx, false)), moved)

	// Stopping early works.
	n := 0
	for _, err := range c.Keys(utCtx, false) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 150 {
			break
		}
	}
	if n != 150 {
		t.Fatalf("stopped after %d", n)
	}
}

func TestKeysBoundedAtStart(t *testing.T) {
	for _, reverse := range []bool{false, true} {
		t.Run(fmt.Sprintf("reverse=%v", reverse), func(t *testing.T) {
			c, _ := openTest(t, nil)
			for i := 0; i < 150; i++ {
				utSet(t, c, kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{})
			}
			seen := 0
			for k, err := range c.Keys(utCtx, reverse) {
				if err != nil {
					t.Fatal(err)
				}
				if k.Int() >= 150 {
					t.Fatalf("saw %v, added during iteration", k)
				}
				seen++
				// Items added during iteration, in every page, are not seen.
				utSet(t, c, kv.IntKey(int64(1000+seen)), kv.Int(1), kv.SetOptions{})
			}
			if seen != 150 {
				t.Fatalf("saw %d keys, want 150", seen)
			}
			if n := utLen(t, c); n != 300 {
				t.Fatalf("Len = %d", n)
			}
		})
	}
}

func TestKeysSkipsDeletedDuringIteration(t *testing.T) {
	c, _ := openTest(t, nil)
	for i := 0; i < 220; i++ {
		utSet(t, c, kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{})
	}
	var got []int64
	for k, err := range c.Keys(utCtx, false) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, k.Int())
		if k.Int() == 10 {
			for i := 150; i < 220; i++ {
				c.Delete(utCtx, kv.IntKey(int64(i)))
			}
		}
	}
	if len(got) != 150 || got[149] != 149 {
		t.Fatalf("iterated %d keys ending %v, want 0..149", len(got), got[len(got)-1])
	}
}

func TestSortedKeys(t *testing.T) {
	c, _ := openTest(t, nil)
	// Inserted out of order; SQLite sorts numbers < text < blobs, and
	// (for equal blobs) raw=0 pickles before raw=1 bytes.
	for _, k := range []kv.Key{
		kv.BytesKey([]byte("b")), kv.TextKey("b"), kv.IntKey(3), kv.PickleKey([]byte("a")),
		kv.TextKey("a"), kv.FloatKey(2.5), kv.IntKey(-10), kv.BytesKey([]byte("a")), kv.TextKey(""),
		kv.FloatKey(-0.5), kv.IntKey(100), kv.BytesKey(nil), kv.TextKey("B"),
	} {
		utSet(t, c, k, kv.Int(1), kv.SetOptions{})
	}
	want := []kv.Key{
		kv.IntKey(-10), kv.FloatKey(-0.5), kv.FloatKey(2.5), kv.IntKey(3), kv.IntKey(100),
		kv.TextKey(""), kv.TextKey("B"), kv.TextKey("a"), kv.TextKey("b"),
		kv.BytesKey(nil), kv.PickleKey([]byte("a")), kv.BytesKey([]byte("a")), kv.BytesKey([]byte("b")),
	}
	utSameKeys(t, utKeys(t, c.SortedKeys(utCtx, false)), want)
	utSameKeys(t, utKeys(t, c.SortedKeys(utCtx, true)), utReverse(want))
}

func TestSortedKeysPaging(t *testing.T) {
	c, _ := openTest(t, nil)
	var want []kv.Key
	for i := 0; i < 230; i++ {
		want = append(want, kv.IntKey(int64(i)))
	}
	for i := 0; i < 230; i++ {
		want = append(want, kv.TextKey(fmt.Sprintf("k%03d", i)))
	}
	// Insert in a scrambled order.
	for i := range want {
		k := want[(i*7)%len(want)]
		utSet(t, c, k, kv.Int(1), kv.SetOptions{})
	}
	if n := utLen(t, c); n != int64(len(want)) {
		t.Fatalf("Len = %d, want %d", n, len(want))
	}
	utSameKeys(t, utKeys(t, c.SortedKeys(utCtx, false)), want)
	utSameKeys(t, utKeys(t, c.SortedKeys(utCtx, true)), utReverse(want))
	if got := utKeys(t, c.SortedKeys(utCtx, false)); len(got) != 460 {
		t.Fatalf("%d keys", len(got))
	}
}

func TestIterationCancelled(t *testing.T) {
	c, _ := openTest(t, nil)
	for i := 0; i < 150; i++ {
		utSet(t, c, kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{})
	}
	ctx, cancel := context.WithCancel(utCtx)
	defer cancel()
	n := 0
	var last error
	for _, err := range c.Keys(ctx, false) {
		if err != nil {
			last = err
			break
		}
		n++
		if n == 1 {
			cancel()
		}
	}
	if !errors.Is(last, context.Canceled) {
		t.Fatalf("iteration after cancel ended with %v after %d keys", last, n)
	}
	if n != 100 {
		t.Fatalf("got %d keys before the cancellation took effect, want one page (100)", n)
	}
}

// Every next-page query of the scans finds its place in the (key, raw)
// index (SEARCH), rather than walking it from the start for every page
// (SCAN), which made Deque.remove on 200,000 items take 11 s.
func TestPagingQueriesSearchTheIndex(t *testing.T) {
	c, _ := openTest(t, nil)
	utSet(t, c, kv.IntKey(1), kv.Text("v"), kv.SetOptions{})
	type query struct {
		name string
		q    string
		args []any
	}
	queries := []query{{"deque scanEqual", dequeScanNext, []any{int64(1), int64(0)}}}
	for _, reverse := range []bool{false, true} {
		_, next := dequeScanQueries(reverse)
		queries = append(queries, query{fmt.Sprintf("deque Scan reverse=%v", reverse), next, []any{1.0, int64(1), int64(0), int64(100)}})
		_, next = sortedKeysQueries(reverse)
		queries = append(queries, query{fmt.Sprintf("SortedKeys reverse=%v", reverse), next, []any{int64(1), int64(0), int64(100)}})
	}
	for _, q := range queries {
		rows, err := c.queryPage(t.Context(), "EXPLAIN QUERY PLAN "+q.q, 4, q.args...)
		if err != nil {
			t.Fatalf("%s: %v", q.name, err)
		}
		for _, r := range rows {
			if detail := fmt.Sprint(r[3]); !strings.HasPrefix(detail, "SEARCH Cache USING") {
				t.Errorf("%s: plan %q, want a SEARCH of the (key, raw) index", q.name, detail)
			}
		}
	}
}

// utPages reads a whole run of KeyPage or SortedKeyPage, limit keys a page.
func utPages(t *testing.T, c *Cache, sorted, reverse bool, limit int, between func()) []kv.Key {
	t.Helper()
	var all []kv.Key
	var at PagePosition
	var after *kv.Key
	for pages := 0; ; pages++ {
		var keys []kv.Key
		var more bool
		var err error
		if sorted {
			keys, more, err = c.SortedKeyPage(utCtx, after, reverse, limit)
		} else {
			var page KeyPage
			page, err = c.KeyPage(utCtx, at, reverse, limit, "")
			keys, at, more = page.Keys, page.Next, page.More
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) > limit {
			t.Fatalf("a page of %d keys, limit %d", len(keys), limit)
		}
		all = append(all, keys...)
		if len(keys) > 0 {
			after = &keys[len(keys)-1]
		}
		if !more {
			return all
		}
		if len(keys) == 0 || pages > 1000 {
			t.Fatalf("more after an empty page (%d pages)", pages)
		}
		if between != nil {
			between()
		}
	}
}

func TestKeyPagesAreKeysInPages(t *testing.T) {
	c, clk := openTest(t, map[settings.Name]any{settings.NameCullLimit: 0})
	for _, sorted := range []bool{false, true} {
		if got := utPages(t, c, sorted, false, 5, nil); len(got) != 0 {
			t.Fatalf("pages of an empty cache (sorted %v) = %v", sorted, got)
		}
	}
	for i := 0; i < 57; i++ {
		k := []kv.Key{kv.TextKey(fmt.Sprintf("t%03d", 99-i)), kv.IntKey(int64(-i)), kv.BytesKey([]byte{byte(i)}), kv.FloatKey(float64(i) + 0.5)}[i%4]
		utSet(t, c, k, kv.Int(int64(i)), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	}
	clk.Advance(time.Hour) // expired keys are listed, as they are iterated
	for _, limit := range []int{1, 7, 57, 1000} {
		for _, reverse := range []bool{false, true} {
			utSameKeys(t, utPages(t, c, false, reverse, limit, nil), utKeys(t, c.Keys(utCtx, reverse)))
			utSameKeys(t, utPages(t, c, true, reverse, limit, nil), utKeys(t, c.SortedKeys(utCtx, reverse)))
		}
	}
	if _, err := c.KeyPage(utCtx, PagePosition{}, false, 0, ""); !errors.Is(err, kv.ErrInvalidValue) {
		t.Fatalf("limit 0: %v", err)
	}
}

// A run of insertion-order pages lists the keys there when it started:
// keys added between pages are not listed, in either direction.
func TestKeyPagesAreBoundedByTheStart(t *testing.T) {
	c, _ := openTest(t, nil)
	var want []kv.Key
	for i := 0; i < 20; i++ {
		want = append(want, kv.IntKey(int64(i)))
		utSet(t, c, want[i], kv.Int(0), kv.SetOptions{})
	}
	added := 0
	add := func() {
		added++
		utSet(t, c, kv.TextKey(fmt.Sprintf("later%d", added)), kv.Int(0), kv.SetOptions{})
	}
	utSameKeys(t, utPages(t, c, false, false, 3, add), want)
	want = utKeys(t, c.Keys(utCtx, true))
	utSameKeys(t, utPages(t, c, false, true, 3, add), want)
	if added == 0 {
		t.Fatal("nothing was added between pages")
	}
}

// With a match, a page looks at limit rows and returns the text keys among
// them that match: the run as a whole lists exactly the matching keys.
func TestKeyPagesMatchTextKeys(t *testing.T) {
	c, _ := openTest(t, nil)
	var want []kv.Key
	for i := 0; i < 40; i++ {
		k := kv.TextKey(fmt.Sprintf("user:%d", i))
		utSet(t, c, k, kv.Int(0), kv.SetOptions{})
		if i%10 == 1 {
			want = append(want, k)
		}
		utSet(t, c, kv.TextKey(fmt.Sprintf("other:%d", i)), kv.Int(0), kv.SetOptions{})
		utSet(t, c, kv.BytesKey([]byte(fmt.Sprintf("user:%d1", i))), kv.Int(0), kv.SetOptions{}) // not text
	}
	for _, limit := range []int{1, 7, 1000} {
		var got []kv.Key
		var at PagePosition
		for {
			page, err := c.KeyPage(utCtx, at, false, limit, "user:*1")
			if err != nil {
				t.Fatal(err)
			}
			if page.Looked > limit {
				t.Fatalf("looked at %d rows, limit %d", page.Looked, limit)
			}
			got, at = append(got, page.Keys...), page.Next
			if !page.More {
				break
			}
		}
		utSameKeys(t, got, want)
	}
}

// A FanoutCache's pages list database 0's keys, then 1's, ...; in reverse
// the last database first: Keys, in pages.
func TestFanoutKeyPagesAreKeys(t *testing.T) {
	f, _ := openFanoutTest(t, FanoutOptions{Fanout: 4})
	for _, reverse := range []bool{false, true} {
		// An empty cache is one page: the run goes through every database.
		if page, err := f.KeyPage(utCtx, FanoutPosition{}, reverse, 10, ""); err != nil || len(page.Keys) != 0 || page.More {
			t.Fatalf("empty: %+v %v", page, err)
		}
	}
	for i := 0; i < 100; i++ {
		if err := f.Set(utCtx, kv.IntKey(int64(i)), kv.Int(0), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, reverse := range []bool{false, true} {
		for _, limit := range []int{1, 9, 1000} {
			var got []kv.Key
			var at FanoutPosition
			for pages := 0; ; pages++ {
				page, err := f.KeyPage(utCtx, at, reverse, limit, "")
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Keys) > limit || (page.More && len(page.Keys) < limit) {
					t.Fatalf("a page of %d keys, limit %d, more %v: a page is full unless it is the last", len(page.Keys), limit, page.More)
				}
				got, at = append(got, page.Keys...), page.Next
				if !page.More {
					break
				}
				if pages > 1000 {
					t.Fatal("no end to the pages")
				}
			}
			utSameKeys(t, got, utKeys(t, f.Keys(utCtx, reverse)))
		}
	}
	if _, err := f.KeyPage(utCtx, FanoutPosition{Step: 4}, false, 1, ""); !errors.Is(err, kv.ErrInvalidValue) {
		t.Fatalf("step past the databases: %v", err)
	}
}
