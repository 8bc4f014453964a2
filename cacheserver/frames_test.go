package cacheserver_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// frameMethodCodes are the method codes of docs/api/frames.md.
var frameMethodCodes = map[string]byte{"GET": 1, "HEAD": 2, "PUT": 3, "POST": 4, "DELETE": 5, "PATCH": 6}

// frameReq is one request to send as a frame.
type frameReq struct {
	method, target string
	header         [][2]string
	body           []byte
}

// encode is the request frame of q, its length first.
func (q frameReq) encode() []byte {
	var p []byte
	p = append(p, frameMethodCodes[q.method])
	p = binary.BigEndian.AppendUint32(p, uint32(len(q.target)))
	p = append(p, q.target...)
	p = append(p, byte(len(q.header)))
	for _, h := range q.header {
		p = append(p, byte(len(h[0])))
		p = append(p, h[0]...)
		p = binary.BigEndian.AppendUint32(p, uint32(len(h[1])))
		p = append(p, h[1]...)
	}
	p = append(p, q.body...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(p))), p...)
}

// frameConn is a client's connection upgraded to frames.
type frameConn struct {
	c net.Conn
	r *bufio.Reader
}

// dialFrames opens a connection to srv and asks for the upgrade with
// token; it returns the connection on 101, else the answer.
func dialFrames(t testing.TB, addr, token string, extra string) (*frameConn, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	head := "GET /v1/frames HTTP/1.1\r\nHost: cache\r\n" + extra
	if token != "" {
		head += "Authorization: Bearer " + token + "\r\n"
	}
	if _, err := io.WriteString(c, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, resp
	}
	return &frameConn{c: c, r: r}, resp
}

const upgradeHeaders = "Connection: Upgrade\r\nUpgrade: " + cacheserver.FramesProtocol + "\r\n"

// frameAnswer is a decoded answer frame.
type frameAnswer struct {
	status int
	header http.Header
	body   []byte
}

// read reads one answer frame.
func (fc *frameConn) read() (frameAnswer, error) {
	var a frameAnswer
	var n [4]byte
	if _, err := io.ReadFull(fc.r, n[:]); err != nil {
		return a, err
	}
	head := make([]byte, binary.BigEndian.Uint32(n[:]))
	if _, err := io.ReadFull(fc.r, head); err != nil {
		return a, err
	}
	a.status = int(binary.BigEndian.Uint16(head))
	count := int(head[2])
	p := head[3:]
	a.header = http.Header{}
	for range count {
		nl := int(p[0])
		name := string(p[1 : 1+nl])
		vl := binary.BigEndian.Uint32(p[1+nl:])
		a.header.Add(name, string(p[5+nl:5+nl+int(vl)]))
		p = p[5+nl+int(vl):]
	}
	if len(p) != 0 {
		return a, fmt.Errorf("%d bytes left in the answer head", len(p))
	}
	for {
		if _, err := io.ReadFull(fc.r, n[:]); err != nil {
			return a, err
		}
		size := binary.BigEndian.Uint32(n[:])
		if size == 0 {
			return a, nil
		}
		chunk := make([]byte, size)
		if _, err := io.ReadFull(fc.r, chunk); err != nil {
			return a, err
		}
		a.body = append(a.body, chunk...)
	}
}

// do sends q and reads its answer.
func (fc *frameConn) do(t *testing.T, q frameReq) frameAnswer {
	t.Helper()
	if _, err := fc.c.Write(q.encode()); err != nil {
		t.Fatal(err)
	}
	a, err := fc.read()
	if err != nil {
		t.Fatalf("%s %s over frames: %v", q.method, q.target, err)
	}
	return a
}

