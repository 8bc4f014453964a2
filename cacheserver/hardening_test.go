package cacheserver_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// authStatus sends GET path with the given Authorization header.
func authStatus(t *testing.T, url, authorization string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	srv, _ := startServer(t)
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"Bearer " + srv.Token, http.StatusNotFound},
		{"bearer " + srv.Token, http.StatusNotFound},
		{"BEARER " + srv.Token, http.StatusNotFound},
		{"bEaReR  " + srv.Token, http.StatusNotFound},
		{"Basic " + srv.Token, http.StatusUnauthorized},
		{"Bearer", http.StatusUnauthorized},
		{"Bearer wrong", http.StatusUnauthorized},
		{srv.Token, http.StatusUnauthorized},
	} {
		if got := authStatus(t, srv.URL+"/v1/keys/nothing", tc.auth); got != tc.want {
			t.Errorf("Authorization %q: %d, want %d", tc.auth, got, tc.want)
		}
	}
}

// rawExchange writes raw bytes on a new connection to srv, half-closes it
// when closeWrite is set (a body cut short), and reads one response.
func rawExchange(t *testing.T, srv *testserver.Server, raw string, closeWrite bool) (*http.Response, wire.Error) {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		_ = conn.(*net.TCPConn).CloseWrite()
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response to %q: %v", raw[:min(len(raw), 80)], err)
	}
	defer resp.Body.Close()
	var e wire.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp, e
}

// errorLogLines returns the server's log lines at level ERROR.
func errorLogLines(srv *testserver.Server) []string {
	var out []string
	for _, line := range strings.Split(srv.Logs(), "\n") {
		var rec struct{ Level string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == "ERROR" {
			out = append(out, line)
		}
	}
	return out
}

// TestBrokenBodiesAreClientErrors sends bodies with malformed chunks and
// bodies cut short: each is a 400, nothing is stored, nothing is logged at
// ERROR and no 5xx is counted.
func TestBrokenBodiesAreClientErrors(t *testing.T) {
	srv, c := startServer(t)
	auth := "Authorization: Bearer " + srv.Token + "\r\n"
	big := strings.Repeat("x", 40<<10) // above disk_min_file_size: streamed to a file
	for _, tc := range []struct {
		name, raw  string
		closeWrite bool
	}{
		{"malformed chunk size", "PUT /v1/keys/a HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", false},
		{"malformed chunk after data", "PUT /v1/keys/b HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nq!\r\n", false},
		{"small body cut short", "PUT /v1/keys/c HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 100\r\n\r\nonly ten b", true},
		{"file body cut short", "PUT /v1/keys/d HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 100000\r\n\r\n" + big, true},
		{"chunked body cut short", "PUT /v1/keys/e HTTP/1.1\r\nHost: x\r\n" + auth + "Transfer-Encoding: chunked\r\n\r\n5\r\nhel", true},
		{"deque push cut short", "POST /v1/deques/q/push HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Length: 100000\r\n\r\n" + big, true},
		{"batch set cut short", "POST /v1/batch/set HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: " + wire.RecordsContentType + "\r\nContent-Length: 1000\r\n\r\n{\"key\":\"f\",\"len\":5}\nab", true},
	} {
		resp, e := rawExchange(t, srv, tc.raw, tc.closeWrite)
		if resp.StatusCode != http.StatusBadRequest || e.Code != wire.CodeBadRequest {
			t.Errorf("%s: %d %+v, want 400 %s", tc.name, resp.StatusCode, e, wire.CodeBadRequest)
		}
	}
	info, err := c.Cache("").Info(t.Context())
	if err != nil || info.Count != 0 {
		t.Errorf("after broken bodies: count %d, %v; want 0", info.Count, err)
	}
	if lines := errorLogLines(srv); len(lines) > 0 {
		t.Errorf("client mistakes logged at ERROR:\n%s", strings.Join(lines, "\n"))
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(metrics), "\n") {
		if strings.HasPrefix(line, "diskcache_http_requests_total") && strings.Contains(line, `code="5`) {
			t.Errorf("server error counted: %s", line)
		}
	}
}

// TestTagSizeLimit stores a tag at the limit and refuses one beyond it,
// on single-key and batch writes, storing nothing of the refused ones.
func TestTagSizeLimit(t *testing.T) {
	srv, c := startServer(t)
	put := func(path string) (int, wire.Error) {
		status, body, _ := send(t, srv, http.MethodPut, path, "", "v")
		var e wire.Error
		_ = json.Unmarshal(body, &e)
		return status, e
	}
	atLimit := strings.Repeat("t", wire.MaxTagBytes)
	if status, e := put("/v1/keys/ok?tag=" + atLimit); status != http.StatusNoContent {
		t.Fatalf("tag of %d bytes: %d %+v", len(atLimit), status, e)
	}
	it, ok, err := c.Cache("").Get(t.Context(), kv.TextKey("ok"))
	if err != nil || !ok || it.Tag.String() != kv.TextKey(atLimit).String() {
		t.Fatalf("item with a tag at the limit: %v %v %v", it.Tag, ok, err)
	}
	for _, tc := range []struct{ name, path string }{
		{"one byte over", "/v1/keys/k1?tag=" + atLimit + "x"},
		{"900 KB", "/v1/keys/k2?tag=" + strings.Repeat("t", 900<<10)},
		{"bytes tag", "/v1/keys/k3?tt=bytes&tag=" + strings.Repeat("%FF", wire.MaxTagBytes+1)},
	} {
		if status, e := put(tc.path); status != http.StatusBadRequest || e.Code != wire.CodeTagTooLarge {
			t.Errorf("%s: %d %+v, want 400 %s", tc.name, status, e, wire.CodeTagTooLarge)
		}
	}
	// Batch set reports the refused record and stores the others.
	status, body, _ := send(t, srv, http.MethodPost, "/v1/batch/set", wire.RecordsContentType,
		`{"key":"k4","len":1,"tag":"`+atLimit+`y"}`+"\nv"+`{"key":"k5","len":1,"tag":"short"}`+"\nv")
	var res cacheserver.BatchSetResult
	if err := json.Unmarshal(body, &res); status != http.StatusOK || err != nil || res.Stored != 1 ||
		len(res.Failed) != 1 || res.Failed[0].Error != wire.CodeTagTooLarge {
		t.Errorf("batch set with a tag over the limit: %d %s", status, body)
	}
	info, err := c.Cache("").Info(t.Context())
	if err != nil || info.Count != 2 {
		t.Errorf("count %d, %v; want only the items with tags within the limit", info.Count, err)
	}
}

// send sends an authorised request and returns the status and body.
func send(t *testing.T, srv *testserver.Server, method, path, contentType, body string) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

// hangGuard bounds a raw exchange that would otherwise block forever when
// the behaviour under test is broken; it is never reached when it works.
const hangGuard = 30 * time.Second

// slowRequest opens a connection, sends the headers of a PUT announcing a
// body of 100,000 bytes and the first bytes of it, and stops there.
func slowRequest(t *testing.T, srv *testserver.Server, token, key string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(hangGuard))
	auth := ""
	if token != "" {
		auth = "Authorization: Bearer " + token + "\r\n"
	}
	if _, err := fmt.Fprintf(conn, "PUT /v1/keys/%s HTTP/1.1\r\nHost: x\r\n%sContent-Length: 100000\r\n\r\nfirst bytes", key, auth); err != nil {
		t.Fatal(err)
	}
	return conn
}

