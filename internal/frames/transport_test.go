package frames_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/internal/frames"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

func newTransport() *frames.Transport {
	fb := http.DefaultTransport.(*http.Transport).Clone()
	fb.Proxy = nil
	return frames.New(frames.Options{Fallback: fb})
}

func call(t *testing.T, rt http.RoundTripper, ctx context.Context, method, url, token string, body []byte) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp, got
}

func TestRoundTripsOverFrames(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	tr := newTransport()
	ctx := context.Background()

	resp, _ := call(t, tr, ctx, http.MethodPut, srv.URL+"/v1/keys/small", srv.Token, []byte("hello"))
	if resp.StatusCode/100 != 2 {
		t.Fatalf("PUT: %s", resp.Status)
	}
	resp, got := call(t, tr, ctx, http.MethodGet, srv.URL+"/v1/keys/small", srv.Token, nil)
	if resp.StatusCode != http.StatusOK || string(got) != "hello" || resp.ContentLength != 5 || resp.Header.Get("Content-Length") != "5" {
		t.Fatalf("GET: %s %q length %d %q", resp.Status, got, resp.ContentLength, resp.Header.Get("Content-Length"))
	}
	if s := tr.Stats(); s.Framed != 2 || s.Fallback != 0 || s.Upgrades != 1 {
		t.Fatalf("two requests on one upgraded connection, got %+v", s)
	}
	// A miss answers over frames as over HTTP.
	resp, got = call(t, tr, ctx, http.MethodGet, srv.URL+"/v1/keys/absent", srv.Token, nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(got), "not_found") {
		t.Fatalf("GET absent: %s %s", resp.Status, got)
	}
	// Wrong token: the frames' answer is HTTP's.
	resp, _ = call(t, tr, ctx, http.MethodGet, srv.URL+"/v1/keys/small", "nope", nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET with a wrong token: %s", resp.Status)
	}

	// A value over a frame goes over HTTP; its answer streams in chunks.
	big := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16)
	before := tr.Stats()
	resp, _ = call(t, tr, ctx, http.MethodPut, srv.URL+"/v1/keys/big", srv.Token, big)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("PUT big: %s", resp.Status)
	}
	if s := tr.Stats(); s.Fallback != before.Fallback+1 {
		t.Fatalf("a 3 MiB PUT must go through the fallback: %+v then %+v", before, s)
	}
	resp, got = call(t, tr, ctx, http.MethodGet, srv.URL+"/v1/keys/big", srv.Token, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, big) {
		t.Fatalf("GET big: %s, %d bytes, equal %v", resp.Status, len(got), bytes.Equal(got, big))
	}
	if s := tr.Stats(); s.Framed != before.Framed+1 {
		t.Fatalf("the big GET must go over frames: %+v then %+v", before, s)
	}
	// HEAD is HTTP's (its Content-Length is all it answers).
	before = tr.Stats()
	call(t, tr, ctx, http.MethodHead, srv.URL+"/v1/keys/big", srv.Token, nil)
	if s := tr.Stats(); s.Fallback != before.Fallback+1 {
		t.Fatalf("HEAD must go through the fallback: %+v then %+v", before, s)
	}
	// The connection went back to the pool after each whole answer.
	if s := tr.Stats(); s.Upgrades != 1 {
		t.Fatalf("one connection should have served everything: %+v", s)
	}
}

// A body closed before its end leaves the connection mid-answer: it is
// closed, and the next request upgrades a new one.
func TestUnreadAnswerIsNotReused(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	tr := newTransport()
	ctx := context.Background()
	big := bytes.Repeat([]byte("x"), 1<<20)
	call(t, tr, ctx, http.MethodPut, srv.URL+"/v1/keys/big", srv.Token, big)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/keys/big", nil)
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	before := tr.Stats()
	if _, got := call(t, tr, ctx, http.MethodGet, srv.URL+"/v1/keys/big", srv.Token, nil); !bytes.Equal(got, big) {
		t.Fatalf("GET after a half-read answer: %d bytes", len(got))
	}
	if s := tr.Stats(); s.Upgrades != before.Upgrades+1 || s.Retries != 0 {
		t.Fatalf("a half-read connection must not be reused: %+v then %+v", before, s)
	}
}

// Cancelling the request's context closes the connection in use.
func TestCancelClosesTheConnection(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	tr := newTransport()
	big := bytes.Repeat([]byte("y"), 1<<20)
	call(t, tr, context.Background(), http.MethodPut, srv.URL+"/v1/keys/big", srv.Token, big)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/keys/big", nil)
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("reading on after the context ended should fail")
	}
	resp.Body.Close()
	before := tr.Stats()
	call(t, tr, context.Background(), http.MethodGet, srv.URL+"/v1/keys/big", srv.Token, nil)
	if s := tr.Stats(); s.Upgrades != before.Upgrades+1 {
		t.Fatalf("the cancelled connection must not be reused: %+v then %+v", before, s)
	}
}

