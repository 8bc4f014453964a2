package engine

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

func utPush(t *testing.T, c *Cache, v kv.Value, q QueueOptions, opts kv.SetOptions) kv.Key {
	t.Helper()
	k, err := c.Push(utCtx, v, q, opts)
	if err != nil {
		t.Fatalf("Push(%v, %+v): %v", v, q, err)
	}
	return k
}

// utTake pulls (or peeks) and returns the item, failing on an error.
func utTake(t *testing.T, c *Cache, pull bool, q QueueOptions) (Item, bool) {
	t.Helper()
	f := c.Peek
	if pull {
		f = c.Pull
	}
	it, ok, err := f(utCtx, q, GetOptions{})
	if err != nil {
		t.Fatalf("pull=%v %+v: %v", pull, q, err)
	}
	return it, ok
}

func utWantItem(t *testing.T, it Item, ok bool, k kv.Key, v kv.Value) {
	t.Helper()
	if !ok {
		t.Fatalf("queue empty, want (%v, %v)", k, v)
	}
	if !it.Key.Equal(k) || !it.Value.Equal(v) {
		t.Fatalf("item = (%v, %v), want (%v, %v)", it.Key, it.Value, k, v)
	}
}

func TestPushKeys(t *testing.T) {
	c, _ := openTest(t, nil)
	if k := utPush(t, c, kv.Text("a"), QueueOptions{}, kv.SetOptions{}); !k.Equal(kv.IntKey(500000000000000)) {
		t.Fatalf("first key = %v", k)
	}
	if k := utPush(t, c, kv.Text("b"), QueueOptions{}, kv.SetOptions{}); !k.Equal(kv.IntKey(500000000000001)) {
		t.Fatalf("second key = %v", k)
	}
	if k := utPush(t, c, kv.Text("z"), QueueOptions{Side: Front}, kv.SetOptions{}); !k.Equal(kv.IntKey(499999999999999)) {
		t.Fatalf("front key = %v", k)
	}
	if k := utPush(t, c, kv.Text("c"), QueueOptions{Side: Back}, kv.SetOptions{}); !k.Equal(kv.IntKey(500000000000002)) {
		t.Fatalf("back key = %v", k)
	}
	// Prefixed queues use TEXT keys and are independent of the integer one.
	if k := utPush(t, c, kv.Text("p1"), QueueOptions{Prefix: "jobs"}, kv.SetOptions{}); !k.Equal(kv.TextKey("jobs-500000000000000")) {
		t.Fatalf("prefixed key = %v", k)
	}
	if k := utPush(t, c, kv.Text("p0"), QueueOptions{Prefix: "jobs", Side: Front}, kv.SetOptions{}); !k.Equal(kv.TextKey("jobs-499999999999999")) {
		t.Fatalf("prefixed front key = %v", k)
	}
	if k := utPush(t, c, kv.Text("o"), QueueOptions{Prefix: "other"}, kv.SetOptions{}); !k.Equal(kv.TextKey("other-500000000000000")) {
		t.Fatalf("other prefix key = %v", k)
	}
	// Items pushed are ordinary items.
	utWant(t, c, kv.IntKey(500000000000001), kv.Text("b"))
	utWant(t, c, kv.TextKey("jobs-499999999999999"), kv.Text("p0"))
	if r := utMustRow(t, c, kv.TextKey("jobs-500000000000000")); r.mode != modeRaw {
		t.Fatalf("row = %+v", r)
	}
}

// A float key at an end of the queue's range counts on as a float, as in
// python-diskcache (Index({1.5: x}).push gives 2.5, at the front 0.5).
func TestPushAfterAFloatKey(t *testing.T) {
	c, _ := openTest(t, nil)
	utSet(t, c, kv.FloatKey(1.5), kv.Text("x"), kv.SetOptions{})
	if k := utPush(t, c, kv.Text("b"), QueueOptions{}, kv.SetOptions{}); !k.Equal(kv.FloatKey(2.5)) {
		t.Fatalf("back key after 1.5 = %v, want 2.5", k)
	}
	if k := utPush(t, c, kv.Text("f"), QueueOptions{Side: Front}, kv.SetOptions{}); !k.Equal(kv.FloatKey(0.5)) {
		t.Fatalf("front key before 1.5 = %v, want 0.5", k)
	}
	if _, err := c.Push(utCtx, kv.Text("g"), QueueOptions{Side: Front}, kv.SetOptions{}); !errors.Is(err, kv.ErrQueueFull) {
		t.Fatalf("front push before 0.5 = %v, want ErrQueueFull (keys stay above 0)", err)
	}
	it, ok, err := c.Pull(utCtx, QueueOptions{}, GetOptions{})
	if err != nil || !ok || !it.Key.Equal(kv.FloatKey(0.5)) || !it.Value.Equal(kv.Text("f")) {
		t.Fatalf("pull = %+v %v %v, want 0.5: f", it, ok, err)
	}
}