// readAnswer reads one response from conn and reports whether the server
// then closed the connection.
func readAnswer(t *testing.T, conn net.Conn) (status int, code string, closed bool) {
	t.Helper()
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Errorf("no answer: %v", err)
		return 0, "", false
	}
	var e wire.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	// The end of the stream, or a reset: the server closed with our unread
	// bytes in its buffer. Not a timeout, which would mean it kept it open.
	_, err = br.ReadByte()
	var ne net.Error
	return resp.StatusCode, e.Code, err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// TestSlowClientsCannotStarveTheServer holds many connections that send a
// body slowly: without a token they are answered 401 at once and closed
// (the body is not drained), with one they get 408 when the body stalls
// longer than --body-timeout, and meanwhile /healthz and authorised
// requests are served.
func TestSlowClientsCannotStarveTheServer(t *testing.T) {
	srv, c := startServer(t, "--body-timeout", "2s")
	const slowConns, concurrency = 300, 30
	var wg sync.WaitGroup
	var answered, closed atomic.Int64
	sem := make(chan struct{}, concurrency)
	for i := range slowConns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conn := slowRequest(t, srv, "", fmt.Sprintf("slow%d", i))
			defer conn.Close()
			status, code, gone := readAnswer(t, conn)
			if status == http.StatusUnauthorized && code == wire.CodeUnauthorized {
				answered.Add(1)
			}
			if gone {
				closed.Add(1)
			}
		}()
	}
	// Meanwhile, probes and authorised clients are served.
	var healthy, served int
	for i := range 30 {
		if authStatus(t, srv.URL+"/healthz", "") == http.StatusOK {
			healthy++
		}
		key := kv.TextKey(fmt.Sprintf("k%d", i))
		if c.Cache("").Set(t.Context(), key, kv.Text("v"), kv.SetOptions{}) == nil {
			if _, ok, err := c.Cache("").Get(t.Context(), key); ok && err == nil {
				served++
			}
		}
	}
	wg.Wait()
	if answered.Load() != slowConns || closed.Load() != slowConns {
		t.Errorf("of %d slow unauthenticated requests %d were answered 401 and %d closed; want all", slowConns, answered.Load(), closed.Load())
	}
	if healthy != 30 || served != 30 {
		t.Errorf("during the slow requests %d of 30 health checks and %d of 30 authorised writes succeeded", healthy, served)
	}

	// An authorised body that stalls is cut at --body-timeout.
	conn := slowRequest(t, srv, srv.Token, "stalled")
	defer conn.Close()
	if status, code, gone := readAnswer(t, conn); status != http.StatusRequestTimeout || code != wire.CodeBodyTimeout || !gone {
		t.Errorf("stalled authorised body: %d %s, closed %v; want 408 %s and the connection closed", status, code, gone, wire.CodeBodyTimeout)
	}
	if _, ok, err := c.Cache("").Get(t.Context(), kv.TextKey("stalled")); ok || err != nil {
		t.Errorf("stalled body stored: %v %v", ok, err)
	}
	if lines := errorLogLines(srv); len(lines) > 0 {
		t.Errorf("slow clients logged at ERROR:\n%s", strings.Join(lines, "\n"))
	}
}

// TestUnauthorizedConnectionsAreClosed: a request without the token, body
// or not, over HTTP/1.1 or as a frames upgrade, is answered 401 and its
// connection closed; kept alive, such connections held --max-connections
// slots for the idle timeout and shut probes and clients out.
func TestUnauthorizedConnectionsAreClosed(t *testing.T) {
	srv, _ := startServer(t, "--max-connections", "4")
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, req := range []string{
		"GET /v1/keys/k HTTP/1.1\r\nHost: cache\r\n\r\n",
		"GET /v1/keys/k HTTP/1.1\r\nHost: cache\r\nAuthorization: Bearer wrong\r\n\r\n",
		"GET /v1/frames HTTP/1.1\r\nHost: cache\r\nConnection: Upgrade\r\nUpgrade: diskcache-frames/1\r\n\r\n",
	} {
		for range 6 { // more than the cap: each slot is given back
			conn, err := net.Dial("tcp", host)
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // the idle timeout is 2 minutes
			if _, err := io.WriteString(conn, req); err != nil {
				t.Fatal(err)
			}
			status, code, closed := readAnswer(t, conn)
			conn.Close()
			if status != http.StatusUnauthorized || code != wire.CodeUnauthorized || !closed {
				t.Fatalf("%q: %d %s, closed %v; want 401 and the connection closed", req, status, code, closed)
			}
		}
	}
	if st := authStatus(t, srv.URL+"/healthz", ""); st != http.StatusOK {
		t.Fatalf("/healthz after the refused clients: %d", st)
	}
}

