package engine

import (
	"context"
	"testing"
	"time"
)

// fakeClock is a settable clock for expiry tests.
type fakeClock struct{ t time.Time }

func (f *fakeClock) Now() time.Time          { return f.t }
func (f *fakeClock) Advance(d time.Duration) { f.t = f.t.Add(d) }

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

// openTest opens a cache in a temporary directory with a fake clock.
func openTest(t *testing.T, settings map[string]any) (*Cache, *fakeClock) {
	t.Helper()
	clk := newClock()
	c, err := Open(context.Background(), t.TempDir(), Options{Settings: settings, Now: clk.Now})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, clk
}

func TestSetGetRoundTrip(t *testing.T) {
	ctx := context.Background()
	c, _ := openTest(t, nil)
	if err := c.Set(ctx, TextKey("a"), Int(5), SetOptions{Tag: TextKey("t")}); err != nil {
		t.Fatal(err)
	}
	it, ok, err := c.Get(ctx, TextKey("a"), GetOptions{})
	if err != nil || !ok {
		t.Fatalf("Get = %v, %v", ok, err)
	}
	if !it.Value.Equal(Int(5)) || !it.Tag.Equal(TextKey("t")) || it.ExpireTime != 0 {
		t.Fatalf("Get = %+v", it)
	}
}
