package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func utReverse(keys []Key) []Key {
	out := make([]Key, len(keys))
	for i, k := range keys {
		out[len(keys)-1-i] = k
	}
	return out
}

func TestKeysInsertionOrder(t *testing.T) {
	c, clk := openTest(t, map[string]any{SettingCullLimit: 0})
	if got := utKeys(t, c.Keys(utCtx, false)); len(got) != 0 {
		t.Fatalf("Keys of an empty cache = %v", got)
	}
	if got := utKeys(t, c.Keys(utCtx, true)); len(got) != 0 {
		t.Fatalf("reverse Keys of an empty cache = %v", got)
	}
	var want []Key
	for i := 0; i < 250; i++ { // more than one page
		var k Key
		switch i % 4 {
		case 0:
			k = TextKey(fmt.Sprintf("t%03d", 250-i))
		case 1:
			k = IntKey(int64(-i))
		case 2:
			k = BytesKey([]byte{byte(i)})
		default:
			k = FloatKey(float64(i) + 0.5)
		}
		var exp Expiry
		if i%2 == 1 {
			exp = ExpireAfter(time.Second)
		}
		utSet(t, c, k, Int(int64(i)), SetOptions{Expire: exp})
		want = append(want, k)
	}
	clk.Advance(time.Hour) // expired items are still iterated
	utSameKeys(t, utKeys(t, c.Keys(utCtx, false)), want)
	utSameKeys(t, utKeys(t, c.Keys(utCtx, true)), utReverse(want))

	// Overwriting keeps the place (even of an expired item); delete + set
	// moves to the end.
	utSet(t, c, want[0], Int(0), SetOptions{})
	utSet(t, c, want[1], Int(0), SetOptions{})
	if ok, _ := c.Delete(utCtx, want[2]); !ok {
		t.Fatal("Delete failed")
	}
	utSet(t, c, want[2], Int(0), SetOptions{})
	moved := append(append([]Key{want[0], want[1]}, want[3:]...), want[2])
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
				utSet(t, c, IntKey(int64(i)), Int(1), SetOptions{})
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
				utSet(t, c, IntKey(int64(1000+seen)), Int(1), SetOptions{})
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
		utSet(t, c, IntKey(int64(i)), Int(1), SetOptions{})
	}
	var got []int64
	for k, err := range c.Keys(utCtx, false) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, k.Int())
		if k.Int() == 10 {
			for i := 150; i < 220; i++ {
				c.Delete(utCtx, IntKey(int64(i)))
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
	for _, k := range []Key{
		BytesKey([]byte("b")), TextKey("b"), IntKey(3), PickleKey([]byte("a")),
		TextKey("a"), FloatKey(2.5), IntKey(-10), BytesKey([]byte("a")), TextKey(""),
		FloatKey(-0.5), IntKey(100), BytesKey(nil), TextKey("B"),
	} {
		utSet(t, c, k, Int(1), SetOptions{})
	}
	want := []Key{
		IntKey(-10), FloatKey(-0.5), FloatKey(2.5), IntKey(3), IntKey(100),
		TextKey(""), TextKey("B"), TextKey("a"), TextKey("b"),
		BytesKey(nil), PickleKey([]byte("a")), BytesKey([]byte("a")), BytesKey([]byte("b")),
	}
	utSameKeys(t, utKeys(t, c.SortedKeys(utCtx, false)), want)
	utSameKeys(t, utKeys(t, c.SortedKeys(utCtx, true)), utReverse(want))
}

func TestSortedKeysPaging(t *testing.T) {
	c, _ := openTest(t, nil)
	var want []Key
	for i := 0; i < 230; i++ {
		want = append(want, IntKey(int64(i)))
	}
	for i := 0; i < 230; i++ {
		want = append(want, TextKey(fmt.Sprintf("k%03d", i)))
	}
	// Insert in a scrambled order.
	for i := range want {
		k := want[(i*7)%len(want)]
		utSet(t, c, k, Int(1), SetOptions{})
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
		utSet(t, c, IntKey(int64(i)), Int(1), SetOptions{})
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
