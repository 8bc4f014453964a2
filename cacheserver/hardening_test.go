package cacheserver_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/cacheserver"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
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
		status, body, _ := putBody(t, srv, path, "", "v")
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
	status, body, _ := putBody(t, srv, "/v1/batch/set", wire.RecordsContentType,
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

// putBody sends an authorised POST (with contentType) or PUT and returns
// the status and body.
func putBody(t *testing.T, srv *testserver.Server, path, contentType, body string) (int, []byte, http.Header) {
	t.Helper()
	method := http.MethodPut
	if contentType != "" {
		method = http.MethodPost
	}
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
