package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/frames"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

func newClient(t *testing.T, url string, o Options) *Client {
	t.Helper()
	c, err := New(url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestMaxConnsKeepsUnderTheServersCap: many goroutines on one client with
// MaxConns at the server's --max-connections wait for a connection instead
// of being refused, so no call fails (an Incr is never retried on an
// unanswered connection, so it would).
func TestMaxConnsKeepsUnderTheServersCap(t *testing.T) {
	const limit = 4
	for _, fr := range []bool{false, true} {
		// A server each: one client's connections, closed, are released
		// by the server some time after, and the next client's would be
		// refused meanwhile.
		srv := testserver.Start(t, testserver.Options{Args: []string{"--max-connections", fmt.Sprint(limit)}})
		c := newClient(t, srv.URL, Options{Token: srv.Token, Frames: fr, MaxConns: limit})
		cc := c.Cache("")
		ctr := kv.TextKey(fmt.Sprint("ctr-", fr))
		var wg sync.WaitGroup
		var incrs atomic.Int64
		errs := make(chan error, 24*20)
		for g := range 24 {
			wg.Go(func() {
				for i := range 20 {
					var err error
					if i%2 == 0 {
						err = cc.Set(t.Context(), kv.TextKey(fmt.Sprint(g, "-", i)), kv.Text(strings.Repeat("x", 50000)), kv.SetOptions{})
					} else if _, err = cc.Incr(t.Context(), ctr, kv.Int(1), kv.Int(0)); err == nil {
						incrs.Add(1)
					}
					if err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("frames=%v: %v", fr, err)
		}
		it, ok, err := cc.Get(t.Context(), ctr)
		if err != nil || !ok || !it.Value.Equal(kv.Int(incrs.Load())) {
			t.Errorf("frames=%v: counter %v (%v %v) after %d incrs", fr, it.Value, ok, err, incrs.Load())
		}
		c.Close()
	}
}

// TestRetryAfterIsHonoured: a 503's Retry-After sets the least delay before
// the retry, and a retry that would pass the context's deadline is not
// waited for: the error says both.
func TestRetryAfterIsHonoured(t *testing.T) {
	var mu sync.Mutex
	var calls []time.Time
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, time.Now())
		n := len(calls)
		mu.Unlock()
		if n%2 == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":"unavailable","message":"shutting down"}`))
			return
		}
		w.Header().Set("Diskcache-Value-Type", "int")
		_, _ = w.Write([]byte("5"))
	}))
	defer ts.Close()
	c := newClient(t, ts.URL, Options{DirectOnly: true, Backoff: time.Nanosecond})
	if _, ok, err := c.Cache("").Get(t.Context(), kv.TextKey("k")); err != nil || !ok {
		t.Fatalf("Get: %v %v", ok, err)
	}
	mu.Lock()
	if len(calls) != 2 || calls[1].Sub(calls[0]) < time.Second {
		t.Fatalf("calls at %v; want a retry at least the Retry-After (1s) later", calls)
	}
	calls = nil
	mu.Unlock()

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, _, err := c.Cache("").Get(ctx, kv.TextKey("k"))
	var e *Error
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &e) || e.Code != wire.CodeUnavailable || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get with a deadline before the Retry-After: %v; want context.DeadlineExceeded and the 503", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 1 {
		t.Fatalf("%d calls; want one, no retry that the deadline would cut", len(calls))
	}
}