func TestPullPeekOrder(t *testing.T) {
	for _, prefix := range []string{"", "q"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			c, _ := openTest(t, nil)
			q := QueueOptions{Prefix: prefix}
			key := func(n int64) kv.Key {
				if prefix == "" {
					return kv.IntKey(n)
				}
				return kv.TextKey(fmt.Sprintf("%s-%015d", prefix, n))
			}
			// Keys outside the queue range, and another queue, are never taken.
			utSet(t, c, kv.IntKey(0), kv.Text("zero"), kv.SetOptions{})
			utSet(t, c, kv.IntKey(999999999999999), kv.Text("max"), kv.SetOptions{})
			utSet(t, c, kv.TextKey("q"), kv.Text("bare prefix"), kv.SetOptions{})
			utSet(t, c, kv.BytesKey([]byte("q-500000000000000")), kv.Text("blob"), kv.SetOptions{})
			utPush(t, c, kv.Text("other"), QueueOptions{Prefix: "r"}, kv.SetOptions{})
			for _, v := range []string{"a", "b", "c", "d"} {
				utPush(t, c, kv.Text(v), q, kv.SetOptions{})
			}
			utPush(t, c, kv.Text("front"), QueueOptions{Prefix: prefix, Side: Front}, kv.SetOptions{})

			it, ok := utTake(t, c, false, q)
			utWantItem(t, it, ok, key(499999999999999), kv.Text("front"))
			it, ok = utTake(t, c, false, QueueOptions{Prefix: prefix, Side: Back})
			utWantItem(t, it, ok, key(500000000000003), kv.Text("d"))
			// Peek removes nothing.
			it, ok = utTake(t, c, false, q)
			utWantItem(t, it, ok, key(499999999999999), kv.Text("front"))

			it, ok = utTake(t, c, true, q)
			utWantItem(t, it, ok, key(499999999999999), kv.Text("front"))
			it, ok = utTake(t, c, true, QueueOptions{Prefix: prefix, Side: Back})
			utWantItem(t, it, ok, key(500000000000003), kv.Text("d"))
			it, ok = utTake(t, c, true, QueueOptions{Prefix: prefix, Side: Front})
			utWantItem(t, it, ok, key(500000000000000), kv.Text("a"))
			// Pushing at the back continues after the current last key.
			utPush(t, c, kv.Text("e"), q, kv.SetOptions{})
			for _, want := range []struct {
				n int64
				v string
			}{{500000000000001, "b"}, {500000000000002, "c"}, {500000000000003, "e"}} {
				it, ok = utTake(t, c, true, q)
				utWantItem(t, it, ok, key(want.n), kv.Text(want.v))
			}
			if _, ok := utTake(t, c, true, q); ok {
				t.Fatal("Pull on an empty queue: ok")
			}
			if _, ok := utTake(t, c, false, q); ok {
				t.Fatal("Peek on an empty queue: ok")
			}
			// The other keys are all still there.
			if n := utLen(t, c); n != 5 {
				t.Fatalf("Len = %d, want 5", n)
			}
			// An emptied queue starts over in the middle.
			if k := utPush(t, c, kv.Text("again"), q, kv.SetOptions{}); !k.Equal(key(500000000000000)) {
				t.Fatalf("key after emptying = %v", k)
			}
		})
	}
}

