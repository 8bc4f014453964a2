package engine

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
)

func utPush(t *testing.T, c *Cache, v Value, q QueueOptions, opts SetOptions) Key {
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

func utWantItem(t *testing.T, it Item, ok bool, k Key, v Value) {
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
	if k := utPush(t, c, Text("a"), QueueOptions{}, SetOptions{}); !k.Equal(IntKey(500000000000000)) {
		t.Fatalf("first key = %v", k)
	}
	if k := utPush(t, c, Text("b"), QueueOptions{}, SetOptions{}); !k.Equal(IntKey(500000000000001)) {
		t.Fatalf("second key = %v", k)
	}
	if k := utPush(t, c, Text("z"), QueueOptions{Side: Front}, SetOptions{}); !k.Equal(IntKey(499999999999999)) {
		t.Fatalf("front key = %v", k)
	}
	if k := utPush(t, c, Text("c"), QueueOptions{Side: Back}, SetOptions{}); !k.Equal(IntKey(500000000000002)) {
		t.Fatalf("back key = %v", k)
	}
	// Prefixed queues use TEXT keys and are independent of the integer one.
	if k := utPush(t, c, Text("p1"), QueueOptions{Prefix: "jobs"}, SetOptions{}); !k.Equal(TextKey("jobs-500000000000000")) {
		t.Fatalf("prefixed key = %v", k)
	}
	if k := utPush(t, c, Text("p0"), QueueOptions{Prefix: "jobs", Side: Front}, SetOptions{}); !k.Equal(TextKey("jobs-499999999999999")) {
		t.Fatalf("prefixed front key = %v", k)
	}
	if k := utPush(t, c, Text("o"), QueueOptions{Prefix: "other"}, SetOptions{}); !k.Equal(TextKey("other-500000000000000")) {
		t.Fatalf("other prefix key = %v", k)
	}
	// Items pushed are ordinary items.
	utWant(t, c, IntKey(500000000000001), Text("b"))
	utWant(t, c, TextKey("jobs-499999999999999"), Text("p0"))
	if r := utMustRow(t, c, TextKey("jobs-500000000000000")); r.mode != modeRaw {
		t.Fatalf("row = %+v", r)
	}
}

func TestPullPeekOrder(t *testing.T) {
	for _, prefix := range []string{"", "q"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			c, _ := openTest(t, nil)
			q := QueueOptions{Prefix: prefix}
			key := func(n int64) Key {
				if prefix == "" {
					return IntKey(n)
				}
				return TextKey(fmt.Sprintf("%s-%015d", prefix, n))
			}
			// Keys outside the queue range, and another queue, are never taken.
			utSet(t, c, IntKey(0), Text("zero"), SetOptions{})
			utSet(t, c, IntKey(999999999999999), Text("max"), SetOptions{})
			utSet(t, c, TextKey("q"), Text("bare prefix"), SetOptions{})
			utSet(t, c, BytesKey([]byte("q-500000000000000")), Text("blob"), SetOptions{})
			utPush(t, c, Text("other"), QueueOptions{Prefix: "r"}, SetOptions{})
			for _, v := range []string{"a", "b", "c", "d"} {
				utPush(t, c, Text(v), q, SetOptions{})
			}
			utPush(t, c, Text("front"), QueueOptions{Prefix: prefix, Side: Front}, SetOptions{})

			it, ok := utTake(t, c, false, q)
			utWantItem(t, it, ok, key(499999999999999), Text("front"))
			it, ok = utTake(t, c, false, QueueOptions{Prefix: prefix, Side: Back})
			utWantItem(t, it, ok, key(500000000000003), Text("d"))
			// Peek removes nothing.
			it, ok = utTake(t, c, false, q)
			utWantItem(t, it, ok, key(499999999999999), Text("front"))

			it, ok = utTake(t, c, true, q)
			utWantItem(t, it, ok, key(499999999999999), Text("front"))
			it, ok = utTake(t, c, true, QueueOptions{Prefix: prefix, Side: Back})
			utWantItem(t, it, ok, key(500000000000003), Text("d"))
			it, ok = utTake(t, c, true, QueueOptions{Prefix: prefix, Side: Front})
			utWantItem(t, it, ok, key(500000000000000), Text("a"))
			// Pushing at the back continues after the current last key.
			utPush(t, c, Text("e"), q, SetOptions{})
			for _, want := range []struct {
				n int64
				v string
			}{{500000000000001, "b"}, {500000000000002, "c"}, {500000000000003, "e"}} {
				it, ok = utTake(t, c, true, q)
				utWantItem(t, it, ok, key(want.n), Text(want.v))
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
			if k := utPush(t, c, Text("again"), q, SetOptions{}); !k.Equal(key(500000000000000)) {
				t.Fatalf("key after emptying = %v", k)
			}
		})
	}
}