func hostOf(t *testing.T, srv *testserver.Server) string {
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// TestFramesUpgrade: the upgrade is authenticated like every request (401
// JSON without the token), refused with 426 without the Upgrade headers,
// and switches protocols with them.
func TestFramesUpgrade(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	addr := hostOf(t, srv)
	for name, c := range map[string]struct {
		token, extra string
		status       int
		code         string
	}{
		"no token":    {"", upgradeHeaders, http.StatusUnauthorized, wire.CodeUnauthorized},
		"wrong token": {"nope", upgradeHeaders, http.StatusUnauthorized, wire.CodeUnauthorized},
		"no upgrade":  {srv.Token, "", http.StatusUpgradeRequired, wire.CodeUpgradeRequired},
		"other proto": {srv.Token, "Connection: Upgrade\r\nUpgrade: websocket\r\n", http.StatusUpgradeRequired, wire.CodeUpgradeRequired},
	} {
		t.Run(name, func(t *testing.T) {
			fc, resp := dialFrames(t, addr, c.token, c.extra)
			if fc != nil {
				t.Fatal("upgraded")
			}
			var e wire.Error
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != c.status || e.Code != c.code {
				t.Fatalf("%d %+v (%v), want %d %s", resp.StatusCode, e, err, c.status, c.code)
			}
		})
	}
	fc, resp := dialFrames(t, addr, srv.Token, upgradeHeaders)
	if fc == nil {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	if a := fc.do(t, frameReq{method: "GET", target: "/v1/keys/missing"}); a.status != http.StatusNotFound {
		t.Fatalf("GET over frames: %d %s", a.status, a.body)
	}
}

// TestFramesMatchHTTP: every key operation answers over frames what it
// answers over HTTP (status, body and the headers a client reads), the
// same sequence run on two named caches.
func TestFramesMatchHTTP(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Args: []string{"--max-value-bytes", "1000", "--max-key-bytes", "100"}})
	fc, resp := dialFrames(t, hostOf(t, srv), srv.Token, upgradeHeaders)
	if fc == nil {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	tag := [2]string{wire.HeaderTag, "t1"}
	text := [2]string{wire.HeaderValueType, "text"}
	steps := []frameReq{
		{method: "GET", target: "/keys/a"},
		{method: "PUT", target: "/keys/a", header: [][2]string{text, tag}, body: []byte("hello")},
		{method: "GET", target: "/keys/a"},
		{method: "HEAD", target: "/keys/a"},
		{method: "GET", target: "/keys/a?meta=1"},
		{method: "POST", target: "/keys/a/add", body: []byte("x")},
		{method: "POST", target: "/keys/n/incr?delta=5"},
		{method: "POST", target: "/keys/n/incr?delta=2"},
		{method: "POST", target: "/keys/a/incr"},
		{method: "POST", target: "/keys/a/touch?expire=60"},
		{method: "POST", target: "/keys/zz/touch?expire=60"},
		{method: "PUT", target: "/keys/big", body: bytes.Repeat([]byte("v"), 1001)},
		{method: "PUT", target: "/keys/" + strings.Repeat("k", 101), body: []byte("v")},
		{method: "PUT", target: "/keys/b", header: [][2]string{{wire.HeaderValueType, "nonsense"}}, body: []byte("v")},
		{method: "GET", target: "/keys/b?ke=%%%"},
		{method: "POST", target: "/keys/a/pop"},
		{method: "DELETE", target: "/keys/n"},
		{method: "DELETE", target: "/keys/n"},
		{method: "POST", target: "/batch/get", header: [][2]string{{"Content-Type", "application/json"}}, body: []byte(`{"keys":[{"key":"a"},{"key":"n"}]}`)},
		{method: "GET", target: "/stats"},
		// A HEAD answer has no body, a GET route's or an error's.
		{method: "HEAD", target: "/stats"},
		{method: "HEAD", target: "/keys/a?kt=int"},
		// Whitespace around a header value is not part of it.
		{method: "PUT", target: "/keys/w", header: [][2]string{{wire.HeaderValueType, " text\t"}}, body: []byte("v")},
		{method: "GET", target: "/keys/w"},
	}
	// Headers whose values differ between two runs of the same sequence.
	volatile := map[string]bool{"Date": true, "Content-Length": true, wire.HeaderExpireTime: true}
	for _, st := range steps {
		q := st
		q.target = "/v1/caches/frames" + st.target
		a := fc.do(t, q)

		req, err := http.NewRequest(st.method, srv.URL+"/v1/caches/http"+st.target, bytes.NewReader(st.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+srv.Token)
		for _, h := range st.header {
			req.Header.Add(h[0], h[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if a.status != resp.StatusCode || !bytes.Equal(a.body, body) {
			t.Errorf("%s %s: frames %d %q, HTTP %d %q", st.method, st.target, a.status, a.body, resp.StatusCode, body)
		}
		for name := range resp.Header {
			if volatile[name] || name == "Connection" {
				continue
			}
			if !slices.Equal(a.header.Values(name), resp.Header.Values(name)) {
				t.Errorf("%s %s: header %s frames %q, HTTP %q", st.method, st.target, name, a.header.Values(name), resp.Header.Values(name))
			}
		}
		for name := range a.header {
			if _, ok := resp.Header[name]; !ok {
				t.Errorf("%s %s: header %s only over frames", st.method, st.target, name)
			}
		}
		if (a.header.Get(wire.HeaderExpireTime) == "") != (resp.Header.Get(wire.HeaderExpireTime) == "") {
			t.Errorf("%s %s: expire time frames %q, HTTP %q", st.method, st.target, a.header.Get(wire.HeaderExpireTime), resp.Header.Get(wire.HeaderExpireTime))
		}
	}
}

// TestFramesPipelined: frames written together are answered in order.
func TestFramesPipelined(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	fc, resp := dialFrames(t, hostOf(t, srv), srv.Token, upgradeHeaders)
	if fc == nil {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	var out []byte
	const n = 50
	for i := range n {
		out = append(out, frameReq{method: "PUT", target: fmt.Sprintf("/v1/keys/k%d", i), body: []byte(fmt.Sprint(i))}.encode()...)
		out = append(out, frameReq{method: "GET", target: fmt.Sprintf("/v1/keys/k%d", i)}.encode()...)
	}
	if _, err := fc.c.Write(out); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		for j, want := range []int{http.StatusNoContent, http.StatusOK} {
			a, err := fc.read()
			if err != nil {
				t.Fatal(err)
			}
			if a.status != want || (j == 1 && string(a.body) != fmt.Sprint(i)) {
				t.Fatalf("answer %d.%d: %d %q", i, j, a.status, a.body)
			}
		}
	}
}

// TestFramesMalformed: a malformed frame is answered with a 400 JSON error
// and the connection goes on; a frame longer than the limit is answered 413
// and the connection closed.
func TestFramesMalformed(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	fc, resp := dialFrames(t, hostOf(t, srv), srv.Token, upgradeHeaders)
	if fc == nil {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	bad := [][]byte{
		{0, 0, 0, 0},                   // empty
		{0, 0, 0, 6, 9, 0, 0, 0, 1, 0}, // unknown method
		{0, 0, 0, 6, 1, 0, 0, 0, 9, 0}, // target past the end
		frameReq{method: "GET", target: "v1/keys/a"}.encode(),
		frameReq{method: "GET", target: "/v1/keys/a", header: [][2]string{{"Authorization", "Bearer x"}}}.encode(),
		frameReq{method: "GET", target: "/v1/keys/a", header: [][2]string{{"Bad Name", "x"}}}.encode(),
		frameReq{method: "GET", target: "/v1/keys/a", header: [][2]string{{"X-A", "a\r\nb"}}}.encode(),
	}
	for i, b := range bad {
		if _, err := fc.c.Write(b); err != nil {
			t.Fatal(err)
		}
		a, err := fc.read()
		if err != nil {
			t.Fatalf("bad frame %d: %v", i, err)
		}
		var e wire.Error
		if a.status != http.StatusBadRequest || json.Unmarshal(a.body, &e) != nil || e.Code != wire.CodeBadRequest {
			t.Fatalf("bad frame %d: %d %s", i, a.status, a.body)
		}
	}
	if a := fc.do(t, frameReq{method: "GET", target: "/v1/keys/a"}); a.status != http.StatusNotFound {
		t.Fatalf("after the bad frames: %d %s", a.status, a.body)
	}
	if _, err := fc.c.Write(binary.BigEndian.AppendUint32(nil, cacheserver.MaxFrameBytes+1)); err != nil {
		t.Fatal(err)
	}
	a, err := fc.read()
	if err != nil || a.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized frame: %d %s %v", a.status, a.body, err)
	}
	if _, err := fc.read(); err != io.EOF {
		t.Fatalf("after an oversized frame the connection is closed, got %v", err)
	}
}

// TestFramesRetiredToken: a connection upgraded with a token that is then
// retired gets 401 on its next frames.
func TestFramesRetiredToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("first-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testserver.Start(t, testserver.Options{Token: "first-token", TokenFile: path})
	fc, resp := dialFrames(t, hostOf(t, srv), "first-token", upgradeHeaders)
	if fc == nil {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	if a := fc.do(t, frameReq{method: "GET", target: "/v1/keys/a"}); a.status != http.StatusNotFound {
		t.Fatalf("before the rotation: %d", a.status)
	}
	if err := os.WriteFile(path, []byte("second-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 30*time.Second, "the old token is refused over frames", func() (bool, string) {
		a := fc.do(t, frameReq{method: "GET", target: "/v1/keys/a"})
		return a.status == http.StatusUnauthorized, fmt.Sprint(a.status)
	})
}

// TestFramesShutdown: on SIGTERM an idle upgraded connection is closed and
// the server exits cleanly.
func TestFramesShutdown(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	fc, resp := dialFrames(t, hostOf(t, srv), srv.Token, upgradeHeaders)
	if fc == nil {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	fc.do(t, frameReq{method: "PUT", target: "/v1/keys/a", body: []byte("v")})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("stop with an upgraded connection open: %v\n%s", err, srv.Logs())
	}
	if _, err := fc.read(); err == nil {
		t.Fatal("the upgraded connection is still open after shutdown")
	}
}

// FuzzFrames sends arbitrary request frame payloads over an upgraded
// connection to a server in process: each is answered with a well-formed
// answer frame, never 5xx, every 4xx a JSON error with its documented
// status, and the connection serves the next frame.
func FuzzFrames(f *testing.F) {
	for _, q := range []frameReq{
		{method: "GET", target: "/v1/keys/a"},
		{method: "PUT", target: "/v1/keys/a?expire=10&tag=t", header: [][2]string{{wire.HeaderValueType, "int"}}, body: []byte("12")},
		{method: "POST", target: "/v1/keys/a/incr?delta=3"},
		{method: "POST", target: "/v1/caches/c/keys/b/add", header: [][2]string{{wire.HeaderValueType, "text"}, {wire.HeaderTag, "x"}}, body: []byte("v")},
		{method: "DELETE", target: "/v1/keys/%2E"},
		{method: "HEAD", target: "/v1/keys/a?ke=AAE="},
		{method: "POST", target: "/v1/batch/get", body: []byte(`{"keys":[{"key":"a"}]}`)},
		{method: "PATCH", target: "/v1/settings", body: []byte(`{"cull_limit":3}`)},
		{method: "GET", target: "/v1/frames"},
	} {
		f.Add(q.encode()[4:])
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0})
	f.Add([]byte{1, 0, 0, 0, 1, '/', 40, 1, 'a', 0, 0, 0, 0})

	dir := f.TempDir()
	cfg, err := cacheserver.LoadConfig([]string{
		"--data-dir", dir, "--insecure-no-auth", "--fanout", "2",
		"--max-key-bytes", fmt.Sprint(fuzzMaxKey), "--max-value-bytes", fmt.Sprint(fuzzMaxValue),
		"--disk-min-file-size", fmt.Sprint(fuzzFileValue),
	}, func(string) string { return "" })
	if err != nil {
		f.Fatal(err)
	}
	srv, err := cacheserver.New(context.Background(), cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	f.Cleanup(func() { cancel(); <-served })
	addr := l.Addr().String()

	var fc *frameConn
	f.Fuzz(func(t *testing.T, payload []byte) {
		if len(payload) > cacheserver.MaxFrameBytes {
			return
		}
		if fc == nil {
			if fc, _ = dialFrames(t, addr, "", upgradeHeaders); fc == nil {
				t.Fatal("upgrade refused")
			}
			// dialFrames closes it at the end of this input's test.
			t.Cleanup(func() { fc = nil })
		}
		frame := append(binary.BigEndian.AppendUint32(nil, uint32(len(payload))), payload...)
		if _, err := fc.c.Write(frame); err != nil {
			t.Fatal(err)
		}
		a, err := fc.read()
		if err != nil {
			t.Fatalf("no answer frame to %q: %v", truncateBody(payload), err)
		}
		switch {
		case a.status >= 500 || a.status < 200:
			t.Fatalf("frame %q answered %d: %s", truncateBody(payload), a.status, a.body)
		case a.status >= 400 && len(a.body) > 0:
			var e wire.Error
			if err := json.Unmarshal(a.body, &e); err != nil || e.Code == "" {
				t.Fatalf("frame %q: %d with body %q: not a JSON error", truncateBody(payload), a.status, a.body)
			}
			if want, ok := codeStatus[e.Code]; ok && want != a.status {
				t.Fatalf("frame %q: %d with code %q, documented with %d", truncateBody(payload), a.status, e.Code, want)
			}
		}
		if a := fc.do(t, frameReq{method: "GET", target: "/healthz"}); a.status != http.StatusOK {
			t.Fatalf("after %q the connection answers %d", truncateBody(payload), a.status)
		}
	})
}

// TestFramesInACluster: frames to a shard that does not own the key are
// forwarded to the owner like HTTP requests, answers carry the epoch, and
// a forwarded frame that reaches a non-owner is refused with the
// receiver's topology (the one-hop rule).
func TestFramesInACluster(t *testing.T) {
	c := testserver.StartCluster(t, 3, testserver.Options{})
	s := c.Shards[0]
	fc, resp := dialFrames(t, hostOf(t, s), s.Token, upgradeHeaders)
	if fc == nil {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	key := ownedBy("k", 2, 3)
	if a := fc.do(t, frameReq{method: "PUT", target: "/v1/keys/" + key, body: []byte("v")}); a.status != http.StatusNoContent || a.header.Get(wire.HeaderEpoch) != "1" {
		t.Fatalf("PUT of a key of shard 2 via shard 0: %d %v %s", a.status, a.header, a.body)
	}
	st, _, b := do(t, "GET", c.Shards[2].URL+"/v1/keys/"+key, s.Token, nil, map[string]string{wire.HeaderScope: "shard"})
	if st != http.StatusOK || string(b) != "v" {
		t.Fatalf("the owner has %d %q", st, b)
	}
	a := fc.do(t, frameReq{method: "GET", target: "/v1/keys/" + key, header: [][2]string{{wire.HeaderForwardedEpoch, "1"}}})
	if a.status != http.StatusConflict || !bytes.Contains(a.body, []byte(wire.CodeWrongEpoch)) || !bytes.Contains(a.body, []byte(`"topology"`)) {
		t.Fatalf("forwarded frame to a non-owner: %d %s", a.status, a.body)
	}
}

// TestFramesLimits: a frame whose bytes stop arriving is cut at
// --body-timeout (the connection closes), and an upgraded connection keeps
// its slot under --max-connections.
func TestFramesLimits(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Args: []string{"--body-timeout", "100ms", "--max-connections", "1"}})
	fc, resp := dialFrames(t, hostOf(t, srv), srv.Token, upgradeHeaders)
	if fc == nil {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	// The one slot is the upgraded connection's: another is refused (with
	// a 408, since it sends no request).
	other, err := net.Dial("tcp", hostOf(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_ = other.SetReadDeadline(time.Now().Add(hangGuard))
	refusal, err := http.ReadResponse(bufio.NewReader(other), nil)
	if err != nil || refusal.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("a connection beyond the cap while one is upgraded: %v %v", refusal, err)
	}
	// Half a frame, then nothing.
	frame := frameReq{method: "PUT", target: "/v1/keys/a", body: []byte("0123456789")}.encode()
	if _, err := fc.c.Write(frame[:len(frame)-5]); err != nil {
		t.Fatal(err)
	}
	_ = fc.c.SetReadDeadline(time.Now().Add(hangGuard))
	if _, err := fc.read(); err != io.EOF {
		t.Fatalf("a stalled frame: %v, want the connection closed", err)
	}
}

// TestFramesShortcutMatchesHTTP: gets of the server's own cache that memory
// answers take the frames shortcut (frames_hot.go); their answers, and what
// the metrics count, are the handler chain's. Each get is sent twice over
// frames, so that the second finds memory filled (by the set, or by the
// first get's miss), and compared with the same get over HTTP.
func TestFramesShortcutMatchesHTTP(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Args: []string{"--max-key-bytes", "100"}})
	fc, resp := dialFrames(t, hostOf(t, srv), srv.Token, upgradeHeaders)
	if fc == nil {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	put := func(target string, header [][2]string, body string) {
		if a := fc.do(t, frameReq{method: "PUT", target: target, header: header, body: []byte(body)}); a.status != http.StatusNoContent {
			t.Fatalf("PUT %s: %d %s", target, a.status, a.body)
		}
	}
	put("/v1/keys/:1:text", [][2]string{{wire.HeaderValueType, "text"}, {wire.HeaderTag, "t1"}}, "hello")
	put("/v1/keys/int?expire=600", [][2]string{{wire.HeaderValueType, "int"}}, "42")
	put("/v1/keys/float", [][2]string{{wire.HeaderValueType, "float"}}, "1.5")
	put("/v1/keys/pickled", [][2]string{{wire.HeaderValueType, "pickle"}}, "\x80\x05K\x01.")
	put("/v1/keys/raw-_.~!$&'()*+,;=@", nil, "bytes")
	put("/v1/keys/a%3Ab", nil, "escaped") // not for the shortcut: an escape
	put("/v1/keys/"+strings.Repeat("k", 90), nil, "long")
	gets := []string{
		"/v1/keys/:1:text", "/v1/keys/int", "/v1/keys/float", "/v1/keys/pickled",
		"/v1/keys/raw-_.~!$&'()*+,;=@", "/v1/keys/a%3Ab", "/v1/keys/a:b",
		"/v1/keys/missing", "/v1/keys/" + strings.Repeat("k", 90), "/v1/keys/" + strings.Repeat("k", 101),
		"/v1/keys/%2E%2E", "/v1/keys/int?kt=text",
	}
	series := `diskcache_http_requests_total{code="200",method="GET",route="/v1/keys/{key}"}`
	if a := fc.do(t, frameReq{method: "GET", target: "/v1/keys/float"}); a.status != http.StatusOK { // the series starts
		t.Fatalf("GET: %d %s", a.status, a.body)
	}
	before := metricValue(t, srv, series)
	oks := 0
	volatile := map[string]bool{"Date": true, "Content-Length": true, "Connection": true}
	for _, target := range gets {
		var a frameAnswer
		for range 2 {
			a = fc.do(t, frameReq{method: "GET", target: target})
		}
		if a.status == http.StatusOK {
			oks += 2
		}
		status, body, header := send(t, srv, http.MethodGet, target, "", "")
		if status == http.StatusOK {
			oks++
		}
		if a.status != status || !bytes.Equal(a.body, body) {
			t.Errorf("GET %s: frames %d %q, HTTP %d %q", target, a.status, a.body, status, body)
		}
		for name := range header {
			if !volatile[name] && !slices.Equal(a.header.Values(name), header.Values(name)) {
				t.Errorf("GET %s: header %s frames %q, HTTP %q", target, name, a.header.Values(name), header.Values(name))
			}
		}
		for name := range a.header {
			if _, ok := header[name]; !ok && !volatile[name] {
				t.Errorf("GET %s: header %s only over frames", target, name)
			}
		}
	}
	if got := metricValue(t, srv, series) - before; got != float64(oks) {
		t.Errorf("%s rose by %v over %d gets answered 200", series, got, oks)
	}
}

// TestFramesAbandonedWaitDoesNotTakeTheLock: a lock acquire waiting its
// turn over frames, whose client closes the connection (as a forwarding
// shard does when its own client gives up), stops waiting: the lock is
// not taken later for a client that is gone, which no one would release.
func TestFramesAbandonedWaitDoesNotTakeTheLock(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	const acquires = `diskcache_http_request_duration_seconds_count{method="POST",route="/v1/locks/{key}/acquire"}`
	if st, _, b := do(t, "POST", srv.URL+"/v1/locks/k/acquire?owner=B", srv.Token, nil, nil); st != http.StatusOK || !strings.Contains(string(b), `"acquired":true`) {
		t.Fatalf("B acquires: %d %s", st, b)
	}
	fc, resp := dialFrames(t, hostOf(t, srv), srv.Token, upgradeHeaders)
	if fc == nil {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	if _, err := fc.c.Write(frameReq{method: "POST", target: "/v1/locks/k/acquire?owner=A&wait=60"}.encode()); err != nil {
		t.Fatal(err)
	}
	_ = fc.c.Close()
	// A's request ends once the server sees its client gone, long before
	// its wait (bounded by the request timeout, 30 s) would.
	deadline := time.Now().Add(15 * time.Second)
	for metricValue(t, srv, acquires) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the acquire went on waiting after its client closed the connection")
		}
		time.Sleep(20 * time.Millisecond) // a poll's pace
	}
	if n := metricValue(t, srv, `diskcache_waiting_requests`); n != 0 {
		t.Fatalf("diskcache_waiting_requests %v after the wait ended, want 0", n)
	}
	if st, _, b := do(t, "POST", srv.URL+"/v1/locks/k/release?owner=B", srv.Token, nil, nil); st != http.StatusOK {
		t.Fatalf("B releases: %d %s", st, b)
	}
	if st, _, b := do(t, "GET", srv.URL+"/v1/locks/k", srv.Token, nil, nil); st != http.StatusOK || !strings.Contains(string(b), `"locked":false`) {
		t.Fatalf("the lock after B released it: %d %s; want it free", st, b)
	}
}

// TestShutdownEndsLockWaits: a server asked to stop answers the acquires
// waiting for their turn at once (not acquired) instead of holding its
// shutdown up for as long as they asked to wait.
func TestShutdownEndsLockWaits(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	if st, _, b := do(t, "POST", srv.URL+"/v1/locks/k/acquire?owner=B", srv.Token, nil, nil); st != http.StatusOK {
		t.Fatalf("B acquires: %d %s", st, b)
	}
	// A's acquire waits for B's lock before the shutdown starts.
	c, err := net.Dial("tcp", hostOf(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "POST /v1/locks/k/acquire?owner=A&wait=3600 HTTP/1.1\r\nHost: cache\r\nAuthorization: Bearer %s\r\nContent-Length: 0\r\n\r\n", srv.Token); err != nil {
		t.Fatal(err)
	}
	waitsFor(t, srv, "A's acquire")
	// The shutdown timeout (25 s) and the request timeout (30 s) are both
	// shorter than A's wait: without the end of waits, the shutdown is cut
	// at 25 s and A's connection closes without an answer.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("A's acquire during the shutdown: %v; want an answer", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"acquired":false`) {
		t.Fatalf("A's acquire during the shutdown: %d %s; want 200 and not acquired", resp.StatusCode, b)
	}
}

// TestStalledServerDoesNotTakeALockLate: a waiter whose server was stopped
// past the end of its wait answers "not acquired" when the server runs
// again, without a last try: its client may have given up meanwhile (a
// socket timeout), and a lock taken then is held by a token no one has,
// for ever without a ttl. The holder's ttl runs out during the stop, so a
// late try would have got the lock.
func TestStalledServerDoesNotTakeALockLate(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Args: []string{"--metrics-interval", "0"}})
	if st, _, b := do(t, "POST", srv.URL+"/v1/locks/k/acquire?owner=H&ttl=1", srv.Token, nil, nil); st != http.StatusOK || !strings.Contains(string(b), `"acquired":true`) {
		t.Fatalf("H acquires: %d %s", st, b)
	}
	answer := make(chan string, 1)
	go func() {
		_, _, b := do(t, "POST", srv.URL+"/v1/locks/k/acquire?owner=W&wait=1", srv.Token, nil, nil)
		answer <- string(b)
	}()
	waitsFor(t, srv, "W's acquire")
	srv.Freeze(t)
	time.Sleep(2500 * time.Millisecond) // the stall: past W's wait and H's ttl
	srv.Thaw(t)
	if b := <-answer; !strings.Contains(b, `"acquired":false`) {
		t.Fatalf("W's acquire after the stall: %s; want not acquired", b)
	}
	if st, _, b := do(t, "GET", srv.URL+"/v1/locks/k", srv.Token, nil, nil); st != http.StatusOK || !strings.Contains(string(b), `"locked":false`) {
		t.Fatalf("the lock after the stall: %d %s; want it free", st, b)
	}
}

// waitsFor returns once srv has a request waiting for a lock or semaphore
// (diskcache_waiting_requests), which what names.
func waitsFor(t *testing.T, srv *testserver.Server, what string) {
	t.Helper()
	pollUntil(t, 15*time.Second, what+" waits", func() (bool, string) {
		n := metricValue(t, srv, `diskcache_waiting_requests`)
		return n >= 1, fmt.Sprintf("%v waiting", n)
	})
}