// A pooled connection whose server restarted is found closed before
// anything is sent on it: a PUT (never sent twice) still goes through.
func TestServerRestartBehindThePool(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	tr := newTransport()
	ctx := context.Background()
	call(t, tr, ctx, http.MethodPut, srv.URL+"/v1/keys/a", srv.Token, []byte("1"))
	srv.Kill()
	srv.Restart(t)
	resp, _ := call(t, tr, ctx, http.MethodPut, srv.URL+"/v1/keys/a", srv.Token, []byte("2"))
	if resp.StatusCode/100 != 2 {
		t.Fatalf("PUT after the restart: %s", resp.Status)
	}
	resp, got := call(t, tr, ctx, http.MethodGet, srv.URL+"/v1/keys/a", srv.Token, nil)
	if string(got) != "2" {
		t.Fatalf("GET after the restart: %s %q", resp.Status, got)
	}
	if s := tr.Stats(); s.Upgrades != 2 || s.Framed != 3 || s.Retries != 0 {
		t.Fatalf("the stale connection should have been replaced by one new one: %+v", s)
	}
}

// A server without frames (404 on the upgrade) gets HTTP, and is not asked
// again for a while.
func TestRefusedUpgradeFallsBack(t *testing.T) {
	var upgrades atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/frames" {
			upgrades.Add(1)
			http.NotFound(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
	}))
	defer srv.Close()
	tr := newTransport()
	for i := range 3 {
		_, got := call(t, tr, context.Background(), http.MethodPut, srv.URL+"/v1/keys/k", "", []byte(fmt.Sprint(i)))
		if want := fmt.Sprintf("PUT /v1/keys/k %d", i); string(got) != want {
			t.Fatalf("answer %q, want %q", got, want)
		}
	}
	if n := upgrades.Load(); n != 1 {
		t.Fatalf("%d upgrade attempts, want 1 (the refusal is remembered)", n)
	}
	if s := tr.Stats(); s.Fallback != 3 || s.Framed != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestBodyOfUnknownLengthFallsBack(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	tr := newTransport()
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v1/keys/s", io.MultiReader(strings.NewReader("ab"), strings.NewReader("cd")))
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 || tr.Stats().Fallback != 1 {
		t.Fatalf("%s %+v", resp.Status, tr.Stats())
	}
	_, got := call(t, tr, context.Background(), http.MethodGet, srv.URL+"/v1/keys/s", srv.Token, nil)
	if string(got) != "abcd" {
		t.Fatalf("got %q", got)
	}
}

// A pooled connection that takes a frame and dies without answering: a GET
// is sent again on a fresh connection, a PUT is not (it may have been
// served).
func TestOnlyGetsAreSentAgain(t *testing.T) {
	url, got := testserver.DyingPeer(t, 1)
	tr := newTransport()
	ctx := context.Background()
	call(t, tr, ctx, http.MethodGet, url+"/v1/keys/a", "", nil)
	req, _ := http.NewRequest(http.MethodPut, url+"/v1/keys/a", strings.NewReader("v"))
	if resp, err := tr.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Fatal("a PUT whose connection died after the frame should fail")
	} else if !errors.Is(err, frames.ErrUnanswered) {
		t.Fatalf("a PUT whose connection died after the frame: %v, want ErrUnanswered (it may have been served)", err)
	}
	if n := got.Load(); n != 2 {
		t.Fatalf("the server got %d frames, want 2: the PUT must not be sent twice", n)
	}
	call(t, tr, ctx, http.MethodGet, url+"/v1/keys/a", "", nil) // fresh connection, answered
	resp, body := call(t, tr, ctx, http.MethodGet, url+"/v1/keys/a", "", nil)
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("GET: %s %q", resp.Status, body)
	}
	if s := tr.Stats(); s.Retries != 1 || got.Load() != 5 {
		t.Fatalf("the GET on the dying connection should have been sent again once: %+v, %d frames", s, got.Load())
	}
}