func TestQueueExpireAndTag(t *testing.T) {
	c, clk := openTest(t, nil)
	utPush(t, c, Int(1), QueueOptions{}, SetOptions{Expire: ExpireAfter(5 * time.Second)})
	utPush(t, c, Int(2), QueueOptions{}, SetOptions{Expire: ExpireAfter(10 * time.Second), Tag: TextKey("t")})
	utPush(t, c, Int(3), QueueOptions{}, SetOptions{})
	utPush(t, c, Int(4), QueueOptions{}, SetOptions{Expire: ExpireAfter(5 * time.Second)})

	// At the boundary (expire_time == now) an item is still pulled.
	clk.Advance(5 * time.Second)
	it, ok := utTake(t, c, false, QueueOptions{})
	utWantItem(t, it, ok, IntKey(500000000000000), Int(1))
	it, ok = utTake(t, c, false, QueueOptions{Side: Back})
	utWantItem(t, it, ok, IntKey(500000000000003), Int(4))

	// Past it, expired items are deleted on the way.
	clk.Advance(time.Second)
	it, ok = utTake(t, c, false, QueueOptions{Side: Back})
	utWantItem(t, it, ok, IntKey(500000000000002), Int(3))
	if n := utLen(t, c); n != 3 {
		t.Fatalf("Len = %d after peek dropped one expired item", n)
	}
	it, ok = utTake(t, c, true, QueueOptions{})
	utWantItem(t, it, ok, IntKey(500000000000001), Int(2))
	if !it.Tag.Equal(TextKey("t")) || it.ExpireTime != t0+10 {
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
	utWantItem(t, it, ok, IntKey(500000000000002), Int(3))
	// A queue of expired items only is empty and gets emptied.
	utPush(t, c, Int(5), QueueOptions{Prefix: "x"}, SetOptions{Expire: ExpireAfter(time.Second)})
	utPush(t, c, Int(6), QueueOptions{Prefix: "x"}, SetOptions{Expire: ExpireAfter(time.Second)})
	clk.Advance(2 * time.Second)
	if _, ok := utTake(t, c, false, QueueOptions{Prefix: "x"}); ok {
		t.Fatal("Peek of an all-expired queue: ok")
	}
	if n := utLen(t, c); n != 0 {
		t.Fatalf("Len = %d, want 0", n)
	}
}

func TestQueueFileValues(t *testing.T) {
	c, _ := openTest(t, map[string]any{SettingDiskMinFileSize: 10})
	big := utBig(100, 'q')
	k1 := utPush(t, c, Bytes(big), QueueOptions{}, SetOptions{})
	utPush(t, c, Bytes(big), QueueOptions{}, SetOptions{})
	utPush(t, c, Int(3), QueueOptions{}, SetOptions{})
	if n := len(utValFiles(t, c)); n != 2 {
		t.Fatalf("%d value files, want 2", n)
	}
	// Peek reads the file and keeps it.
	it, ok := utTake(t, c, false, QueueOptions{})
	utWantItem(t, it, ok, k1, Bytes(big))
	if n := len(utValFiles(t, c)); n != 2 {
		t.Fatalf("%d value files after peek, want 2", n)
	}
	// Pull removes it.
	it, ok = utTake(t, c, true, QueueOptions{})
	utWantItem(t, it, ok, k1, Bytes(big))
	if n := len(utValFiles(t, c)); n != 1 {
		t.Fatalf("%d value files after pull, want 1", n)
	}
	// A missing value file: the item is skipped (and dropped) by pull.
	if err := os.Remove(utFileOf(t, c, IntKey(500000000000001))); err != nil {
		t.Fatal(err)
	}
	it, ok = utTake(t, c, true, QueueOptions{})
	utWantItem(t, it, ok, IntKey(500000000000002), Int(3))
	if n := utLen(t, c); n != 0 {
		t.Fatalf("Len = %d, want 0", n)
	}
	// And by peek.
	utPush(t, c, Bytes(big), QueueOptions{}, SetOptions{})
	k := utPush(t, c, Int(4), QueueOptions{}, SetOptions{})
	if err := os.Remove(utFileOf(t, c, IntKey(500000000000000))); err != nil {
		t.Fatal(err)
	}
	it, ok = utTake(t, c, false, QueueOptions{})
	utWantItem(t, it, ok, k, Int(4))
	// Streaming pull.
	utPush(t, c, Bytes(big), QueueOptions{Side: Front}, SetOptions{})
	it, ok, err := c.Pull(utCtx, QueueOptions{}, GetOptions{Stream: true})
	if err != nil || !ok || it.Body == nil {
		t.Fatalf("streamed Pull = %+v, %v, %v", it, ok, err)
	}
	it.Close()
}

func TestPeekItem(t *testing.T) {
	c, clk := openTest(t, nil)
	if _, err := c.PeekItem(utCtx, true, GetOptions{}); !errors.Is(err, ErrEmpty) {
		t.Fatalf("PeekItem empty = %v, want ErrEmpty", err)
	}
	if _, err := c.PeekItem(utCtx, false, GetOptions{}); !errors.Is(err, ErrEmpty) {
		t.Fatalf("PeekItem(first) empty = %v, want ErrEmpty", err)
	}
	utSet(t, c, TextKey("a"), Int(1), SetOptions{Expire: ExpireAfter(time.Second)})
	utSet(t, c, PickleKey([]byte("\x80\x05N.")), Int(2), SetOptions{Tag: TextKey("t")})
	utSet(t, c, IntKey(3), Int(3), SetOptions{})
	utSet(t, c, BytesKey([]byte("d")), Int(4), SetOptions{Expire: ExpireAfter(time.Second)})
	it, err := c.PeekItem(utCtx, true, GetOptions{})
	if err != nil || !it.Key.Equal(BytesKey([]byte("d"))) || !it.Value.Equal(Int(4)) {
		t.Fatalf("PeekItem(last) = %+v, %v", it, err)
	}
	it, err = c.PeekItem(utCtx, false, GetOptions{})
	if err != nil || !it.Key.Equal(TextKey("a")) || it.ExpireTime != t0+1 {
		t.Fatalf("PeekItem(first) = %+v, %v", it, err)
	}
	// Rewriting a key keeps its place.
	utSet(t, c, TextKey("a"), Int(10), SetOptions{Expire: ExpireAfter(time.Second)})
	if it, _ := c.PeekItem(utCtx, false, GetOptions{}); !it.Value.Equal(Int(10)) {
		t.Fatalf("PeekItem(first) after rewrite = %+v", it)
	}
	// At the boundary the items are live; past it they are dropped.
	clk.Advance(time.Second)
	if it, _ := c.PeekItem(utCtx, false, GetOptions{}); !it.Key.Equal(TextKey("a")) {
		t.Fatalf("PeekItem at the boundary = %+v", it)
	}
	clk.Advance(time.Millisecond)
	it, err = c.PeekItem(utCtx, false, GetOptions{})
	if err != nil || it.Key.Kind() != KeyPickle || !it.Tag.Equal(TextKey("t")) {
		t.Fatalf("PeekItem(first) past expiry = %+v, %v", it, err)
	}
	it, err = c.PeekItem(utCtx, true, GetOptions{})
	if err != nil || !it.Key.Equal(IntKey(3)) {
		t.Fatalf("PeekItem(last) past expiry = %+v, %v", it, err)
	}
	if n := utLen(t, c); n != 2 {
		t.Fatalf("Len = %d, want 2: PeekItem drops the expired ends", n)
	}
	// A missing value file is skipped.
	if err := c.Reset(utCtx, SettingDiskMinFileSize, 10); err != nil {
		t.Fatal(err)
	}
	utSet(t, c, TextKey("file"), Bytes(utBig(50, 'f')), SetOptions{})
	if err := os.Remove(utFileOf(t, c, TextKey("file"))); err != nil {
		t.Fatal(err)
	}
	if it, err := c.PeekItem(utCtx, true, GetOptions{}); err != nil || !it.Key.Equal(IntKey(3)) {
		t.Fatalf("PeekItem past a missing file = %+v, %v", it, err)
	}
	// All expired: ErrEmpty.
	c.Clear(utCtx)
	utSet(t, c, TextKey("x"), Int(1), SetOptions{Expire: ExpireAfter(time.Second)})
	clk.Advance(2 * time.Second)
	if _, err := c.PeekItem(utCtx, true, GetOptions{}); !errors.Is(err, ErrEmpty) {
		t.Fatalf("PeekItem all expired = %v, want ErrEmpty", err)
	}
}

func TestQueueInTransaction(t *testing.T) {
	c, _ := openTest(t, nil)
	boom := errors.New("boom")
	err := c.Transact(utCtx, func(tx *Tx) error {
		if _, err := tx.Push(Int(1), QueueOptions{}, SetOptions{}); err != nil {
			return err
		}
		if _, err := tx.Push(Int(2), QueueOptions{}, SetOptions{}); err != nil {
			return err
		}
		it, ok, err := tx.Pull(QueueOptions{}, GetOptions{})
		if err != nil || !ok || !it.Value.Equal(Int(1)) {
			t.Errorf("Pull in tx = %+v, %v, %v", it, ok, err)
		}
		it, ok, err = tx.Peek(QueueOptions{}, GetOptions{})
		if err != nil || !ok || !it.Value.Equal(Int(2)) {
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
	utSet(t, c, IntKey(999999999999998), Int(1), SetOptions{})
	if k, err := c.Push(utCtx, Int(2), QueueOptions{}, SetOptions{}); err == nil {
		t.Fatalf("Push past the last queue key = %v, want an error", k)
	}
	utSet(t, c, IntKey(1), Int(1), SetOptions{})
	if k, err := c.Push(utCtx, Int(2), QueueOptions{Side: Front}, SetOptions{}); err == nil {
		t.Fatalf("Push before the first queue key = %v, want an error", k)
	}
	if n := utLen(t, c); n != 2 {
		t.Fatalf("Len = %d: a failed push stored something", n)
	}
	// Not full in the other direction.
	if k, err := c.Push(utCtx, Int(2), QueueOptions{Side: Back}, SetOptions{}); err == nil || !k.IsNone() {
		t.Fatalf("Push = %v, %v", k, err)
	}
	if k, err := c.Push(utCtx, Int(2), QueueOptions{Prefix: "p"}, SetOptions{}); err != nil || !k.Equal(TextKey("p-500000000000000")) {
		t.Fatalf("Push to another queue = %v, %v", k, err)
	}
}