// TestTransportErrorsAreClassified: a call that did not reach a server is
// ErrUnavailable, one whose connection died after sending is ErrUnanswered
// (it may have been applied), over HTTP and frames, routed or not; a shard
// whose own server is the base URL is named when both are down.
func TestTransportErrorsAreClassified(t *testing.T) {
	for _, fr := range []bool{false, true} {
		for _, direct := range []bool{false, true} {
			url, took := testserver.DyingPeer(t, 0)
			c := newClient(t, url, Options{Frames: fr, DirectOnly: direct, Backoff: time.Millisecond})
			_, err := c.Cache("").Incr(t.Context(), kv.TextKey("n"), kv.Int(1), kv.Int(0))
			// (Routed, the client asked the peer for its topology first.)
			if !errors.Is(err, ErrUnanswered) || errors.Is(err, ErrUnavailable) || direct && took.Load() != 1 {
				t.Errorf("frames=%v direct=%v: incr on a server that died after taking it (%d times): %v; want ErrUnanswered", fr, direct, took.Load(), err)
			}

			srv := testserver.Start(t, testserver.Options{})
			c = newClient(t, srv.URL, Options{Token: srv.Token, Frames: fr, DirectOnly: direct, Backoff: time.Millisecond})
			srv.Kill()
			_, err = c.Cache("").Incr(t.Context(), kv.TextKey("n"), kv.Int(1), kv.Int(0))
			if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnanswered) {
				t.Errorf("frames=%v direct=%v: incr on a killed server: %v; want ErrUnavailable", fr, direct, err)
			}
		}
	}

	cl := testserver.StartCluster(t, 3, testserver.Options{})
	c := newClient(t, cl.URLs[0], Options{Token: cl.Shards[0].Token, Backoff: time.Millisecond})
	own := kv.TextKey(keyOwnedBy(t, 0, 3))
	if err := c.Cache("").Set(t.Context(), own, kv.Text("v"), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	cl.Shards[0].Kill()
	_, _, err := c.Cache("").Get(t.Context(), own)
	if !errors.Is(err, ErrShardUnavailable) || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "shard 0") {
		t.Errorf("the base shard's own key with the base shard down: %v; want ErrShardUnavailable naming shard 0", err)
	}
}

