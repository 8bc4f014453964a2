package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// startServer starts a real cacheserver process and a client of it.
func startServer(t *testing.T, args ...string) (*testserver.Server, *client.Client) {
	t.Helper()
	srv := testserver.Start(t, testserver.Options{Args: args})
	c, err := client.New(srv.URL, client.Options{Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	return srv, c
}

func newClient(t *testing.T) *client.Client {
	t.Helper()
	_, c := startServer(t)
	return c
}

// TestCollectionIterators pages through a deque and an index with small
// pages, both ways, and moves a value file through a deque.
func TestCollectionIterators(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)

	d := c.Deque("iter")
	var vals []kv.Value
	for i := 0; i < 11; i++ {
		vals = append(vals, kv.Int(int64(i)))
	}
	if n, err := d.Extend(ctx, vals); err != nil || n != 11 {
		t.Fatalf("Extend = %d, %v", n, err)
	}
	i := 10
	for it, err := range d.Items(ctx, true, 4) {
		if err != nil {
			t.Fatal(err)
		}
		if it.Index != int64(i) || !it.Value.Equal(kv.Int(int64(i))) {
			t.Fatalf("reverse item = %+v, want index and value %d", it, i)
		}
		i--
	}
	if i != -1 {
		t.Fatalf("reverse iteration stopped before index %d", i)
	}
	// Breaking out of the iterator is fine.
	for range d.Items(ctx, false, 2) {
		break
	}

	big := bytes.Repeat([]byte("value file "), 20_000)
	if _, err := d.AppendLeft(ctx, kv.Bytes(big)); err != nil {
		t.Fatal(err)
	}
	if v, err := d.PeekLeft(ctx); err != nil || !bytes.Equal(v.Data, big) {
		t.Fatalf("PeekLeft of a value file: %d bytes, %v", len(v.Data), err)
	}
	if v, err := d.At(ctx, 0); err != nil || !bytes.Equal(v.Data, big) {
		t.Fatalf("At(0) of a value file: %d bytes, %v", len(v.Data), err)
	}
	if v, err := d.PopLeft(ctx); err != nil || !bytes.Equal(v.Data, big) {
		t.Fatalf("PopLeft of a value file: %d bytes, %v", len(v.Data), err)
	}

	x := c.Index("iter")
	for i := 0; i < 9; i++ {
		if err := x.Set(ctx, kv.TextKey(fmt.Sprintf("k%d", i)), kv.Int(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for it, err := range x.Items(ctx, client.ItemsOptions{Reverse: true, Limit: 2, KeysOnly: true}) {
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("k%d", 8-n); it.Key.Text() != want || it.Value.Type != kv.ValueNone {
			t.Fatalf("item %d = %+v, want key %s without value", n, it, want)
		}
		n++
	}
	if n != 9 {
		t.Fatalf("listed %d of 9 items", n)
	}
}

func TestRecipeHelpers(t *testing.T) {
	ctx := context.Background()
	c := newClient(t)
	key := kv.BytesKey([]byte{0, '/', 0xff})

	l := c.Lock(key)
	if st, err := l.Acquire(ctx, "me", time.Hour, 0); err != nil || !st.Acquired || st.Remaining <= 0 {
		t.Fatalf("Acquire on a bytes key = %+v, %v", st, err)
	}
	if st, err := c.Lock(key).Status(ctx); err != nil || !st.Locked || st.Holder != "me" {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	// The reentrant lock reads the plain lock's state as an unknown holder.
	if st, err := c.RLock(key).Acquire(ctx, "me", 0, 0); err != nil || st.Acquired {
		t.Fatalf("RLock over a Lock = %+v, %v", st, err)
	}
	if _, err := l.Release(ctx, "you"); !errors.Is(err, client.ErrNotOwner) {
		t.Fatalf("Release by another owner: %v", err)
	}
	if _, err := l.Release(ctx, "me"); err != nil {
		t.Fatal(err)
	}

	s := c.Semaphore(kv.IntKey(1), 1)
	if st, err := s.Acquire(ctx, "a", time.Hour, 0); err != nil || !st.Acquired || st.InUse != 1 {
		t.Fatalf("Semaphore Acquire = %+v, %v", st, err)
	}
	if st, err := s.Acquire(ctx, "b", 0, 0); err != nil || st.Acquired || st.RetryAfter <= 0 {
		t.Fatalf("Semaphore Acquire when full = %+v, %v (want a retry hint from the expiring permit)", st, err)
	}

	a := c.Averager(kv.FloatKey(0.5))
	if avg, n, err := a.Add(ctx, -1.5); err != nil || avg != -1.5 || n != 1 {
		t.Fatalf("Add = %v %d %v", avg, n, err)
	}

	rl := c.RateLimit(kv.TextKey("rl"), 2, time.Hour)
	if res, err := rl.Take(ctx, 2); err != nil || !res.Allowed {
		t.Fatalf("Take(2) = %+v, %v", res, err)
	}
	if res, err := rl.Take(ctx, 0); err != nil || !res.Allowed {
		t.Fatalf("Take(0) only looks: %+v, %v", res, err)
	}
	res, err := rl.Take(ctx, 1)
	var ce *client.Error
	if !errors.Is(err, client.ErrRateLimited) || !errors.As(err, &ce) || ce.Status != 429 || res.Allowed || res.RetryAfter <= 0 {
		t.Fatalf("Take over the limit = %+v, %v", res, err)
	}
}
