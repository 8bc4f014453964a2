package cacheserver_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// peerRequests reads diskcache_peer_requests_total{transport} off a
// shard's /metrics.
func peerRequests(t *testing.T, s *testserver.Server, transport string) int {
	t.Helper()
	return peerRequestsVia(t, http.DefaultClient, s, transport)
}

func peerRequestsVia(t *testing.T, hc *http.Client, s *testserver.Server, transport string) int {
	t.Helper()
	resp, err := hc.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	prefix := `diskcache_peer_requests_total{transport="` + transport + `"} `
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s%s: %v", prefix, v, err)
			}
			return int(n)
		}
	}
	t.Fatalf("/metrics has no %s", prefix)
	return 0
}

// TestForwardingUsesFrames: a shard forwards to its peer as frames; what
// frames do not carry (a body over a frame, HEAD) goes over HTTP; large and
// file-backed answers stream back whole through both hops.
func TestForwardingUsesFrames(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	via, tok := c.Shards[0], c.Shards[0].Token
	key := ownedBy("k", 1, 2)
	url := via.URL + "/v1/keys/" + key

	if st, _, b := do(t, "PUT", url, tok, []byte("small"), nil); st != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", st, b)
	}
	st, h, b := do(t, "GET", url, tok, nil, nil)
	if st != http.StatusOK || string(b) != "small" || h.Get("Content-Length") != "5" {
		t.Fatalf("GET: %d %q Content-Length %q", st, b, h.Get("Content-Length"))
	}
	if st, _, b := do(t, "GET", via.URL+"/v1/keys/"+ownedBy("absent", 1, 2), tok, nil, nil); st != http.StatusNotFound || !strings.Contains(string(b), "not_found") {
		t.Fatalf("GET of a missing key: %d %s", st, b)
	}
	if got := peerRequests(t, via, "frames"); got != 3 {
		t.Fatalf("%d forwarded requests went as frames, want 3", got)
	}

	// A value over a frame (1 MiB) goes over HTTP, its answer as frames in
	// chunks; 200 KiB is file-backed (over disk_min_file_size) and fits a
	// frame both ways.
	for _, size := range []int{200 << 10, 3 << 20} {
		value := bytes.Repeat([]byte("0123456789abcdef"), size/16)
		httpBefore, framesBefore := peerRequests(t, via, "http"), peerRequests(t, via, "frames")
		if st, _, b := do(t, "PUT", url, tok, value, nil); st != http.StatusNoContent {
			t.Fatalf("PUT %d bytes: %d %s", size, st, b)
		}
		st, hdr, b := do(t, "GET", url, tok, nil, nil)
		if st != http.StatusOK || !bytes.Equal(b, value) {
			t.Fatalf("GET %d bytes: %d, %d bytes back, equal %v", size, st, len(b), bytes.Equal(b, value))
		}
		// The owner names the length of a value it streams from its file;
		// forwarded as frames, the answer still does.
		if cl := hdr.Get("Content-Length"); cl != strconv.Itoa(size) {
			t.Fatalf("GET %d bytes through another shard: Content-Length %q", size, cl)
		}
		wantHTTP := 0
		if size > 1<<20 {
			wantHTTP = 1
		}
		if h, f := peerRequests(t, via, "http")-httpBefore, peerRequests(t, via, "frames")-framesBefore; h != wantHTTP || f != 2-wantHTTP {
			t.Fatalf("%d bytes: %d over HTTP and %d as frames, want %d and %d", size, h, f, wantHTTP, 2-wantHTTP)
		}
	}
	httpBefore := peerRequests(t, via, "http")
	if st, _, _ = do(t, "HEAD", url, tok, nil, nil); st != http.StatusOK || peerRequests(t, via, "http") != httpBefore+1 {
		t.Fatalf("HEAD: %d, %d then %d over HTTP", st, httpBefore, peerRequests(t, via, "http"))
	}
}

// TestForwardingAfterPeerRestart: the forwarding shard's pooled frames
// connections to a peer die with it; after its restart a write forwards on a
// fresh connection (not a 503, and never sent twice).
func TestForwardingAfterPeerRestart(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	via, tok := c.Shards[0], c.Shards[0].Token
	url := via.URL + "/v1/keys/" + ownedBy("k", 1, 2)
	if st, _, b := do(t, "PUT", url, tok, []byte("before"), nil); st != http.StatusNoContent {
		t.Fatalf("PUT: %d %s", st, b)
	}
	c.Shards[1].Kill()
	c.Shards[1].Restart(t)
	// The pooled connection died with the peer: found before the incr is
	// sent (not a 504 "may have been applied" for an incr never sent): the
	// restarted owner answers it, 409 not_numeric for the value "before".
	if st, _, b := do(t, "POST", url+"/incr", tok, nil, nil); st != http.StatusConflict {
		t.Fatalf("incr after the peer restarted: %d %s", st, b)
	}
	if st, _, b := do(t, "PUT", url, tok, []byte("after"), nil); st != http.StatusNoContent {
		t.Fatalf("PUT after the peer restarted: %d %s", st, b)
	}
	if st, _, b := do(t, "GET", url, tok, nil, nil); st != http.StatusOK || string(b) != "after" {
		t.Fatalf("GET after the peer restarted: %d %q", st, b)
	}
	if got := peerRequests(t, via, "frames"); got != 4 {
		t.Fatalf("%d forwarded requests went as frames, want 4", got)
	}
}

