package cacheserver_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// TestWriteItsClientGaveUpMidwayIsDropped: a shard that has taken a
// write, and checked its client was there, finds the client gone by the
// time it would forward the write (another shard's key) or apply it (its
// own): it does neither (499). That is what a shard stopped mid-request (a
// frozen pod) finds when it runs again, its client having given up seconds
// earlier and written the key since through another shard: forwarded or
// applied then, the old write would land over the acknowledged one. Here
// the client closes its side in the very segment that ends the body, after
// the shard has begun to read it (its 100 Continue), so the check before
// the handler has passed and only the later ones can see it.
func TestWriteItsClientGaveUpMidwayIsDropped(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	s0, s1 := c.Shards[0], c.Shards[1]
	key := ownedBy("midway", 1, 2)
	if st, _, b := do(t, "PUT", s0.URL+"/v1/keys/"+key, s0.Token, []byte("first"), nil); st != http.StatusNoContent {
		t.Fatalf("PUT through shard 0: %d %s", st, b)
	}
	_, droppedBefore := keyPuts(t, s0)

	send := func(srv *testserver.Server, value string, giveUp bool) string {
		t.Helper()
		conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := fmt.Fprintf(conn, "PUT /v1/keys/%s HTTP/1.1\r\nHost: s0\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", key, srv.Token, len(value)); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusContinue {
			t.Fatalf("want 100 Continue once the handler reads the body: %v, %v", resp, err)
		}
		tc := conn.(*net.TCPConn)
		if giveUp {
			// Corked, the body waits in the socket and the FIN of the
			// shutdown leaves in its segment: the shard reads the body's
			// end and the connection's together.
			rc, err := tc.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1) }); err != nil || serr != nil {
				t.Fatalf("TCP_CORK: %v %v", err, serr)
			}
		}
		if _, err := io.WriteString(conn, value); err != nil {
			t.Fatal(err)
		}
		if giveUp {
			if err := tc.CloseWrite(); err != nil {
				t.Fatal(err)
			}
		}
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			return err.Error() // a client that gave up reads no answer
		}
		resp.Body.Close()
		return resp.Status
	}

	// The same request from a client that waits is forwarded.
	if got := send(s0, "waited", false); !strings.HasPrefix(got, "204") {
		t.Fatalf("PUT with 100-continue through shard 0: %s", got)
	}
	if st, _, b := do(t, "GET", s1.URL+"/v1/keys/"+key, s1.Token, nil, nil); st != http.StatusOK || string(b) != "waited" {
		t.Fatalf("the key after a PUT whose client waited: %d %q", st, b)
	}
	answer := send(s0, "given up", true)
	if st, _, b := do(t, "GET", s1.URL+"/v1/keys/"+key, s1.Token, nil, nil); st != http.StatusOK || string(b) != "waited" {
		t.Errorf("the key after a PUT whose client gave up midway (answered %s): %d %q, want \"waited\" still", answer, st, b)
	}
	if _, dropped := keyPuts(t, s0); dropped != droppedBefore+1 {
		t.Errorf("shard 0 dropped (499) %v PUTs, want 1", dropped-droppedBefore)
	}

	// The owner itself, asked directly, applies no write whose client has
	// gone when its turn to be written comes.
	_, droppedBefore = keyPuts(t, s1)
	answer = send(s1, "given up at the owner", true)
	if st, _, b := do(t, "GET", s1.URL+"/v1/keys/"+key, s1.Token, nil, nil); st != http.StatusOK || string(b) != "waited" {
		t.Errorf("the key after a PUT to its owner whose client gave up midway (answered %s): %d %q, want \"waited\" still", answer, st, b)
	}
	if _, dropped := keyPuts(t, s1); dropped != droppedBefore+1 {
		t.Errorf("shard 1 dropped (499) %v PUTs, want 1", dropped-droppedBefore)
	}
}
