package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// A shard that took a call and froze (SIGSTOP: a frozen pod or node) is
// given up once it does not answer its health check either: a read goes
// through the base URL, whose server answers for the owner, an incr is a
// 504 shard_timeout (it may have been applied). Both hung for as long as
// the caller's context allowed, forever without a deadline.
func TestStalledShardIsGivenUp(t *testing.T) {
	cl := testserver.StartCluster(t, 3, testserver.Options{})
	for _, frames := range []bool{false, true} {
		c, err := New(cl.URLs[0], Options{Token: cl.Shards[0].Token, Frames: frames})
		if err != nil {
			t.Fatal(err)
		}
		key := kv.TextKey(keyOwnedBy(t, 2, 3))
		if err := c.Cache("").Set(t.Context(), key, kv.Text("v"), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		cl.Shards[2].Freeze(t)
		// A hang shows as the deadline; the shard's own answer never comes.
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		_, _, getErr := c.Cache("").Get(ctx, key)
		c2, _ := New(cl.URLs[0], Options{Token: cl.Shards[0].Token, Frames: frames})
		_ = c2.Cache("").Set(ctx, kv.TextKey(keyOwnedBy(t, 0, 3)), kv.Text("v"), kv.SetOptions{}) // learns the topology
		_, incrErr := c2.Cache("").Incr(ctx, kv.TextKey(keyOwnedBy(t, 2, 3)+"n"), kv.Int(1), kv.Int(0))
		cancel()
		cl.Shards[2].Thaw(t)
		if !errors.Is(getErr, ErrShardUnavailable) {
			t.Errorf("frames %v: get of a stalled shard's key: %v, want the base URL's 503 shard_unavailable", frames, getErr)
		}
		if !errors.Is(incrErr, ErrShardTimeout) {
			t.Errorf("frames %v: incr of a stalled shard's key: %v, want 504 shard_timeout", frames, incrErr)
		}
		if _, ok, err := c.Cache("").Get(t.Context(), key); err != nil || !ok {
			t.Fatalf("frames %v: get once the shard resumed: %v %v", frames, ok, err)
		}
	}
}

// A base URL that froze before the client read the topology: the first
// call's topology read is given up as any call to a stalled server is,
// and the call answers ErrUnanswered. The read was not watched, and held
// the call forever without a deadline (the whole deadline with one).
func TestFrozenBaseURLDoesNotHoldTheTopologyRead(t *testing.T) {
	cl := testserver.StartCluster(t, 3, testserver.Options{})
	c, err := New(cl.URLs[0], Options{Token: cl.Shards[0].Token})
	if err != nil {
		t.Fatal(err)
	}
	cl.Shards[0].Freeze(t)
	// A hang shows as the deadline.
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	_, _, err = c.Cache("").Get(ctx, kv.TextKey(keyOwnedBy(t, 1, 3)))
	cl.Shards[0].Thaw(t)
	if !errors.Is(err, ErrUnanswered) {
		t.Errorf("get while the base URL is frozen: %v, want ErrUnanswered", err)
	}
}

// Contains asks with HEAD, whose error answers have no body: their code
// comes in the Diskcache-Error header, so errors.Is matches as for a get
// (it matched nothing: the code was the status text).
func TestContainsErrorsMatchTheSentinels(t *testing.T) {
	cl := testserver.StartCluster(t, 3, testserver.Options{})
	c, err := New(cl.URLs[0], Options{Token: cl.Shards[0].Token, DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := New(cl.URLs[0], Options{Token: "wrong", DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.Cache("").Contains(t.Context(), kv.TextKey("k")); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("contains with a wrong token: %v, want ErrUnauthorized", err)
	}
	cl.Shards[2].Kill()
	_, err = c.Cache("").Contains(t.Context(), kv.TextKey(keyOwnedBy(t, 2, 3)))
	if !errors.Is(err, ErrShardUnavailable) || !errors.Is(err, ErrUnavailable) {
		t.Errorf("contains of a key whose shard is down: %v, want ErrShardUnavailable", err)
	}
}

// A client given a token file routes straight to the owners as one given
// the token does (it read the topology without a token, refused, and sent
// every call through the base URL).
func TestTokenFileRoutesStraightToOwners(t *testing.T) {
	cl := testserver.StartCluster(t, 3, testserver.Options{})
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(cl.Shards[0].Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := New(cl.URLs[0], Options{TokenFile: file})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := c.Cache("").Set(t.Context(), kv.TextKey(keyOwnedBy(t, i, 3)), kv.Text("v"), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The first call learns the topology; the rest go to their owners.
	for i := 0; i < 30; i++ {
		if _, ok, err := c.Cache("").Get(t.Context(), kv.TextKey(keyOwnedBy(t, i%3, 3))); err != nil || !ok {
			t.Fatalf("get: %v %v", ok, err)
		}
	}
	forwarded := 0.0
	for _, s := range cl.Shards {
		forwarded += metric(t, s.URL, "diskcache_forwarded_requests_total")
	}
	if forwarded > 1 {
		t.Fatalf("the shards forwarded %v requests of a client with a token file; want at most the first", forwarded)
	}
}

// SetMany with a shard away stores the others' items and says which were
// not stored (it answered an error with nothing in the result).
func TestSetManyWithAShardAway(t *testing.T) {
	cl := testserver.StartCluster(t, 3, testserver.Options{})
	cl.Shards[1].Kill()
	c, _ := New(cl.URLs[0], Options{Token: cl.Shards[0].Token, Retries: -1})
	var items []SetItem
	var away []int
	for i := 0; i < 12; i++ {
		k := keyOwnedBy(t, i%3, 3) + strings.Repeat("x", i)
		if topology.Owner([]byte(k), 3) == 1 {
			away = append(away, i)
		}
		items = append(items, SetItem{Key: kv.TextKey(k), Value: kv.Text("v")})
	}
	res, err := c.Cache("").SetMany(t.Context(), items)
	if !errors.Is(err, ErrPartialFailure) {
		t.Fatalf("SetMany with shard 1 down: %v, want partial_failure", err)
	}
	var failed []int
	for _, f := range res.Failed {
		failed = append(failed, f.Index)
	}
	if res.Stored != len(items)-len(away) || len(away) == 0 || !equalInts(failed, away) {
		t.Fatalf("result %+v; want %d stored and %v failed", res, len(items)-len(away), away)
	}
}

// GetMany, DeleteMany and Clear with a shard away answer for the others'
// keys (every call failed as a whole, and DeleteMany deleted the others'
// keys while it said 503) and say which keys have no answer.
func TestBatchesWithAShardAway(t *testing.T) {
	cl := testserver.StartCluster(t, 3, testserver.Options{})
	c, _ := New(cl.URLs[0], Options{Token: cl.Shards[0].Token, Retries: -1})
	cache := c.Cache("")
	var keys []kv.Key
	var away []int
	for i := 0; i < 12; i++ {
		k := keyOwnedBy(t, i%3, 3) + strings.Repeat("x", i)
		if topology.Owner([]byte(k), 3) == 1 {
			away = append(away, i)
		}
		keys = append(keys, kv.TextKey(k))
		if err := cache.Set(t.Context(), kv.TextKey(k), kv.Text("v"+strconv.Itoa(i)), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if len(away) == 0 {
		t.Fatal("no key on shard 1")
	}
	cl.Shards[1].Kill()

	res, err := cache.GetMany(t.Context(), keys)
	if !errors.Is(err, ErrPartialFailure) || len(res) != len(keys) {
		t.Fatalf("GetMany with shard 1 down: %d results, %v; want %d and partial_failure", len(res), err, len(keys))
	}
	var noAnswer []int
	for i, r := range res {
		switch {
		case r.Err != nil:
			noAnswer = append(noAnswer, i)
			if r.Found || !errors.Is(r.Err, ErrShardUnavailable) {
				t.Errorf("key %d: found %v, %v; want shard_unavailable", i, r.Found, r.Err)
			}
		case !r.Found || string(r.Value.Data) != "v"+strconv.Itoa(i):
			t.Errorf("key %d: found %v %q", i, r.Found, r.Value.Data)
		}
	}
	if !equalInts(noAnswer, away) {
		t.Errorf("GetMany: keys without an answer %v; want shard 1's %v", noAnswer, away)
	}

	deleted, err := cache.DeleteMany(t.Context(), keys)
	if !errors.Is(err, ErrPartialFailure) || len(deleted) != len(keys) {
		t.Fatalf("DeleteMany with shard 1 down: %v, %v; want %d flags and partial_failure", deleted, err, len(keys))
	}
	var e *Error
	errors.As(err, &e)
	var body struct{ Failed []struct{ Index int } }
	if err := json.Unmarshal(e.Body, &body); err != nil {
		t.Fatal(err)
	}
	var failed []int
	for _, f := range body.Failed {
		failed = append(failed, f.Index)
	}
	for i, d := range deleted {
		if d == slices.Contains(away, i) {
			t.Errorf("DeleteMany: key %d deleted %v (shard 1's keys %v)", i, d, away)
		}
	}
	if !equalInts(failed, away) {
		t.Errorf("DeleteMany: failed %v; want shard 1's %v", failed, away)
	}

	stored := 0
	for i := 0; stored < 5; i++ {
		if k := "c" + strconv.Itoa(i); topology.Owner([]byte(k), 3) != 1 {
			if err := cache.Set(t.Context(), kv.TextKey(k), kv.Text("v"), kv.SetOptions{}); err != nil {
				t.Fatal(err)
			}
			stored++
		}
	}
	if n, err := cache.Clear(t.Context()); !errors.Is(err, ErrPartialFailure) || n != 5 {
		t.Errorf("Clear with shard 1 down: removed %d, %v; want the 5 items of shards 0 and 2 and partial_failure", n, err)
	}
}

// The zero Key is no key: every call refuses it (it was stored as the
// empty text key).
func TestZeroKeyIsRefused(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	for _, frames := range []bool{false, true} {
		c, _ := New(s.URL, Options{Token: s.Token, Frames: frames})
		cache := c.Cache("")
		if err := cache.Set(t.Context(), kv.Key{}, kv.Text("v"), kv.SetOptions{}); !errors.Is(err, ErrBadKey) {
			t.Errorf("frames %v: Set of the zero Key: %v; want bad_key", frames, err)
		}
		if _, _, err := cache.Get(t.Context(), kv.Key{}); !errors.Is(err, ErrBadKey) {
			t.Errorf("frames %v: Get of the zero Key: %v; want bad_key", frames, err)
		}
	}
	c, _ := New(s.URL, Options{Token: s.Token})
	if _, err := c.Cache("").GetMany(t.Context(), []kv.Key{kv.TextKey("a"), {}}); !errors.Is(err, kv.ErrInvalidKey) {
		t.Errorf("GetMany with the zero Key: %v; want ErrInvalidKey", err)
	}
	if _, err := c.Cache("").SetMany(t.Context(), []SetItem{{Key: kv.Key{}, Value: kv.Text("v")}}); !errors.Is(err, kv.ErrInvalidKey) {
		t.Errorf("SetMany with the zero Key: %v; want ErrInvalidKey", err)
	}
	if _, ok, err := c.Cache("").Get(t.Context(), kv.TextKey("")); err != nil || ok {
		t.Errorf("the empty text key: %v %v; want a miss (nothing stored under it)", ok, err)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A streamed write to an owner the client cannot reach (outside the
// cluster, pod names do not resolve) goes through the base URL, as a
// buffered one does: it was never sent.
func TestStreamedSetGoesThroughTheBaseURL(t *testing.T) {
	cl := testserver.StartCluster(t, 3, testserver.Options{})
	base := strings.TrimPrefix(cl.URLs[0], "http://")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr != base {
			return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}}
		}
		return d.DialContext(ctx, network, addr)
	}
	c, _ := New(cl.URLs[0], Options{Token: cl.Shards[0].Token, HTTPClient: &http.Client{Transport: tr}})
	cache := c.Cache("")
	if err := cache.Set(t.Context(), kv.TextKey(keyOwnedBy(t, 0, 3)), kv.Text("v"), kv.SetOptions{}); err != nil {
		t.Fatal(err) // learns the topology
	}
	key := kv.TextKey(keyOwnedBy(t, 2, 3))
	if err := cache.Set(t.Context(), key, kv.Text(""), kv.SetOptions{Body: bytes.NewReader([]byte("streamed"))}); err != nil {
		t.Fatalf("streamed set of an unreachable owner's key: %v", err)
	}
	if it, ok, err := cache.Get(t.Context(), key); err != nil || !ok || string(it.Value.Data) != "streamed" {
		t.Fatalf("get: %q %v %v", it.Value.Data, ok, err)
	}
}

// A base URL whose path the server has no routes under is an error, not
// a cache where every key is missing.
func TestWrongBaseURLIsNoMiss(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	c, _ := New(srv.URL+"/typo", Options{Token: srv.Token, DirectOnly: true})
	_, ok, err := c.Cache("").Get(t.Context(), kv.TextKey("k"))
	if !errors.Is(err, ErrNoRoute) || errors.Is(err, ErrNotFound) || ok {
		t.Fatalf("get under a wrong base URL: %v %v, want ErrNoRoute", ok, err)
	}
	// A HEAD answer has no body to say so: Contains reported a miss.
	if ok, err := c.Cache("").Contains(t.Context(), kv.TextKey("k")); !errors.Is(err, ErrNoRoute) || errors.Is(err, ErrNotFound) || ok {
		t.Fatalf("contains under a wrong base URL: %v %v, want ErrNoRoute", ok, err)
	}
	good, _ := New(srv.URL, Options{Token: srv.Token, DirectOnly: true})
	if ok, err := good.Cache("").Contains(t.Context(), kv.TextKey("k")); err != nil || ok {
		t.Fatalf("contains of a missing key: %v %v, want false, nil", ok, err)
	}
}

// Incr refuses a delta or default that is not a number (a text "5" was
// sent as 0.0 and turned the stored int into a float).
func TestIncrTakesNumbersOnly(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	c, _ := New(srv.URL, Options{Token: srv.Token})
	cache := c.Cache("")
	if err := cache.Set(t.Context(), kv.TextKey("n"), kv.Int(10), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][2]kv.Value{{kv.Text("5"), kv.Int(0)}, {kv.Value{}, kv.Int(0)}, {kv.Int(1), kv.Text("0")}} {
		if _, err := cache.Incr(t.Context(), kv.TextKey("n"), bad[0], bad[1]); err == nil {
			t.Errorf("incr by %v default %v: no error", bad[0], bad[1])
		}
	}
	if v, err := cache.Incr(t.Context(), kv.TextKey("n"), kv.Int(1), kv.Value{}); err != nil || v.Type != kv.ValueInt {
		t.Fatalf("incr by 1: %v %v, want the int 11", v, err)
	}
	if _, err := cache.SetMany(t.Context(), []SetItem{{Key: kv.TextKey("s"), Opts: kv.SetOptions{Body: strings.NewReader("x")}}}); err == nil {
		t.Fatal("SetMany with a streamed body: no error (the body was dropped)")
	}
}

// Close hands the client's idle connections back: the server sees them
// closed.
func TestCloseClosesIdleConnections(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	open := func() float64 { // read on a connection of its own, closed after
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
		req.Close = true
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "diskcache_http_connections_open "); ok {
				n, _ := strconv.ParseFloat(v, 64)
				return n - 1 // not this one
			}
		}
		t.Fatal("no diskcache_http_connections_open")
		return 0
	}
	for _, frames := range []bool{false, true} {
		c, _ := New(srv.URL, Options{Token: srv.Token, Frames: frames})
		if err := c.Cache("").Set(t.Context(), kv.TextKey("k"), kv.Text("v"), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		if n := open(); n < 1 {
			t.Fatalf("frames %v: %v connections open after a call", frames, n)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for open() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("frames %v: connections still open after Close", frames)
			}
			time.Sleep(10 * time.Millisecond) // a poll's pace
		}
	}
}
