package cacheserver_test

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// TestForwardedBodyFailuresAreTheClients: a request whose body is broken
// or stalls is answered as the client's error whether the shard asked owns
// its key or forwards it: 400 bad_request for a malformed chunk, 408
// body_timeout for a body that stops coming (with or without a length).
// Forwarded, these were 503 shard_unavailable or 504 shard_timeout ("may
// have been applied"), blaming a healthy owner for the client's body.
func TestForwardedBodyFailuresAreTheClients(t *testing.T) {
	c := testserver.StartCluster(t, 3, testserver.Options{Args: []string{"--body-timeout", "1s"}})
	tok := c.Shards[0].Token
	key, name := ownedBy("body", 1, 3), ownedBy("bodyq", 1, 3)
	cases := []struct {
		name, path, head, body string
		status                 int
		code                   string
	}{
		{"malformed chunk", "/v1/keys/" + key, "Transfer-Encoding: chunked", "5\r\nhelloXX\r\n0\r\n\r\n",
			http.StatusBadRequest, wire.CodeBadRequest},
		{"malformed chunk, deque push", "/v1/deques/" + name + "/push", "Transfer-Encoding: chunked", "5\r\nhelloXX\r\n0\r\n\r\n",
			http.StatusBadRequest, wire.CodeBadRequest},
		{"stalled body with a length", "/v1/keys/" + key, "Content-Length: 100000", "first bytes",
			http.StatusRequestTimeout, wire.CodeBodyTimeout},
		{"stalled JSON body", "/v1/batch/get", "Content-Length: 1000", `{"keys": [`,
			http.StatusRequestTimeout, wire.CodeBodyTimeout},
		{"stalled JSON body, evict", "/v1/evict", "Content-Length: 1000", `{"tag": `,
			http.StatusRequestTimeout, wire.CodeBodyTimeout},
		{"stalled chunked body", "/v1/keys/" + key, "Transfer-Encoding: chunked", "5\r\nfirst\r\n",
			http.StatusRequestTimeout, wire.CodeBodyTimeout},
	}
	for _, tc := range cases {
		for _, shard := range []int{1, 0} {
			method := "PUT"
			if tc.path != "/v1/keys/"+key {
				method = "POST"
			}
			conn, err := net.Dial("tcp", c.Shards[shard].Addr)
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(hangGuard))
			if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s\r\n\r\n%s",
				method, tc.path, tok, tc.head, tc.body); err != nil {
				t.Fatal(err)
			}
			status, code, _ := readAnswer(t, conn)
			conn.Close()
			if status != tc.status || code != tc.code {
				t.Errorf("%s through shard %d: %d %s; want %d %s", tc.name, shard, status, code, tc.status, tc.code)
			}
		}
	}
	if st, _, body := do(t, "GET", c.Shards[1].URL+"/v1/keys/"+key, tok, nil, nil); st != http.StatusNotFound {
		t.Errorf("after the broken bodies, the key: %d %s; want 404", st, body)
	}
	if st, _, body := do(t, "GET", c.Shards[1].URL+"/v1/deques/"+name, tok, nil, nil); st != http.StatusOK || !strings.Contains(string(body), `"len":0`) {
		t.Errorf("after the broken bodies, the deque: %d %s; want it empty", st, body)
	}
}