// Spellings of one bearer token share a pool: one upgraded connection
// serves them all (a client varying the spelling through a forwarding
// shard made it open a connection to the owner per spelling).
func TestSpellingsOfATokenShareAPool(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	tr := newTransport()
	ctx := context.Background()
	for _, auth := range []string{"Bearer ", "bearer ", "BEARER ", "Bearer   ", "bEaReR  "} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/keys/spelled", nil)
		req.Header.Set("Authorization", auth+srv.Token)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%q: %s, want 404 (a miss)", auth, resp.Status)
		}
	}
	if s := tr.Stats(); s.Upgrades != 1 || s.Framed != 5 {
		t.Fatalf("%+v, want 5 requests framed over 1 upgraded connection", s)
	}
}

// A request that never reached a server is ErrNotSent, not ErrUnanswered:
// nothing can have been served.
func TestUnsentIsNotUnanswered(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/keys/a/incr", nil)
	resp, err := newTransport().RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatal("a request to a closed port should fail")
	}
	if errors.Is(err, frames.ErrUnanswered) || !errors.Is(err, frames.ErrNotSent) {
		t.Fatalf("a refused connection: %v, must be ErrNotSent and not ErrUnanswered", err)
	}
}

// A pooled connection idle past IdleTimeout is not reused (the server
// closes its side after 2 minutes).
func TestIdleTimeout(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	fb := http.DefaultTransport.(*http.Transport).Clone()
	tr := frames.New(frames.Options{Fallback: fb, IdleTimeout: time.Nanosecond})
	for range 3 {
		call(t, tr, context.Background(), http.MethodGet, srv.URL+"/v1/keys/a", srv.Token, nil)
	}
	if s := tr.Stats(); s.Upgrades != 3 || s.Framed != 3 {
		t.Fatalf("every request should have needed a new connection: %+v", s)
	}
}

// TestMaxConnsPerHost: with the cap reached a request waits for a
// connection (here until its context ends) instead of dialing another; an
// idle connection under another token (a rotated one) gives its slot up.
func TestMaxConnsPerHost(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	fb := http.DefaultTransport.(*http.Transport).Clone()
	tr := frames.New(frames.Options{Fallback: fb, MaxConnsPerHost: 1})
	ctx := context.Background()
	// Larger than an answer's first chunk: its body streams from the
	// connection.
	call(t, tr, ctx, http.MethodPut, srv.URL+"/v1/keys/k", srv.Token, bytes.Repeat([]byte("v"), 512<<10))

	get := func(ctx context.Context, token string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/keys/k", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		return tr.RoundTrip(req)
	}
	held, err := get(ctx, srv.Token) // its connection is busy until the body is closed
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if resp, err := get(short, srv.Token); err == nil || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, frames.ErrNotSent) {
		if resp != nil {
			resp.Body.Close()
		}
		t.Fatalf("a second request with the one connection busy: %v; want it to wait (not sent) until its deadline", err)
	}
	io.Copy(io.Discard, held.Body)
	held.Body.Close()
	if s := tr.Stats(); s.Upgrades != 1 {
		t.Fatalf("%+v: want one connection", s)
	}

	// The idle connection is the old token's: the new token's request
	// takes its slot (the server answers 401 to an unknown token).
	guard, cancelGuard := context.WithTimeout(ctx, 10*time.Second) // it would wait forever
	defer cancelGuard()
	resp, err := get(guard, "rotated")
	if err != nil {
		t.Fatalf("a request under a new token with the slot idle under the old one: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("%s, want 401", resp.Status)
	}
}

// A request its sender has given up on (kv.WithAbandoned) when its frame is
// about to leave is not sent: the server serves nothing, the caller gets
// ErrNotSent and kv.ErrAbandoned, and the connection stays pooled.
func TestAbandonedRequestIsNotSent(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	tr := newTransport()
	ctx := context.Background()
	call(t, tr, ctx, http.MethodPut, srv.URL+"/v1/keys/k", srv.Token, []byte("before"))

	gone := kv.WithAbandoned(ctx, func() bool { return true })
	req, _ := http.NewRequestWithContext(gone, http.MethodPut, srv.URL+"/v1/keys/k", strings.NewReader("after"))
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	before := tr.Stats()
	resp, err := tr.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatal("a request given up on was sent")
	}
	if !errors.Is(err, frames.ErrNotSent) || !errors.Is(err, kv.ErrAbandoned) {
		t.Fatalf("a request given up on: %v, want ErrNotSent and kv.ErrAbandoned", err)
	}
	if _, got := call(t, tr, ctx, http.MethodGet, srv.URL+"/v1/keys/k", srv.Token, nil); string(got) != "before" {
		t.Fatalf("the value is %q: the request given up on reached the server", got)
	}
	if s := tr.Stats(); s.Upgrades != before.Upgrades || s.Framed != before.Framed+1 {
		t.Fatalf("the connection should have stayed pooled and carried only the GET: %+v then %+v", before, s)
	}
}