// TestOwnerGoneMidRequest: an owner that reads a forwarded request and goes
// away before answering (killed, or restarted, while it served) may have
// applied it. A request that must not be repeated (an incr, a deque's push)
// is then 504 shard_timeout, "may have been applied", as for an owner that
// stalls; it was 503 shard_unavailable, which tells a client nothing was
// done. A read or a set, safe to repeat, stays 503. Over frames and over
// plain HTTP (a body over a frame), whose transport cannot tell whether
// the request left.
func TestOwnerGoneMidRequest(t *testing.T) {
	owner, took := testserver.DyingPeer(t, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self := ln.Addr().String()
	ln.Close()
	via := testserver.Start(t, testserver.Options{Listen: self, Args: []string{"--shard-index", "0", "--peers", "http://" + self + "," + owner}})
	key := ownedBy("gone", 1, 2)
	var deque string
	for i := 0; deque == ""; i++ {
		if n := fmt.Sprint("q", i); topology.Owner([]byte(n), 2) == 1 {
			deque = n
		}
	}
	big := strings.Repeat("v", 2<<20) // over a frame: sent over plain HTTP
	for _, c := range []struct {
		method, path string
		status       int
		code         string
		body         string
	}{
		{"POST", "/v1/keys/" + key + "/incr", http.StatusGatewayTimeout, wire.CodeShardTimeout, ""},
		{"POST", "/v1/deques/" + deque + "/push", http.StatusGatewayTimeout, wire.CodeShardTimeout, ""},
		{"DELETE", "/v1/deques/" + deque + "/items/0", http.StatusGatewayTimeout, wire.CodeShardTimeout, ""},
		{"DELETE", "/v1/averages/" + key, http.StatusGatewayTimeout, wire.CodeShardTimeout, ""},
		{"POST", "/v1/locks/" + key + "/acquire?owner=a", http.StatusGatewayTimeout, wire.CodeShardTimeout, ""},
		{"PUT", "/v1/keys/" + key, http.StatusServiceUnavailable, wire.CodeShardUnavailable, ""},
		{"DELETE", "/v1/keys/" + key, http.StatusServiceUnavailable, wire.CodeShardUnavailable, ""},
		{"DELETE", "/v1/deques/" + deque, http.StatusServiceUnavailable, wire.CodeShardUnavailable, ""},
		{"GET", "/v1/keys/" + key, http.StatusServiceUnavailable, wire.CodeShardUnavailable, ""},
		{"POST", "/v1/deques/" + deque + "/push", http.StatusGatewayTimeout, wire.CodeShardTimeout, big},
		{"POST", "/v1/keys/" + key + "/add", http.StatusGatewayTimeout, wire.CodeShardTimeout, big},
		{"PUT", "/v1/keys/" + key, http.StatusServiceUnavailable, wire.CodeShardUnavailable, big},
	} {
		if c.body == "" {
			c.body = "1"
		}
		before := took.Load()
		st, _, b := do(t, c.method, via.URL+c.path, via.Token, []byte(c.body), nil)
		var e struct {
			Error string `json:"error"`
			Shard *int   `json:"shard"`
		}
		if st != c.status || json.Unmarshal(b, &e) != nil || e.Error != c.code || e.Shard == nil || *e.Shard != 1 {
			t.Errorf("%s %s (%d bytes) with the owner gone mid-request: %d %s, want %d %s naming shard 1", c.method, c.path, len(c.body), st, b, c.status, c.code)
		}
		if took.Load() == before {
			t.Errorf("%s %s never reached the owner", c.method, c.path)
		}
		if strings.Contains(string(b), "/v1/") {
			t.Errorf("%s %s: the answer shows the request's URL, and so its key: %s", c.method, c.path, b)
		}
	}
}

// TestOwnerUnreachableWhileConnecting: an owner that cannot be reached (a
// restarted pod's old address, which the peer Service's DNS gives until the
// pod is deleted, so the connection hangs) fails its health check while the
// forward is still connecting. The request never left the shard, so it is
// 503 shard_unavailable, safe to send again, whatever its method: it was
// 504 shard_timeout, "may have been applied", which a client does not send
// again, and which during every roll met a few of the writes.
func TestOwnerUnreachableWhileConnecting(t *testing.T) {
	for _, c := range []struct{ method, path string }{
		{"PUT", "/v1/keys/"},
		{"DELETE", "/v1/keys/"},
		{"POST", "/incr"},
		{"GET", "/v1/keys/"},
	} {
		t.Run(c.method+c.path, func(t *testing.T) {
			// Never accepts: connections complete in the kernel, and the
			// frames upgrade and the health check wait for answers that
			// never come.
			silent, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { silent.Close() })
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			self := ln.Addr().String()
			ln.Close()
			// A fresh shard per method: its first forward to the owner waits
			// for the health check (later ones are refused at once).
			via := testserver.Start(t, testserver.Options{Listen: self,
				Args: []string{"--shard-index", "0", "--peers", "http://" + self + ",http://" + silent.Addr().String()}})
			key := ownedBy("unreachable", 1, 2)
			path := c.path + key
			if c.path == "/incr" {
				path = "/v1/keys/" + key + "/incr"
			}
			var body []byte
			if c.method == "PUT" {
				body = []byte("v")
			}
			start := time.Now()
			st, _, b := do(t, c.method, via.URL+path, via.Token, body, nil)
			took := time.Since(start)
			var e struct {
				Error string `json:"error"`
				Shard *int   `json:"shard"`
			}
			if st != http.StatusServiceUnavailable || json.Unmarshal(b, &e) != nil || e.Error != wire.CodeShardUnavailable || e.Shard == nil || *e.Shard != 1 {
				t.Errorf("%s %s with the owner unreachable: %d %s (after %s), want 503 shard_unavailable naming shard 1",
					c.method, path, st, b, took.Round(time.Millisecond))
			}
			if took < time.Second {
				t.Errorf("%s %s answered after %s: it did not wait for the health check, which this test is about", c.method, path, took)
			}
			if strings.Contains(string(b), "/v1/") {
				t.Errorf("%s %s: the answer shows the request's URL, and so its key: %s", c.method, path, b)
			}
		})
	}
}