func TestQueueExpireAndTag(t *testing.T) {
	c, clk := openTest(t, nil)
	utPush(t, c, kv.Int(1), QueueOptions{}, kv.SetOptions{Expire: kv.ExpireAfter(5 * time.Second)})
	utPush(t, c, kv.Int(2), QueueOptions{}, kv.SetOptions{Expire: kv.ExpireAfter(10 * time.Second), Tag: kv.TextKey("t")})
	utPush(t, c, kv.Int(3), QueueOptions{}, kv.SetOptions{})
	utPush(t, c, kv.Int(4), QueueOptions{}, kv.SetOptions{Expire: kv.ExpireAfter(5 * time.Second)})

	// At the boundary (expire_time == now) an item is still pulled.
	clk.Advance(5 * time.Second)
	it, ok := utTake(t, c, false, QueueOptions{})
	utWantItem(t, it, ok, kv.IntKey(500000000000000), kv.Int(1))
	it, ok = utTake(t, c, false, QueueOptions{Side: Back})
	utWantItem(t, it, ok, kv.IntKey(500000000000003), kv.Int(4))

	// Past it, expired items are deleted on the way.
	clk.Advance(time.Second)
	it, ok = utTake(t, c, false, QueueOptions{Side: Back})
	utWantItem(t, it, ok, kv.IntKey(500000000000002), kv.Int(3))
	if n := utLen(t, c); n != 3 {
		t.Fatalf("Len = %d after peek dropped one expired item", n)
	}
	it, ok = utTake(t, c, true, QueueOptions{})
	utWantItem(t, it, ok, kv.IntKey(500000000000001), kv.Int(2))
	if !it.Tag.Equal(kv.TextKey("t")) || it.ExpireTime != t0+10 {
		t.Fatalf("pulled item = %+v, want tag and expire time", it)
	}
	if n := utLen(t, c); n != 1 {
		t.Fatalf("Len = %d, want 1", n)
	}
	if got := c.Counters().Expired; got != 2 {
		t.Fatalf("Counters().Expired = %d, want 2", got)
	}
	clk.Advance(time.Hour)
	it, ok = utTake(t, c, true, QueueOptions{})
	utWantItem(t, it, ok, kv.IntKey(500000000000002), kv.Int(3))
	// A queue of expired items only is empty and gets emptied.
	utPush(t, c, kv.Int(5), QueueOptions{Prefix: "x"}, kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	utPush(t, c, kv.Int(6), QueueOptions{Prefix: "x"}, kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	clk.Advance(2 * time.Second)
	if _, ok := utTake(t, c, false, QueueOptions{Prefix: "x"}); ok {
		t.Fatal("Peek of an all-expired queue: ok")
	}
	if n := utLen(t, c); n != 0 {
		t.Fatalf("Len = %d, want 0", n)
	}
}

func TestQueueFileValues(t *testing.T) {
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 10})
	big := utBig(100, 'q')
	k1 := utPush(t, c, kv.Bytes(big), QueueOptions{}, kv.SetOptions{})
	utPush(t, c, kv.Bytes(big), QueueOptions{}, kv.SetOptions{})
	utPush(t, c, kv.Int(3), QueueOptions{}, kv.SetOptions{})
	if n := len(utValFiles(t, c)); n != 2 {
		t.Fatalf("%d value files, want 2", n)
	}
	// Peek reads the file and keeps it.
	it, ok := utTake(t, c, false, QueueOptions{})
	utWantItem(t, it, ok, k1, kv.Bytes(big))
	if n := len(utValFiles(t, c)); n != 2 {
		t.Fatalf("%d value files after peek, want 2", n)
	}
	// Pull removes it.
	it, ok = utTake(t, c, true, QueueOptions{})
	utWantItem(t, it, ok, k1, kv.Bytes(big))
	if n := len(utValFiles(t, c)); n != 1 {
		t.Fatalf("%d value files after pull, want 1", n)
	}
	// A missing value file: the item is skipped (and dropped) by pull.
	if err := os.Remove(utFileOf(t, c, kv.IntKey(500000000000001))); err != nil {
		t.Fatal(err)
	}
	it, ok = utTake(t, c, true, QueueOptions{})
	utWantItem(t, it, ok, kv.IntKey(500000000000002), kv.Int(3))
	if n := utLen(t, c); n != 0 {
		t.Fatalf("Len = %d, want 0", n)
	}
	// And by peek.
	utPush(t, c, kv.Bytes(big), QueueOptions{}, kv.SetOptions{})
	k := utPush(t, c, kv.Int(4), QueueOptions{}, kv.SetOptions{})
	if err := os.Remove(utFileOf(t, c, kv.IntKey(500000000000000))); err != nil {
		t.Fatal(err)
	}
	it, ok = utTake(t, c, false, QueueOptions{})
	utWantItem(t, it, ok, k, kv.Int(4))
	// Streaming pull.
	utPush(t, c, kv.Bytes(big), QueueOptions{Side: Front}, kv.SetOptions{})
	it, ok, err := c.Pull(utCtx, QueueOptions{}, GetOptions{Stream: true})
	if err != nil || !ok || it.Body == nil {
		t.Fatalf("streamed Pull = %+v, %v, %v", it, ok, err)
	}
	it.Close()
}