// TestFrozenServerWithoutDeadline: a call without a deadline to a frozen
// standalone server (the base URL) ends: the server answers neither the
// call nor /healthz. Nothing but that check bounds it.
func TestFrozenServerWithoutDeadline(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	var cs []*Client
	for _, fr := range []bool{false, true} {
		c := newClient(t, srv.URL, Options{Token: srv.Token, Frames: fr})
		if err := c.Cache("").Set(t.Context(), kv.TextKey("k"), kv.Text("v"), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	srv.Freeze(t)
	defer srv.Thaw(t)
	for i, c := range cs {
		if _, _, err := c.Cache("").Get(context.Background(), kv.TextKey("k")); !errors.Is(err, ErrUnanswered) {
			t.Errorf("frames=%v: Get on a frozen server: %v; want ErrUnanswered", i == 1, err)
		}
		if _, err := c.Cache("").Incr(context.Background(), kv.TextKey("n"), kv.Int(1), kv.Int(0)); !errors.Is(err, ErrUnanswered) {
			t.Errorf("frames=%v: Incr on a frozen server: %v; want ErrUnanswered", i == 1, err)
		}
	}
}

// A server that freezes in the middle of a large value's body ends the
// read with ErrUnanswered: the stall watch ended with the answer's head,
// and a read without a deadline waited forever. A stream the caller does
// not read meanwhile is not given up, whatever the server's health.
func TestFrozenServerInTheMiddleOfABody(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	c := newClient(t, srv.URL, Options{Token: srv.Token, DirectOnly: true})
	// Far more than the loopback socket buffers hold.
	big := bytes.Repeat([]byte("0123456789abcdef"), 4<<20)
	if err := c.Cache("").Set(t.Context(), kv.TextKey("big"), kv.Bytes(big), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second) // a hang shows as the deadline
	defer cancel()

	idle, ok, err := c.Cache("").Open(ctx, kv.TextKey("big"))
	if err != nil || !ok {
		t.Fatalf("open: %v %v", ok, err)
	}
	defer idle.Close()
	srv.Freeze(t)
	// Not synchronisation: the subject, a stream left unread across
	// several of the watch's health checks, all failed.
	time.Sleep(3 * stallCheckAfter)
	srv.Thaw(t)
	if got, err := io.ReadAll(idle); err != nil || !bytes.Equal(got, big) {
		t.Errorf("a stream left unread while the server was frozen: %d bytes, %v; want the whole value", len(got), err)
	}

	s, ok, err := c.Cache("").Open(ctx, kv.TextKey("big"))
	if err != nil || !ok {
		t.Fatalf("open: %v %v", ok, err)
	}
	defer s.Close()
	if _, err := io.ReadFull(s, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	srv.Freeze(t)
	_, err = io.Copy(io.Discard, s)
	srv.Thaw(t)
	if !errors.Is(err, ErrUnanswered) {
		t.Errorf("reading a body from a server frozen in its middle: %v, want ErrUnanswered", err)
	}
}

// TestTLSConfig: Options.TLSConfig serves HTTP and frames with a private
// CA, Frames works with a caller's HTTPClient, and conflicting or wrong
// options are refused by New.
func TestTLSConfig(t *testing.T) {
	cl := testserver.StartCluster(t, 2, testserver.Options{TLS: true})
	tlsConfig := &tls.Config{RootCAs: cl.CertPool}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	for name, o := range map[string]Options{
		"TLSConfig":            {TLSConfig: tlsConfig},
		"TLSConfig+Frames":     {TLSConfig: tlsConfig, Frames: true},
		"HTTPClient+Frames":    {HTTPClient: hc, Frames: true},
		"TLSConfig+DirectOnly": {TLSConfig: tlsConfig, DirectOnly: true},
	} {
		o.Token = cl.Shards[0].Token
		c := newClient(t, cl.URLs[0], o)
		for i := range 10 {
			k := kv.TextKey(fmt.Sprint("k", i))
			if err := c.Cache("").Set(t.Context(), k, kv.Text("v"), kv.SetOptions{}); err != nil {
				t.Fatalf("%s: set: %v", name, err)
			}
			if _, ok, err := c.Cache("").Get(t.Context(), k); err != nil || !ok {
				t.Fatalf("%s: get: %v %v", name, ok, err)
			}
		}
		if tr, ok := c.http.Transport.(*frames.Transport); o.Frames && (!ok || tr.Stats().Upgrades == 0) {
			t.Errorf("%s: the calls did not go as frames (%T)", name, c.http.Transport)
		}
		if o.HTTPClient == nil {
			// HTTP/1.1, though the server offers HTTP/2: a call given up
			// on closes its connection, which the server sees before it
			// applies the write (a reset stream it may see too late).
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, cl.URLs[0]+"/healthz", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.http.Do(req)
			if err != nil {
				t.Fatalf("%s: GET /healthz: %v", name, err)
			}
			resp.Body.Close()
			if resp.ProtoMajor != 1 {
				t.Errorf("%s: the client spoke %s to the server, want HTTP/1.1", name, resp.Proto)
			}
		}
	}
	// Without the CA: the certificate is not trusted, so nothing was sent.
	c := newClient(t, cl.URLs[0], Options{Token: cl.Shards[0].Token, Frames: true, Retries: -1})
	if err := c.Cache("").Set(t.Context(), kv.TextKey("k"), kv.Text("v"), kv.SetOptions{}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("TLS with an unknown CA: %v; want ErrUnavailable", err)
	}

	for _, bad := range []struct {
		url  string
		opts Options
	}{
		{"ftp://host", Options{}},
		{"host:8080", Options{}},
		{cl.URLs[0], Options{HTTPClient: hc, TLSConfig: tlsConfig}},
		{cl.URLs[0], Options{HTTPClient: hc, MaxConns: 4}},
	} {
		if _, err := New(bad.url, bad.opts); err == nil {
			t.Errorf("New(%q, %+v) accepted", bad.url, bad.opts)
		}
	}
}