// TestUnauthorizedHTTP2ConnectionsAreClosed is the cleartext HTTP/2 side
// of the test above: a request without the token is answered 401 and the
// connection is shut down (GOAWAY, then closed), not held for the idle
// timeout.
func TestUnauthorizedHTTP2ConnectionsAreClosed(t *testing.T) {
	srv, _ := startServer(t)
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, token := range []string{"", "wrong"} {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second)) // the idle timeout is 2 minutes
		fr := http2.NewFramer(conn, conn)
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		fields := [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", host}, {":path", "/v1/keys/k"}}
		if token != "" {
			fields = append(fields, [2]string{"authorization", "Bearer " + token})
		}
		for _, f := range fields {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
			t.Fatal(err)
		}
		if err := fr.WriteSettings(); err != nil {
			t.Fatal(err)
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		status, goAway := "", false
		dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
			if f.Name == ":status" {
				status = f.Value
			}
		})
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("token %q: answered %q, GOAWAY %v, and the connection was kept open", token, status, goAway)
				}
				break // closed by the server
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = fr.WriteSettingsAck()
				}
			case *http2.HeadersFrame:
				if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
					t.Fatal(err)
				}
			case *http2.GoAwayFrame:
				goAway = true
			}
		}
		conn.Close()
		if status != "401" || !goAway {
			t.Fatalf("token %q: answered %q, GOAWAY %v; want 401 and a GOAWAY before the close", token, status, goAway)
		}
	}
}

// TestConnectionCap fills --max-connections with stalled requests: the
// next connection is answered 503 too_many_connections at once, and once
// a connection ends the server serves again.
func TestConnectionCap(t *testing.T) {
	const limit = 8
	srv, _ := startServer(t, "--max-connections", strconv.Itoa(limit), "--body-timeout", "10m")
	var held []net.Conn
	for i := range limit {
		held = append(held, slowRequest(t, srv, srv.Token, fmt.Sprintf("held%d", i)))
	}
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// The listener accepts in order, so these come after the held ones.
	for range 3 {
		conn := slowRequest(t, srv, srv.Token, "over")
		status, code, gone := readAnswer(t, conn)
		conn.Close()
		if status != http.StatusServiceUnavailable || code != wire.CodeTooManyConnections || !gone {
			t.Fatalf("connection over the cap: %d %s, closed %v; want 503 %s and closed", status, code, gone, wire.CodeTooManyConnections)
		}
	}
	// A connection over the cap that sends nothing (a client's transport
	// dialing ahead of need) is told with a 408, which clients take for
	// the server closing an idle connection; a 503 there would be an
	// answer to no request.
	idle, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = idle.SetDeadline(time.Now().Add(hangGuard))
	status, code, gone := readAnswer(t, idle)
	idle.Close()
	if status != http.StatusRequestTimeout || code != wire.CodeTooManyConnections || !gone {
		t.Fatalf("idle connection over the cap: %d %s, closed %v; want 408 %s and closed", status, code, gone, wire.CodeTooManyConnections)
	}
	// The liveness probe is answered over the cap: a flood of connections
	// must not make the kubelet restart the server.
	probe := dialRaw(t, srv)
	if status, _ := probe.get(t, "/healthz"); status != http.StatusOK {
		t.Fatalf("/healthz over the cap: %d, want 200", status)
	}
	probe.Close()
	refused := 5 // the three above, the idle one and the probe
	// A held request ends (its client gives up); its slot serves again.
	held[0].Close()
	deadline := time.Now().Add(hangGuard)
	var served *rawConn
	for served == nil {
		// A raw connection, not http.Get: the refusal is written as soon as
		// the connection is accepted, and net/http's transport reports such
		// an unsolicited answer as an error instead of the 503 it is.
		conn := dialRaw(t, srv)
		status, retryAfter := conn.get(t, "/readyz")
		if status == http.StatusOK {
			served = conn
			break
		}
		conn.Close()
		if status != http.StatusServiceUnavailable || retryAfter == "" || time.Now().After(deadline) {
			t.Fatalf("/readyz after a slot was freed: %d", status)
		}
		refused++
		time.Sleep(100 * time.Millisecond) // honour Retry-After, briefly
	}
	defer served.Close()
	// The scrape reuses the served connection: a new one could find its
	// slot not yet given back.
	_, _ = served.get(t, "/metrics")
	metrics := served.body
	if want := fmt.Sprintf("diskcache_http_connections_refused_total %d\n", refused); !strings.Contains(metrics, want) {
		t.Errorf("want %q in the metrics:\n%s", want, grepLines(metrics, "connections"))
	}
}

// rawConn sends requests on one connection and reads their answers with
// http.ReadResponse.
type rawConn struct {
	net.Conn
	r    *bufio.Reader
	body string // of the last answer
}

func dialRaw(t *testing.T, srv *testserver.Server) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(hangGuard))
	return &rawConn{Conn: conn, r: bufio.NewReader(conn)}
}

