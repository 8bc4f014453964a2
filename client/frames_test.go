package client

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/internal/frames"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// TestFramesOption: with Options.Frames a smart client sends its calls as
// frames to each owner; what frames do not carry goes over HTTP.
func TestFramesOption(t *testing.T) {
	cl := testserver.StartCluster(t, 2, testserver.Options{})
	ctx := context.Background()
	c, err := New(cl.URLs[0], Options{Token: cl.Shards[0].Token, Frames: true})
	if err != nil {
		t.Fatal(err)
	}
	tr := c.http.Transport.(*frames.Transport)
	const n = 40
	for i := range n {
		k := kv.TextKey(fmt.Sprintf("k%d", i))
		if err := c.Cache("").Set(ctx, k, kv.Text("v"), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		if it, ok, err := c.Cache("").Get(ctx, k); err != nil || !ok || !it.Value.Equal(kv.Text("v")) {
			t.Fatalf("get %v: %+v %v %v", k, it, ok, err)
		}
	}
	if _, ok, err := c.Cache("").Get(ctx, kv.TextKey("absent")); err != nil || ok {
		t.Fatalf("get of a missing key: %v %v", ok, err)
	}
	if s := tr.Stats(); s.Framed < 2*n+1 || s.Upgrades != 2 {
		t.Fatalf("the calls should have gone as frames on one connection per shard: %+v", s)
	}
	for i := range cl.Shards {
		if f := metric(t, cl.Shards[i].URL, "diskcache_forwarded_requests_total"); f != 0 {
			t.Errorf("shard %d forwarded %v requests", i, f)
		}
	}

	// A value over a frame is set over HTTP and streams back as frames;
	// HEAD (Contains) is HTTP's.
	big := bytes.Repeat([]byte("0123456789abcdef"), (2<<20)/16)
	before := tr.Stats()
	k := kv.TextKey("big")
	if err := c.Cache("").Set(ctx, k, kv.Bytes(big), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	s, ok, err := c.Cache("").Open(ctx, k)
	if err != nil || !ok {
		t.Fatalf("open: %v %v", ok, err)
	}
	got, err := io.ReadAll(s)
	s.Close()
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("streamed %d bytes, equal %v, %v", len(got), bytes.Equal(got, big), err)
	}
	if ok, err := c.Cache("").Contains(ctx, k); err != nil || !ok {
		t.Fatalf("contains: %v %v", ok, err)
	}
	if after := tr.Stats(); after.Fallback != before.Fallback+2 || after.Framed != before.Framed+1 {
		t.Fatalf("big set and contains over HTTP, the open as frames: %+v then %+v", before, after)
	}
}
