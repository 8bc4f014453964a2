package cacheserver_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

func TestTLSServesHTTP2(t *testing.T) {
	certFile, keyFile, pool := testserver.SelfSignedCert(t, t.TempDir())
	srv := testserver.Start(t, testserver.Options{Args: []string{"--tls-cert", certFile, "--tls-key", keyFile}})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	base := strings.Replace(srv.URL, "http://", "https://", 1)
	c, err := client.New(base, client.Options{Token: srv.Token, HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Cache("").Set(ctx, kv.TextKey("k"), kv.Text("over tls"), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	it, ok, err := c.Cache("").Get(ctx, kv.TextKey("k"))
	if err != nil || !ok || string(it.Value.Data) != "over tls" {
		t.Fatalf("Get over TLS = %+v %v %v", it, ok, err)
	}
	resp, err := (&http.Client{Transport: tr}).Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("TLS answered with %s, want HTTP/2", resp.Proto)
	}
	// Plain HTTP on the TLS port is refused.
	if resp, err := http.Get(srv.URL + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP answered 200 on the TLS port")
		}
	}
}

func TestUnencryptedHTTP2(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	c, err := client.New(srv.URL, client.Options{Token: srv.Token, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Cache("").Set(ctx, kv.TextKey("k"), kv.Int(7), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	if it, ok, err := c.Cache("").Get(ctx, kv.TextKey("k")); err != nil || !ok || !it.Value.Equal(kv.Int(7)) {
		t.Fatalf("Get over h2c = %+v %v %v", it, ok, err)
	}
	resp, err := hc.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("h2c request answered with %s", resp.Proto)
	}
	// The frames upgrade is HTTP/1.1's: over HTTP/2 a JSON 400, not a 426
	// whose Upgrade header HTTP/2 forbids (the client saw a stream error).
	req, _ := http.NewRequest("GET", srv.URL+"/v1/frames", nil)
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatalf("GET /v1/frames over h2c: %v", err)
	}
	var e wire.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || e.Code != wire.CodeBadRequest {
		t.Fatalf("GET /v1/frames over h2c = %s %+v, want 400 bad_request", resp.Status, e)
	}
}

// peakRSS returns the high-water mark of a process's resident memory.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Skip("no VmHWM in /proc status")
	return 0
}

// TestHugeValueStreamsWithinMemoryBound sends and reads back a value four
// times larger than the memory bound the server process must stay under:
// values stream between the socket and their file, never whole in memory.
func TestHugeValueStreamsWithinMemoryBound(t *testing.T) {
	const size = 256 << 20
	const bound = 64 << 20
	// A value over a database's size limit culls itself on write, as in
	// python-diskcache: give the databases room.
	srv := testserver.Start(t, testserver.Options{Args: []string{"--size-limit", strconv.Itoa(16 << 30)}})
	c, err := client.New(srv.URL, client.Options{Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Cache("").Set(ctx, kv.TextKey("huge"), kv.Value{Type: kv.ValueBytes},
		kv.SetOptions{Body: io.LimitReader(&pattern{}, size)}); err != nil {
		t.Fatal(err)
	}
	st, ok, err := c.Cache("").Open(ctx, kv.TextKey("huge"))
	if err != nil || !ok {
		t.Fatalf("Open = %v %v", ok, err)
	}
	n, err := io.Copy(io.Discard, st)
	st.Close()
	if err != nil || n != size {
		t.Fatalf("read back %d of %d bytes: %v", n, size, err)
	}
	peak := peakRSS(t, srv.PID())
	t.Logf("server peak resident memory: %d MiB", peak>>20)
	if peak > bound {
		t.Fatalf("server peaked at %d MiB resident for a %d MiB value; bound %d MiB", peak>>20, size>>20, bound>>20)
	}
}

// TestHugeValueStreamsThroughForwarding is the same through a shard that
// does not own the key: both the forwarder and the owner stay within the
// bound, so forwarding streams too.
func TestHugeValueStreamsThroughForwarding(t *testing.T) {
	const size = 256 << 20
	const bound = 64 << 20
	cl := testserver.StartCluster(t, 2, testserver.Options{Args: []string{"--size-limit", strconv.Itoa(16 << 30)}})
	c, err := client.New(cl.URLs[0], client.Options{Token: cl.Shards[0].Token, DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	key := ownedBy("huge", 1, 2)
	ctx := context.Background()
	if err := c.Cache("").Set(ctx, kv.TextKey(key), kv.Value{Type: kv.ValueBytes},
		kv.SetOptions{Body: io.LimitReader(&pattern{}, size)}); err != nil {
		t.Fatal(err)
	}
	st, ok, err := c.Cache("").Open(ctx, kv.TextKey(key))
	if err != nil || !ok {
		t.Fatalf("Open = %v %v", ok, err)
	}
	n, err := io.Copy(io.Discard, st)
	st.Close()
	if err != nil || n != size {
		t.Fatalf("read back %d of %d bytes: %v", n, size, err)
	}
	if !onShard(t, cl.Shards[1], key) || onShard(t, cl.Shards[0], key) {
		t.Fatal("the value is not (only) on its owner")
	}
	for i, s := range cl.Shards {
		peak := peakRSS(t, s.PID())
		t.Logf("shard %d peak resident memory: %d MiB", i, peak>>20)
		if peak > bound {
			t.Fatalf("shard %d peaked at %d MiB resident for a %d MiB value; bound %d MiB", i, peak>>20, size>>20, bound>>20)
		}
	}
}