// get sends GET path and returns the answer's status and Retry-After.
func (c *rawConn) get(t *testing.T, path string) (int, string) {
	t.Helper()
	// A failed write is not fatal: a refused connection may be closed
	// before the request is sent, and its answer is still there to read.
	_, _ = fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("GET %s: no answer: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.body = string(b)
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

func scrape(t *testing.T, srv *testserver.Server) string {
	t.Helper()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(text, word string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestValueTooLargeForSizeLimitIsRefused: a value that the cull of its own
// write would remove (it does not fit in its database's share of
// size_limit) is refused with 413 naming the limit, never acknowledged and
// lost; one that fits is kept.
func TestValueTooLargeForSizeLimitIsRefused(t *testing.T) {
	// 10 MB over a fanout of 8: 1,250,000 bytes per database, of which an
	// otherwise empty database's own pages take 8 (of --page-size bytes).
	srv, c := startServer(t, "--size-limit", "10000000", "--collection-max-bytes", "100000000")
	const share, pages = 10000000 / 8, 8 * cacheserver.DefaultPageSize
	cache := c.Cache("")
	for _, size := range []int{share - pages - 1, 1 << 20} {
		key := kv.TextKey(fmt.Sprintf("fits-%d", size))
		if err := cache.Set(t.Context(), key, kv.Bytes(make([]byte, size)), kv.SetOptions{}); err != nil {
			t.Fatalf("set %d bytes: %v", size, err)
		}
		if ok, err := cache.Contains(t.Context(), key); !ok || err != nil {
			t.Errorf("%d bytes acknowledged, then gone (%v)", size, err)
		}
	}
	for _, size := range []int{share - pages, 2 << 20, 9 << 20} {
		path := fmt.Sprintf("/v1/keys/big-%d", size)
		status, body, _ := send(t, srv, http.MethodPut, path, "", strings.Repeat("x", size))
		var e wire.Error
		_ = json.Unmarshal(body, &e)
		if status != http.StatusRequestEntityTooLarge || e.Code != wire.CodeValueTooLarge || !strings.Contains(e.Message, strconv.Itoa(share)) {
			t.Errorf("PUT %d bytes: %d %+v; want 413 %s naming the limit %d", size, status, e, wire.CodeValueTooLarge, share)
		}
		if status, _, _ := send(t, srv, http.MethodPost, "/v1/deques/q/push", "", strings.Repeat("x", size)); status != http.StatusOK {
			t.Errorf("deque push of %d bytes (deques do not cull; their own limit is 100 MB): %d", size, status)
		}
	}
	status, body, _ := send(t, srv, http.MethodPost, "/v1/batch/set", wire.RecordsContentType,
		fmt.Sprintf(`{"key":"batch-big","len":%d}`+"\n%s", 2<<20, strings.Repeat("x", 2<<20)))
	var res cacheserver.BatchSetResult
	if err := json.Unmarshal(body, &res); status != http.StatusOK || err != nil || res.Stored != 0 ||
		len(res.Failed) != 1 || res.Failed[0].Error != wire.CodeValueTooLarge {
		t.Errorf("batch set of a value over the limit: %d %s", status, body)
	}
	info, err := cache.Info(t.Context())
	if err != nil || info.Count != 2 {
		t.Errorf("count %d, %v; want the 2 values that fit", info.Count, err)
	}
}

// valueFiles lists the value files below dir.
func valueFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(path, ".val") {
			out = append(out, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// TestCorruptValueFilesAreMisses damages value files on disk (truncated,
// grown, replaced by another length): reads answer a miss and count it,
// check finds them and check?fix=true removes the items and files.
func TestCorruptValueFilesAreMisses(t *testing.T) {
	srv, c := startServer(t, "--fanout", "1")
	cache := c.Cache("")
	value := bytes.Repeat([]byte("v"), 100<<10) // a value file
	damage := map[string]func(path string) error{
		"truncated": func(p string) error { return os.Truncate(p, 10<<10) },
		"grown": func(p string) error {
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			_, err = f.Write([]byte("garbage"))
			return errors.Join(err, f.Close())
		},
		"replaced": func(p string) error { return os.WriteFile(p, []byte("other bytes"), 0o644) },
	}
	for name, hurt := range damage {
		before := valueFiles(t, srv.DataDir)
		if err := cache.Set(t.Context(), kv.TextKey(name), kv.Bytes(value), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		after := valueFiles(t, srv.DataDir)
		if len(after) != len(before)+1 {
			t.Fatalf("value files %v after setting %s", after, name)
		}
		var file string
		for _, f := range after {
			if !slices.Contains(before, f) {
				file = f
			}
		}
		if err := hurt(file); err != nil {
			t.Fatal(err)
		}
	}
	if err := cache.Set(t.Context(), kv.TextKey("intact"), kv.Bytes(value), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	for name := range damage {
		if it, ok, err := cache.Get(t.Context(), kv.TextKey(name)); ok || err != nil {
			t.Errorf("GET %s value file: %d bytes, %v, %v; want a miss", name, len(it.Value.Data), ok, err)
		}
	}
	if it, ok, err := cache.Get(t.Context(), kv.TextKey("intact")); !ok || err != nil || !bytes.Equal(it.Value.Data, value) {
		t.Errorf("intact value: %v %v", ok, err)
	}
	if m := scrape(t, srv); !strings.Contains(m, "diskcache_corrupt_values_total 3\n") {
		t.Errorf("corrupt reads not counted:\n%s", grepLines(m, "corrupt"))
	}
	check := func(fix bool) []kv.Warning {
		warns, err := cache.Check(t.Context(), fix)
		if err != nil {
			t.Fatal(err)
		}
		return warns
	}
	if warns := check(false); len(warns) != 3 {
		t.Errorf("check: %+v; want 3 warnings", warns)
	}
	check(true)
	if warns := check(false); len(warns) != 0 {
		t.Errorf("check after fix: %+v", warns)
	}
	if files := valueFiles(t, srv.DataDir); len(files) != 1 {
		t.Errorf("value files after fix: %v; want only the intact one", files)
	}
	if info, err := cache.Info(t.Context()); err != nil || info.Count != 1 {
		t.Errorf("count %d, %v after fix; want 1", info.Count, err)
	}
}

// TestDamagedDatabaseIsQuarantined overwrites one fanout database with
// garbage pages: the server starts, moves it aside, logs and counts it,
// and serves the keys of the other databases.
func TestDamagedDatabaseIsQuarantined(t *testing.T) {
	srv, c := startServer(t, "--fanout", "4")
	cache := c.Cache("")
	for i := range 100 {
		if err := cache.Set(t.Context(), kv.IntKey(int64(i)), kv.Int(int64(i)), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Keep page 1 (the header and schema), garble the rest.
	// The first: settings are read from it.
	db := filepath.Join(srv.DataDir, "000", "cache.db")
	data, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	for i := 4096; i < len(data); i++ {
		data[i] = byte(i*7 + 3)
	}
	if err := os.WriteFile(db, data, 0o644); err != nil {
		t.Fatal(err)
	}
	srv.Restart(t)
	found := 0
	for i := range 100 {
		if _, ok, err := cache.Get(t.Context(), kv.IntKey(int64(i))); err != nil {
			t.Fatalf("GET %d after quarantine: %v", i, err)
		} else if ok {
			found++
		}
	}
	if found == 0 || found == 100 {
		t.Errorf("%d of 100 keys found; want those of the three intact databases", found)
	}
	if err := cache.Set(t.Context(), kv.TextKey("new"), kv.Text("v"), kv.SetOptions{}); err != nil {
		t.Errorf("write after quarantine: %v", err)
	}
	// The new database in its place has its share of the limit (it had a
	// whole cache's: the limit read 4 GiB, and that database could hold it).
	if st, err := cache.Settings(t.Context()); err != nil || st.SizeLimit == nil || *st.SizeLimit != 1<<30 {
		t.Errorf("size limit after quarantine: %s %v, want the default 1 GiB", st, err)
	}
	if m := scrape(t, srv); !strings.Contains(m, "diskcache_quarantined_databases 1\n") {
		t.Errorf("quarantine not in the metrics:\n%s", grepLines(m, "quarantine"))
	}
	if !strings.Contains(strings.Join(errorLogLines(srv), "\n"), `"fanout_database":0`) {
		t.Errorf("quarantine not logged:\n%s", srv.Logs())
	}
	moved, _ := filepath.Glob(filepath.Join(srv.DataDir, "quarantine", "000-*", "cache.db"))
	if len(moved) != 1 {
		t.Errorf("quarantined database not kept aside: %v", moved)
	}
	// GET /v1/config reports it, for the operator's Event.
	cfg, err := c.ServerConfig(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Quarantined) != 1 || cfg.Quarantined[0].Database != 0 || !strings.Contains(cfg.Quarantined[0].MovedTo, "quarantine") {
		t.Errorf("GET /v1/config quarantined = %+v, want database 0", cfg.Quarantined)
	}
}

// mountSmallVolume mounts a tmpfs of size bytes for the test, or skips the
// test where mounting is not allowed (not root).
func mountSmallVolume(t *testing.T, size int) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "diskcache-full-")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		_ = os.Remove(dir)
		t.Skipf("cannot mount a small tmpfs (needs root): %v %s", err, out)
	}
	// Registered before the server starts, so it runs after the server is killed.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
		_ = os.Remove(dir)
	})
	return dir
}

// TestFullDiskCanBeFreed fills a small volume: writes answer 507, readiness
// says disk_full, and deletes, evict, cull, settings, check and clear still
// work; once they have freed space the server is ready and stores again.
func TestFullDiskCanBeFreed(t *testing.T) {
	vol := mountSmallVolume(t, 12<<20)
	srv := testserver.Start(t, testserver.Options{DataDir: filepath.Join(vol, "data"),
		Args: []string{"--fanout", "2", "--disk-reserve-bytes", "1048576"}})
	do := func(method, path, body string) (int, wire.Error) {
		status, b, _ := send(t, srv, method, path, "", body)
		var e wire.Error
		_ = json.Unmarshal(b, &e)
		return status, e
	}
	value := strings.Repeat("v", 200<<10)
	stored := 0
	for ; ; stored++ {
		status, e := do(http.MethodPut, fmt.Sprintf("/v1/keys/k%d?tag=t%d", stored, stored%2), value)
		if status == http.StatusNoContent {
			continue
		}
		if status != http.StatusInsufficientStorage || e.Code != wire.CodeInsufficientStorage {
			t.Fatalf("write %d on a filling volume: %d %+v; want 507 %s", stored, status, e, wire.CodeInsufficientStorage)
		}
		break
	}
	if stored < 10 {
		t.Fatalf("only %d values fit before the volume was full", stored)
	}
	for _, op := range []struct{ method, path, body string }{
		{http.MethodPut, "/v1/keys/more", "small"},
		// The recipes write rows too: they filled the reserve, and then
		// deletes failed (507).
		{http.MethodPost, "/v1/locks/deploy/acquire?owner=w1&ttl=30", ""},
		{http.MethodPost, "/v1/semaphores/db/acquire?owner=w1&value=3&ttl=60", ""},
		{http.MethodPost, "/v1/averages/latency", "120"},
		{http.MethodPost, "/v1/ratelimits/api-u1?count=10&per=1", ""},
	} {
		if status, e := do(op.method, op.path, op.body); status != http.StatusInsufficientStorage || e.Code != wire.CodeInsufficientStorage {
			t.Errorf("%s %s while full: %d %+v, want 507", op.method, op.path, status, e)
		}
	}
	// Still ready: reads, and the deletes that free space, keep coming.
	if status, b, _ := send(t, srv, http.MethodGet, "/readyz", "", ""); status != http.StatusOK || !strings.Contains(string(b), `"disk_full"`) {
		t.Errorf("/readyz while full: %d %s, want 200 disk_full", status, b)
	}
	if status, b, _ := send(t, srv, http.MethodGet, "/v1/config", "", ""); status != http.StatusOK || !strings.Contains(string(b), `"disk_full":true`) {
		t.Errorf("/v1/config while full: %d %s, want disk_full true", status, b)
	}
	if m := scrape(t, srv); !strings.Contains(m, "diskcache_disk_full 1\n") {
		t.Errorf("full disk not in the metrics:\n%s", grepLines(m, "disk_full"))
	}
	for _, op := range []struct{ method, path, body string }{
		{http.MethodDelete, "/v1/keys/k0", ""},
		{http.MethodPost, "/v1/evict?tag=t1", ""},
		{http.MethodPatch, "/v1/settings", `{"cull_limit":20}`},
		{http.MethodPost, "/v1/cull", ""},
		{http.MethodPost, "/v1/expire", ""},
		{http.MethodPost, "/v1/check?fix=true", ""},
		{http.MethodPost, "/v1/clear", ""},
	} {
		if status, e := do(op.method, op.path, op.body); status != http.StatusOK {
			t.Errorf("%s %s on a full volume: %d %+v", op.method, op.path, status, e)
		}
	}
	// Space is back: ready again, writes stored, the reserve taken back.
	if status := authStatus(t, srv.URL+"/readyz", ""); status != http.StatusOK {
		t.Errorf("/readyz after clear: %d, want 200", status)
	}
	if status, e := do(http.MethodPut, "/v1/keys/again", value); status != http.StatusNoContent {
		t.Errorf("write after space came back: %d %+v", status, e)
	}
	if st, err := os.Stat(filepath.Join(vol, "data", ".diskcache-reserve")); err != nil || st.Size() != 1<<20 {
		t.Errorf("reserve after recovery: %v", err)
	}
	if lines := errorLogLines(srv); len(lines) != 1 || !strings.Contains(lines[0], "data volume full") {
		t.Errorf("want one ERROR line about the full volume, got:\n%s", strings.Join(lines, "\n"))
	}
}

// diskUse sums the allocated bytes of the files below dir, by kind.
func diskUse(t *testing.T, dir string) (total int64, byKind map[string]int64) {
	t.Helper()
	byKind = map[string]int64{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n := info.Sys().(*syscall.Stat_t).Blocks * 512
		kind := filepath.Ext(path)
		switch {
		case strings.HasSuffix(path, "-wal"):
			kind = "wal"
		case strings.HasSuffix(path, "-shm"):
			kind = "shm"
		}
		byKind[kind] += n
		total += n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total, byKind
}

// TestDiskUseStaysNearSizeLimit writes four times the size limit in small
// and file-backed values to the server's cache and to a named cache, and
// checks that the data directory stays within the documented overhead:
// size_limit, plus at most 8 MiB of write-ahead log and 64 KiB of other
// database overhead per database, plus the disk reserve; a new named cache
// is limited to one fanout database's share of size_limit.
func TestDiskUseStaysNearSizeLimit(t *testing.T) {
	const limit, fanout, reserve = 10_000_000, 8, 1 << 20
	const share, perDatabase = limit / fanout, 8<<20 + 64<<10
	srv, c := startServer(t, "--size-limit", strconv.Itoa(limit), "--fanout", strconv.Itoa(fanout),
		"--disk-reserve-bytes", strconv.Itoa(reserve))
	fill := func(cache *client.Cache, bytes int) {
		small, big := make([]byte, 3000), make([]byte, 60_000)
		for i := range bytes / (len(small) + len(big)) {
			for _, v := range [][]byte{small, big} {
				key := kv.TextKey(fmt.Sprintf("k%d-%d", i, len(v)))
				if err := cache.Set(t.Context(), key, kv.Bytes(v), kv.SetOptions{}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	fill(c.Cache(""), 4*limit)
	fill(c.Cache("named"), 4*limit)
	named, namedKinds := diskUse(t, filepath.Join(srv.DataDir, "cache", "named"))
	if named > share+perDatabase {
		t.Errorf("named cache holds %d bytes (%v); want at most %d", named, namedKinds, share+perDatabase)
	}
	total, byKind := diskUse(t, srv.DataDir)
	t.Logf("data directory: %d bytes for a size limit of %d (%v)", total, limit, byKind)
	if bound := int64(limit + reserve + fanout*perDatabase + share + perDatabase); total > bound {
		t.Errorf("data directory holds %d bytes (%v); want at most %d", total, byKind, bound)
	}
}

// settledProcState reads the server's state once it has written a key and
// rendered /metrics, which opens every fanout database: what using
// collections adds is counted from there.
func settledProcState(t *testing.T, srv *testserver.Server, c *client.Client) procState {
	t.Helper()
	if err := c.Cache("").Set(t.Context(), kv.TextKey("warm"), kv.Text("v"), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	readProcState(t, srv) // its scrape of /metrics opens every fanout database
	return readProcState(t, srv)
}

// TestIdleCollectionsReleaseFiles uses 200 named caches once each: after
// --collection-idle-timeout their database files are closed again, so the
// server holds no more SQLite files than before.
func TestIdleCollectionsReleaseFiles(t *testing.T) {
	srv, c := startServer(t, "--fanout", "2", "--collection-idle-timeout", "200ms")
	before := settledProcState(t, srv, c)
	for i := range 200 {
		if err := c.Cache(fmt.Sprintf("named-%d", i)).Set(t.Context(), kv.TextKey("k"), kv.Text("v"), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitQuiet(t, srv, "idle collections", func(st procState) bool { return st.sqlite <= before.sqlite })
	// A collection closed for idleness opens again when used.
	if it, ok, err := c.Cache("named-7").Get(t.Context(), kv.TextKey("k")); !ok || err != nil || !it.Value.Equal(kv.Text("v")) {
		t.Errorf("named cache after its files were closed: %v %v %v", it.Value, ok, err)
	}
}

// TestOpenCollectionsAreBounded uses 120 named caches and 60 deques, each
// once, well within --collection-idle-timeout: with --max-open-collections
// 16 the server holds the database files of 16 of them (3 files each), not
// of all, and reports 16 in diskcache_open_collections; the first one, long
// closed, opens again with its item.
func TestOpenCollectionsAreBounded(t *testing.T) {
	const bound = 16
	srv, c := startServer(t, "--fanout", "2", "--max-open-collections", strconv.Itoa(bound))
	before := settledProcState(t, srv, c)
	for i := range 120 {
		if err := c.Cache(fmt.Sprintf("named-%d", i)).Set(t.Context(), kv.TextKey("k"), kv.Text("v"), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := c.Deque(fmt.Sprintf("deque-%d", i)).Append(t.Context(), kv.Text("x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	after := readProcState(t, srv)
	if after.sqlite > before.sqlite+3*bound {
		t.Errorf("after 180 collections the server holds %d SQLite files, %d before: want at most %d more (%d collections of 3 files)",
			after.sqlite, before.sqlite, 3*bound, bound)
	}
	if n := metricValue(t, srv, "diskcache_open_collections"); n != bound {
		t.Errorf("diskcache_open_collections = %v, want %d", n, bound)
	}
	if it, ok, err := c.Cache("named-0").Get(t.Context(), kv.TextKey("k")); !ok || err != nil || !it.Value.Equal(kv.Text("v")) {
		t.Errorf("named cache after its files were closed: %v %v %v", it.Value, ok, err)
	}
}

// TestCollectionsHaveALimit fills a deque and an index, which never cull:
// writes beyond --collection-max-bytes (by default one fanout database's
// share of size_limit) answer 507 collection_full, and removing items
// makes room again.
func TestCollectionsHaveALimit(t *testing.T) {
	const share = 1_000_000
	srv, _ := startServer(t, "--size-limit", strconv.Itoa(8*share), "--fanout", "8")
	value := strings.Repeat("v", 100_000)
	for _, coll := range []struct{ name, write, free string }{
		{"deque", "/v1/deques/q/push", "/v1/deques/q/pop"},
		{"index", "/v1/indexes/i/push", "/v1/indexes/i/pull"},
	} {
		pushed := 0
		for ; pushed < 20; pushed++ {
			status, body, _ := send(t, srv, http.MethodPost, coll.write, "", value)
			if status == http.StatusOK {
				continue
			}
			var e wire.Error
			_ = json.Unmarshal(body, &e)
			if status != http.StatusInsufficientStorage || e.Code != wire.CodeCollectionFull {
				t.Fatalf("%s write %d: %d %s; want 507 %s", coll.name, pushed, status, body, wire.CodeCollectionFull)
			}
			break
		}
		if pushed < 5 || pushed >= 10 {
			t.Errorf("%s took %d values of %d bytes under a limit of %d", coll.name, pushed, len(value), share)
		}
		if status, body, _ := send(t, srv, http.MethodPost, coll.free, "", ""); status != http.StatusOK {
			t.Fatalf("%s: removing an item: %d %s", coll.name, status, body)
		}
		if status, body, _ := send(t, srv, http.MethodPost, coll.write, "", value); status != http.StatusOK {
			t.Errorf("%s write after removing an item: %d %s", coll.name, status, body)
		}
	}
}

// TestUploadCutByACrashLeavesNoFile kills the server (SIGKILL, as the
// kernel's OOM killer does) while a large value streams in, to the server's
// cache and to a named deque, and starts it again on the same directory:
// once the collection is used again nothing of the cut upload is left on
// the volume, where no size accounting would see it (check finds nothing
// to fix), and the cache serves on.
func TestUploadCutByACrashLeavesNoFile(t *testing.T) {
	for _, target := range []struct{ method, path string }{
		{http.MethodPut, "/v1/keys/big"},
		{http.MethodPost, "/v1/deques/dq/push"},
	} {
		t.Run(target.path, func(t *testing.T) {
			srv := testserver.Start(t, testserver.Options{})
			conn, err := net.Dial("tcp", srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(hangGuard))
			const total, sent = 64 << 20, 8 << 20
			if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", target.method, target.path, srv.Token, total); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Write(bytes.Repeat([]byte("v"), sent)); err != nil {
				t.Fatal(err)
			}
			// Poll until the server has written half of what was sent.
			for deadline := time.Now().Add(hangGuard); valueBytes(t, srv.DataDir) < sent/2; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the server wrote less than %d bytes of the upload in %s", sent/2, hangGuard)
				}
			}
			srv.Kill()
			srv.Restart(t)
			if status, b, _ := send(t, srv, target.method, target.path, "", "small"); status >= 300 {
				t.Errorf("%s %s after the restart: %d %s", target.method, target.path, status, b)
			}
			if status, b, _ := send(t, srv, http.MethodPost, "/v1/check", "", ""); status != http.StatusOK || strings.Contains(string(b), "unknown") {
				t.Errorf("check after a crash cut an upload: %d %s; want no unknown file", status, b)
			}
			if n := valueBytes(t, srv.DataDir); n != 0 {
				t.Errorf("after the restart the data directory holds %d bytes outside its databases and reserve: the cut upload is still there", n)
			}
		})
	}
}

// valueBytes sums the sizes of the files below dir other than the
// databases and the disk reserve.
func valueBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(d.Name(), "cache.db") || d.Name() == ".diskcache-reserve" || d.Name() == "topology.json" {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// An empty database file (a copy cut short, a volume restored half) is a
// new database, with its share of the limit: it kept no limit of its own
// and got a whole cache's.
func TestEmptyDatabaseFileGetsItsShareOfTheLimit(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "000"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "000", "cache.db"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := testserver.Start(t, testserver.Options{DataDir: dir})
	c, err := client.New(srv.URL, client.Options{Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := c.Cache("").Settings(t.Context()); err != nil || st.SizeLimit == nil || *st.SizeLimit != 1<<30 {
		t.Errorf("size limit with an empty 000/cache.db: %s %v, want the default 1 GiB", st, err)
	}
}

// A named cache or deque whose database is damaged beyond opening can be
// dropped, and its name used again: the drop opened the database to count
// its items, and failed (500) like every other call on it.
func TestDamagedCollectionCanBeDropped(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	for _, op := range []struct{ method, path string }{{http.MethodPut, "/v1/caches/nc/keys/k"}, {http.MethodPost, "/v1/deques/dq/push"}} {
		if status, b, _ := send(t, srv, op.method, op.path, "", "v"); status/100 != 2 {
			t.Fatalf("%s %s: %d %s", op.method, op.path, status, b)
		}
	}
	if err := srv.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"cache/nc", "deque/dq"} {
		garbage := bytes.Repeat([]byte("not a database "), 1000)
		if err := os.WriteFile(filepath.Join(srv.DataDir, kind, "cache.db"), garbage, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv.Restart(t)
	for _, path := range []string{"/v1/caches/nc", "/v1/deques/dq"} {
		if status, b, _ := send(t, srv, http.MethodDelete, path, "", ""); status != http.StatusOK {
			t.Errorf("DELETE %s, damaged: %d %s, want 200", path, status, b)
		}
	}
	if status, b, _ := send(t, srv, http.MethodPost, "/v1/deques/dq/push", "", "again"); status/100 != 2 {
		t.Errorf("a push to the dropped deque's name: %d %s", status, b)
	}
	if status, b, _ := send(t, srv, http.MethodGet, "/v1/caches/nc/keys/k", "", ""); status != http.StatusNotFound {
		t.Errorf("a get from the dropped cache's name: %d %s, want 404", status, b)
	}
}

// TestFullDiskGivesBackWhatAClearFreed: on a volume whose databases' logs
// can hold what a clear frees, the space came back to the file system only
// at a checkpoint, which only commits start: with writes refused none came,
// and the server refused writes with an empty cache for good. Now a full
// server copies the logs back itself while short of space.
func TestFullDiskGivesBackWhatAClearFreed(t *testing.T) {
	vol := mountSmallVolume(t, 80<<20)
	srv := testserver.Start(t, testserver.Options{DataDir: filepath.Join(vol, "data")})
	value := strings.Repeat("v", 20<<10) // kept in the databases, not in files
	for i := 0; ; i++ {
		status, b, _ := send(t, srv, http.MethodPut, fmt.Sprintf("/v1/keys/k%d", i), "", value)
		if status == http.StatusInsufficientStorage {
			break
		}
		if status != http.StatusNoContent {
			t.Fatalf("write %d on a filling volume: %d %s", i, status, b)
		}
	}
	if status, b, _ := send(t, srv, http.MethodPost, "/v1/clear", "", ""); status != http.StatusOK {
		t.Fatalf("clear on a full volume: %d %s", status, b)
	}
	pollUntil(t, 30*time.Second, "a write stored after clear", func() (bool, string) {
		status, b, _ := send(t, srv, http.MethodPut, "/v1/keys/again", "", "v")
		var st syscall.Statfs_t
		_ = syscall.Statfs(vol, &st)
		return status == http.StatusNoContent, fmt.Sprintf("%d %s (%d MiB free)", status, b, int64(st.Bavail)*st.Bsize>>20)
	})
}

// TestFullDiskServerStartsAgain: a shard killed (an OOM kill, a node
// restart) on a full volume starts again full, keeping the space left for
// the deletes that free space: it took its reserve back with the last
// free space, served as if not full, and its next write filled the volume
// to the last byte (after which its databases' start, which writes their
// settings, failed for want of space).
func TestFullDiskServerStartsAgain(t *testing.T) {
	vol := mountSmallVolume(t, 12<<20)
	srv := testserver.Start(t, testserver.Options{DataDir: filepath.Join(vol, "data"),
		Args: []string{"--fanout", "2", "--disk-reserve-bytes", "1048576"}})
	value := strings.Repeat("v", 200<<10)
	stored := 0
	for ; ; stored++ {
		status, b, _ := send(t, srv, http.MethodPut, fmt.Sprintf("/v1/keys/k%d", stored), "", value)
		if status == http.StatusInsufficientStorage {
			break
		}
		if status != http.StatusNoContent {
			t.Fatalf("write %d on a filling volume: %d %s", stored, status, b)
		}
	}
	srv.Kill()
	srv.Restart(t)
	if status, b, _ := send(t, srv, http.MethodGet, "/readyz", "", ""); status != http.StatusOK || !strings.Contains(string(b), `"disk_full"`) {
		t.Errorf("/readyz after a restart on a full volume: %d %s, want 200 disk_full", status, b)
	}
	if status, b, _ := send(t, srv, http.MethodGet, "/v1/keys/k0", "", ""); status != http.StatusOK || string(b) != value {
		t.Errorf("a read after a restart on a full volume: %d (%d bytes)", status, len(b))
	}
	for i := range stored {
		if status, b, _ := send(t, srv, http.MethodDelete, fmt.Sprintf("/v1/keys/k%d", i), "", ""); status != http.StatusOK {
			t.Fatalf("delete %d after a restart on a full volume: %d %s", i, status, b)
		}
	}
	pollUntil(t, 30*time.Second, "a write stored after the deletes", func() (bool, string) {
		status, b, _ := send(t, srv, http.MethodPut, "/v1/keys/again", "", "v")
		return status == http.StatusNoContent, fmt.Sprintf("%d %s", status, b)
	})
}