func TestPeekItem(t *testing.T) {
	c, clk := openTest(t, nil)
	if _, err := c.PeekItem(utCtx, true, GetOptions{}); !errors.Is(err, kv.ErrEmpty) {
		t.Fatalf("PeekItem empty = %v, want ErrEmpty", err)
	}
	if _, err := c.PeekItem(utCtx, false, GetOptions{}); !errors.Is(err, kv.ErrEmpty) {
		t.Fatalf("PeekItem(first) empty = %v, want ErrEmpty", err)
	}
	utSet(t, c, kv.TextKey("a"), kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	utSet(t, c, kv.PickleKey([]byte("\x80\x05N.")), kv.Int(2), kv.SetOptions{Tag: kv.TextKey("t")})
	utSet(t, c, kv.IntKey(3), kv.Int(3), kv.SetOptions{})
	utSet(t, c, kv.BytesKey([]byte("d")), kv.Int(4), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	it, err := c.PeekItem(utCtx, true, GetOptions{})
	if err != nil || !it.Key.Equal(kv.BytesKey([]byte("d"))) || !it.Value.Equal(kv.Int(4)) {
		t.Fatalf("PeekItem(last) = %+v, %v", it, err)
	}
	it, err = c.PeekItem(utCtx, false, GetOptions{})
	if err != nil || !it.Key.Equal(kv.TextKey("a")) || it.ExpireTime != t0+1 {
		t.Fatalf("PeekItem(first) = %+v, %v", it, err)
	}
	// Rewriting a key keeps its place.
	utSet(t, c, kv.TextKey("a"), kv.Int(10), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	if it, _ := c.PeekItem(utCtx, false, GetOptions{}); !it.Value.Equal(kv.Int(10)) {
		t.Fatalf("PeekItem(first) after rewrite = %+v", it)
	}
	// At the boundary the items are live; past it they are dropped.
	clk.Advance(time.Second)
	if it, _ := c.PeekItem(utCtx, false, GetOptions{}); !it.Key.Equal(kv.TextKey("a")) {
		t.Fatalf("PeekItem at the boundary = %+v", it)
	}
	clk.Advance(time.Millisecond)
	it, err = c.PeekItem(utCtx, false, GetOptions{})
	if err != nil || it.Key.Kind() != kv.KeyPickle || !it.Tag.Equal(kv.TextKey("t")) {
		t.Fatalf("PeekItem(first) past expiry = %+v, %v", it, err)
	}
	it, err = c.PeekItem(utCtx, true, GetOptions{})
	if err != nil || !it.Key.Equal(kv.IntKey(3)) {
		t.Fatalf("PeekItem(last) past expiry = %+v, %v", it, err)
	}
	if n := utLen(t, c); n != 2 {
		t.Fatalf("Len = %d, want 2: PeekItem drops the expired ends", n)
	}
	// A missing value file is skipped.
	if err := c.Reset(utCtx, settings.NameDiskMinFileSize, 10); err != nil {
		t.Fatal(err)
	}
	utSet(t, c, kv.TextKey("file"), kv.Bytes(utBig(50, 'f')), kv.SetOptions{})
	if err := os.Remove(utFileOf(t, c, kv.TextKey("file"))); err != nil {
		t.Fatal(err)
	}
	if it, err := c.PeekItem(utCtx, true, GetOptions{}); err != nil || !it.Key.Equal(kv.IntKey(3)) {
		t.Fatalf("PeekItem past a missing file = %+v, %v", it, err)
	}
	// All expired: ErrEmpty.
	c.Clear(utCtx)
	utSet(t, c, kv.TextKey("x"), kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	clk.Advance(2 * time.Second)
	if _, err := c.PeekItem(utCtx, true, GetOptions{}); !errors.Is(err, kv.ErrEmpty) {
		t.Fatalf("PeekItem all expired = %v, want ErrEmpty", err)
	}
}

func TestQueueInTransaction(t *testing.T) {
	c, _ := openTest(t, nil)
	boom := errors.New("boom")
	err := c.Transact(utCtx, func(tx *Tx) error {
		if _, err := tx.Push(kv.Int(1), QueueOptions{}, kv.SetOptions{}); err != nil {
			return err
		}
		if _, err := tx.Push(kv.Int(2), QueueOptions{}, kv.SetOptions{}); err != nil {
			return err
		}
		it, ok, err := tx.Pull(QueueOptions{}, GetOptions{})
		if err != nil || !ok || !it.Value.Equal(kv.Int(1)) {
			t.Errorf("Pull in tx = %+v, %v, %v", it, ok, err)
		}
		it, ok, err = tx.Peek(QueueOptions{}, GetOptions{})
		if err != nil || !ok || !it.Value.Equal(kv.Int(2)) {
			t.Errorf("Peek in tx = %+v, %v, %v", it, ok, err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Transact = %v", err)
	}
	if n := utLen(t, c); n != 0 {
		t.Fatalf("Len = %d after rollback", n)
	}
}

func TestQueueFull(t *testing.T) {
	c, _ := openTest(t, nil)
	utSet(t, c, kv.IntKey(999999999999998), kv.Int(1), kv.SetOptions{})
	if k, err := c.Push(utCtx, kv.Int(2), QueueOptions{}, kv.SetOptions{}); err == nil {
		t.Fatalf("Push past the last queue key = %v, want an error", k)
	}
	utSet(t, c, kv.IntKey(1), kv.Int(1), kv.SetOptions{})
	if k, err := c.Push(utCtx, kv.Int(2), QueueOptions{Side: Front}, kv.SetOptions{}); err == nil {
		t.Fatalf("Push before the first queue key = %v, want an error", k)
	}
	if n := utLen(t, c); n != 2 {
		t.Fatalf("Len = %d: a failed push stored something", n)
	}
	// Not full in the other direction.
	if k, err := c.Push(utCtx, kv.Int(2), QueueOptions{Side: Back}, kv.SetOptions{}); err == nil || !k.IsNone() {
		t.Fatalf("Push = %v, %v", k, err)
	}
	if k, err := c.Push(utCtx, kv.Int(2), QueueOptions{Prefix: "p"}, kv.SetOptions{}); err != nil || !k.Equal(kv.TextKey("p-500000000000000")) {
		t.Fatalf("Push to another queue = %v, %v", k, err)
	}
}

// A prefixed queue's end key is read as python-diskcache reads it, with
// int(): what int() takes counts on, and a key int() refuses makes the
// push fail (python-diskcache raises ValueError) instead of starting over.
func TestPushAfterAKeyThatIsNotAnInteger(t *testing.T) {
	for _, c := range []struct {
		tail string
		n    int64
		ok   bool
	}{ // as /usr/bin/python3's int(tail) answers
		{"5", 5, true}, {" 7 ", 7, true}, {"+3", 3, true}, {"1_000", 1000, true},
		{"00012", 12, true}, {"\t8\n", 8, true}, {"\v9\f", 9, true},
		{"_1", 0, false}, {"1_", 0, false}, {"1__0", 0, false}, {"5x", 0, false},
		{"", 0, false}, {"+", 0, false}, {"+-1", 0, false}, {"0x10", 0, false}, {"1 2", 0, false},
	} {
		n, ok, err := pythonInt(c.tail)
		if ok != c.ok || ok && (err != nil || n != c.n) {
			t.Errorf("pythonInt(%q) = %d, %v, %v; want %d, %v", c.tail, n, ok, err, c.n, c.ok)
		}
	}
	c, _ := openTest(t, nil)
	utSet(t, c, kv.TextKey("q-5x"), kv.Text("odd"), kv.SetOptions{})
	if _, err := c.Push(t.Context(), kv.Text("v"), QueueOptions{Prefix: "q"}, kv.SetOptions{}); !errors.Is(err, kv.ErrNotNumeric) {
		t.Fatalf("push after key q-5x: %v, want ErrNotNumeric", err)
	}
	utSet(t, c, kv.TextKey("q-1_0"), kv.Text("ten"), kv.SetOptions{})
	if k := utPush(t, c, kv.Text("v"), QueueOptions{Prefix: "q", Side: Front}, kv.SetOptions{}); !k.Equal(kv.TextKey("q-000000000000009")) {
		t.Fatalf("push at the front of q-1_0 = %v, want q-000000000000009", k)
	}
}