// TestForwardCutShortClosesTheClientConnection: the owner is killed while
// a client's value streams to it through a forwarding shard, and the
// client sends the rest of it and then another request on the same
// connection. The forward's transport was left reading the client's
// connection after the shard answered, and the rest of the value was read
// as a request (a request hidden in a value then ran with the next
// request's token). Now the shard takes the body back and closes the
// connection. The pauses are the client's (a slow upload): on a machine
// too slow for them the test passes without finding the flaw, never the
// other way round.
func TestForwardCutShortClosesTheClientConnection(t *testing.T) {
	const size = 2 << 20 // over a frame: the forward streams it over HTTP
	c := testserver.StartCluster(t, 2, testserver.Options{})
	via := c.Shards[0]
	key := ownedBy("cut", 1, 2)
	hidden := "\r\n\r\nGET /v1/keys/" + key + "x HTTP/1.1\r\nHost: x\r\nX-Pad: "
	first := strings.Repeat("v", size/2)
	rest := strings.Repeat("v", size-len(first)-len(hidden)) + hidden
	conn, err := net.Dial("tcp", strings.TrimPrefix(via.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(conn, "PUT /v1/keys/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", key, via.Token, size, first)
	time.Sleep(300 * time.Millisecond)
	c.Shards[1].Kill()
	time.Sleep(300 * time.Millisecond)
	fmt.Fprintf(conn, "%sGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", rest)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("the cut forward: %s, want 503", resp.Status)
	}
	if next, err := http.ReadResponse(br, nil); err == nil {
		b, _ := io.ReadAll(next.Body)
		if next.StatusCode != http.StatusOK || !strings.Contains(string(b), `"ok"`) {
			t.Fatalf("the answer after the cut forward: %s %s; the rest of the value was read as a request", next.Status, b)
		}
	}
}

// TestForwardToAnOwnerFrozenMidBody: the owner stops answering while a
// client's value streams to it through a forwarding shard, far more of it
// left than the sockets between them hold. The owner refuses a body cut
// short, so nothing was applied: the answer is 503 shard_unavailable,
// which a client may repeat, not 504 shard_timeout ("may have been
// applied"), which it was when the forward's health check gave the owner
// up before its connection failed.
func TestForwardToAnOwnerFrozenMidBody(t *testing.T) {
	const size = 256 << 20
	c := testserver.StartCluster(t, 2, testserver.Options{})
	via := c.Shards[0]
	key := ownedBy("frozen", 1, 2)
	conn, err := net.Dial("tcp", strings.TrimPrefix(via.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(conn, "PUT /v1/keys/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", key, via.Token, size)
	chunk := []byte(strings.Repeat("v", 1<<20))
	if _, err := conn.Write(chunk); err != nil {
		t.Fatal(err)
	}
	c.Shards[1].Freeze(t)
	// The client goes on sending, until the forwarding shard answers and
	// closes the connection.
	go func() {
		for sent := len(chunk); sent < size; sent += len(chunk) {
			if _, err := conn.Write(chunk); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.Shards[1].Thaw(t)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), `"error":"shard_unavailable"`) {
		t.Errorf("a set whose owner froze with most of its body unsent: %s %s, want 503 shard_unavailable", resp.Status, b)
	}
	if st, _, _ := do(t, http.MethodGet, c.Shards[1].URL+"/v1/keys/"+key, c.Shards[1].Token, nil, nil); st != http.StatusNotFound {
		t.Errorf("the owner, thawed, has the key: %d, want 404", st)
	}
}
