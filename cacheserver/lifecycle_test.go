package cacheserver_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// pollUntil calls cond until it reports true or timeout passes. The server
// checks its files at most once a second, so a test can only poll for what
// it changed on disk.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", what, timeout, state)
		}
		<-tick.C
	}
}

// statusWithToken answers the status of a GET of path with token.
func statusWithToken(t *testing.T, srv *testserver.Server, path, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// tokenLayout writes a token file the way something outside the server
// rotates it; it returns the path the server reads and the rotation.
type tokenLayout func(t *testing.T, dir, first string) (path string, rotate func(token string))

// plainFile rewrites the file in place.
func plainFile(t *testing.T, dir, first string) (string, func(string)) {
	path := filepath.Join(dir, "token")
	write := func(tok string) {
		if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(first)
	return path, write
}

// projectedSecret lays the file out as the kubelet's atomic writer does for
// a mounted Secret: the data in a timestamped directory, "..data" a
// symlink to it, "token" a symlink through "..data". A rotation writes a
// new directory and renames a new "..data" symlink over the old one.
func projectedSecret(t *testing.T, dir, first string) (string, func(string)) {
	gen := 0
	swap := func(tok string) {
		gen++
		ts := fmt.Sprintf("..2026_12_04_21_00_%02d.%09d", gen, gen)
		if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, ts, "token"), []byte(tok), 0o644); err != nil {
			t.Fatal(err)
		}
		old, _ := os.Readlink(filepath.Join(dir, "..data"))
		if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		if old != "" {
			if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
				t.Fatal(err)
			}
		}
	}
	swap(first)
	if err := os.Symlink(filepath.Join("..data", "token"), filepath.Join(dir, "token")); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "token"), swap
}

// TestTokenFileRotation: a running server takes a new token from its token
// file without a restart, both when the file is rewritten and when a
// mounted Secret's "..data" symlink is swapped to a new directory.
func TestTokenFileRotation(t *testing.T) {
	for name, layout := range map[string]tokenLayout{"rewrite": plainFile, "symlink swap": projectedSecret} {
		t.Run(name, func(t *testing.T) {
			path, rotate := layout(t, t.TempDir(), "first-token")
			srv := testserver.Start(t, testserver.Options{Token: "first-token", TokenFile: path})
			if got := statusWithToken(t, srv, "/v1/info", "first-token"); got != http.StatusOK {
				t.Fatalf("first token: %d", got)
			}
			if got := statusWithToken(t, srv, "/v1/info", "second-token"); got != http.StatusUnauthorized {
				t.Fatalf("second token before the rotation: %d, want 401", got)
			}
			for _, tok := range []string{"second-token", "third-token"} {
				rotate(tok)
				pollUntil(t, 30*time.Second, "the server accepts "+tok, func() (bool, string) {
					got := statusWithToken(t, srv, "/v1/info", tok)
					return got == http.StatusOK, fmt.Sprintf("status %d", got)
				})
			}
		})
	}
}

// TestUnreadableTokenFileIsLogged: a token file that goes away (or is
// emptied) leaves the tokens read last accepted, as while the kubelet swaps
// a mounted Secret, but the server says so, once, and says when it can read
// the file again; it was silent.
func TestUnreadableTokenFileIsLogged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("first-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testserver.Start(t, testserver.Options{Token: "first-token", TokenFile: path})
	const warned, back = "cannot read the token file", "the token file can be read again"
	for _, gone := range []func(){
		func() { _ = os.Remove(path) },
		func() { _ = os.WriteFile(path, nil, 0o600) },
	} {
		before := strings.Count(srv.Logs(), warned)
		gone()
		pollUntil(t, 30*time.Second, "the server warns about its token file", func() (bool, string) {
			got := statusWithToken(t, srv, "/v1/info", "first-token")
			return got == http.StatusOK && strings.Count(srv.Logs(), warned) == before+1, fmt.Sprintf("status %d", got)
		})
		if err := os.WriteFile(path, []byte("first-token\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		pollUntil(t, 30*time.Second, "the server reads its token file again", func() (bool, string) {
			got := statusWithToken(t, srv, "/v1/info", "first-token")
			return got == http.StatusOK && strings.Count(srv.Logs(), back) == strings.Count(srv.Logs(), warned), fmt.Sprintf("status %d", got)
		})
	}
	if n := strings.Count(srv.Logs(), warned); n != 2 {
		t.Fatalf("%d warnings for two outages of the token file, want one each:\n%s", n, srv.Logs())
	}
}

// TestTokenSetDuringRotation: beside the token file, the server accepts the
// tokens of <file>.next and <file>.previous while they exist, takes them
// from a mounted Secret's "..data" swap, and reports their fingerprints in
// GET /v1/config to the admin token only.
func TestTokenSetDuringRotation(t *testing.T) {
	dir := t.TempDir()
	gen := 0
	// swap lays the files out as the kubelet does for a mounted Secret
	// with the keys token, token.next and token.previous.
	swap := func(files map[string]string) {
		gen++
		ts := fmt.Sprintf("..2026_12_04_22_00_%02d.%09d", gen, gen)
		if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, tok := range files {
			if err := os.WriteFile(filepath.Join(dir, ts, name), []byte(tok), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"token", "token.next", "token.previous"} {
			link := filepath.Join(dir, name)
			_, has := files[name]
			if _, err := os.Lstat(link); err == nil && !has {
				_ = os.Remove(link)
			} else if err != nil && has {
				if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	swap(map[string]string{"token": "old-token"})
	adminFile := filepath.Join(t.TempDir(), "admin")
	if err := os.WriteFile(adminFile, []byte("the-admin-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testserver.Start(t, testserver.Options{Token: "old-token", TokenFile: filepath.Join(dir, "token"),
		Args: []string{"--admin-token-file", adminFile}})

	fingerprints := func(tok string) []string {
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/v1/config", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var c struct {
			Fingerprints []string `json:"token_fingerprints"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/config: %s, %v", resp.Status, err)
		}
		return c.Fingerprints
	}
	accepted := func(toks ...string) func() (bool, string) {
		return func() (bool, string) {
			var state []string
			ok := true
			for _, tok := range []string{"old-token", "new-token"} {
				got := statusWithToken(t, srv, "/v1/info", tok)
				want := http.StatusUnauthorized
				if slices.Contains(toks, tok) {
					want = http.StatusOK
				}
				ok = ok && got == want
				state = append(state, fmt.Sprintf("%s: %d", tok, got))
			}
			return ok, strings.Join(state, ", ")
		}
	}
	if ok, state := accepted("old-token")(); !ok {
		t.Fatalf("before the rotation: %s", state)
	}

	// The new token comes in as next: both are accepted.
	swap(map[string]string{"token": "old-token", "token.next": "new-token"})
	pollUntil(t, 30*time.Second, "old and next token accepted", accepted("old-token", "new-token"))
	want := []string{wire.TokenFingerprint("old-token"), wire.TokenFingerprint("new-token")}
	if got := fingerprints("the-admin-token"); !slices.Equal(got, want) {
		t.Errorf("fingerprints = %v, want %v", got, want)
	}
	if got := fingerprints("new-token"); got != nil {
		t.Errorf("the data token was shown the fingerprints %v", got)
	}

	// The new token becomes current, the old one previous: still both.
	swap(map[string]string{"token": "new-token", "token.previous": "old-token"})
	pollUntil(t, 30*time.Second, "current token switched", func() (bool, string) {
		got := fingerprints("the-admin-token")
		return len(got) > 0 && got[0] == wire.TokenFingerprint("new-token"), fmt.Sprint(got)
	})
	if ok, state := accepted("old-token", "new-token")(); !ok {
		t.Errorf("after the switch: %s", state)
	}

	// The old token is retired.
	swap(map[string]string{"token": "new-token"})
	pollUntil(t, 30*time.Second, "old token retired", accepted("new-token"))
}

// TestSIGTERMDrainsInFlightRequests: a PUT whose body is still arriving
// when SIGTERM comes completes and is stored; meanwhile the server accepts
// no new connections (refused, never cut mid-response), and exits cleanly
// once the PUT is done.
func TestSIGTERMDrainsInFlightRequests(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	value := bytes.Repeat([]byte("drain me "), 100<<10/9) // a value file, streamed

	conn, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Expect: 100-continue makes the server say when the handler starts
	// reading the body: from then on the request is in flight.
	fmt.Fprintf(conn, "PUT /v1/keys/in-flight HTTP/1.1\r\nHost: cacheserver\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/octet-stream\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", srv.Token, len(value))
	br := bufio.NewReader(conn)
	cont, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cont.StatusCode != http.StatusContinue {
		t.Fatalf("PUT answered %s before its body", cont.Status)
	}
	half := len(value) / 2
	if _, err := conn.Write(value[:half]); err != nil {
		t.Fatal(err)
	}

	if err := syscall.Kill(srv.PID(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 30*time.Second, "shutdown begins", func() (bool, string) {
		return strings.Contains(srv.Logs(), `"msg":"shutting down"`), "no shutdown log"
	})
	// New connections: refused once the listener is closed. Until then a
	// request may still be answered, but never cut off.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	pollUntil(t, 30*time.Second, "new connections refused", func() (bool, string) {
		resp, err := fresh.Get(srv.URL + "/healthz")
		if err != nil {
			return errors.Is(err, syscall.ECONNREFUSED), err.Error()
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatalf("a request during shutdown was cut mid-response: %v", err)
		}
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("a request during shutdown got %s", resp.Status)
		}
		return false, "still accepting: " + resp.Status
	})

	if _, err := conn.Write(value[half:]); err != nil {
		t.Fatalf("the in-flight PUT was cut off by SIGTERM: %v", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the in-flight PUT got no answer after SIGTERM: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("the in-flight PUT answered %s: %s", resp.Status, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, srv.Logs())
	}
	srv.Restart(t)
	c, err := client.New(srv.URL, client.Options{Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	it, ok, err := c.Cache("").Get(context.Background(), kv.TextKey("in-flight"))
	if err != nil || !ok || !bytes.Equal(it.Value.Data, value) {
		t.Fatalf("after the restart the drained PUT reads %d bytes, found %v, %v", len(it.Value.Data), ok, err)
	}
}

// TestConfigReportsStartUpValues: GET /v1/config answers what the server
// was started with, from the engine where it applies them.
func TestConfigReportsStartUpValues(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Args: []string{"--fanout", "3", "--database-timeout", "2500ms",
		"--max-key-bytes", "1000", "--request-timeout", "45s", "--fsync-value-files", "--metrics-require-token"},
		Env: []string{"GODEBUG=http2client=0", "GOMEMLIMIT="}})
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/v1/config", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/config: %s, %v", resp.Status, err)
	}
	want := map[string]any{"fanout": 3.0, "database_timeout_seconds": 2.5, "max_key_bytes": 1000.0,
		"max_value_bytes": float64(1 << 40), "request_timeout_seconds": 45.0, "tls": false,
		"fsync_value_files": true, "metrics_require_token": true, "quarantined": []any{}, "disk_full": false,
		"page_size": 2048.0, "database_page_sizes": []any{2048.0, 2048.0, 2048.0},
		"go_debug": "http2client=0,schedtrace=2147483647", "memory_limit_bytes": 0.0, "go_memory_limit_bytes": 0.0}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GET /v1/config = %v, want %v", got, want)
	}
	if got := statusWithToken(t, srv, "/v1/config", "wrong"); got != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", got)
	}
}

// TestServerRunsWithSysmonSetting checks that the server runs with
// schedtrace added to GODEBUG (cmd/cacheserver/sysmon.go: it keeps the Go
// runtime's monitor thread from sleeping deeply and waking at every
// request), next to what GODEBUG already held, and that a GODEBUG that sets
// schedtrace itself, the way to opt out, is left as it is. GET /v1/config
// reports the GODEBUG the process runs with.
func TestServerRunsWithSysmonSetting(t *testing.T) {
	for _, c := range []struct{ env, want string }{
		{"GODEBUG=http2client=0", "http2client=0,schedtrace=2147483647"},
		{"GODEBUG=schedtrace=0", "schedtrace=0"},
	} {
		srv := testserver.Start(t, testserver.Options{Env: []string{c.env}})
		cfg := serverConfig(t, srv)
		if cfg.GoDebug != c.want {
			t.Errorf("server started with %s runs with GODEBUG=%s, want %s", c.env, cfg.GoDebug, c.want)
		}
	}
}

// TestOtherFanoutRefused restarts a server on its data directory with
// another --fanout: it exits at once saying why, instead of hashing the keys
// to other databases (where they would read as misses, and come back stale
// with the old fanout); with its own fanout it serves them all.
func TestOtherFanoutRefused(t *testing.T) {
	srv, c := startServer(t)
	for i := range 100 {
		if err := c.Cache("").Set(t.Context(), kv.IntKey(int64(i)), kv.Int(int64(i)), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"4", "16"} {
		// Bounded: a server that does not refuse would serve on.
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		cmd := exec.CommandContext(ctx, testserver.Binary(t), "--data-dir", srv.DataDir, "--listen", "127.0.0.1:0", "--insecure-no-auth", "--fanout", n)
		out, err := cmd.CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || timedOut {
			t.Fatalf("--fanout %s on a directory of 8: %v, want a non-zero exit\n%s", n, err, out)
		}
		if !strings.Contains(string(out), "--fanout "+n) || !strings.Contains(string(out), "made for another fanout") {
			t.Fatalf("--fanout %s: the output does not say why it stopped:\n%s", n, out)
		}
	}
	srv.Restart(t)
	c, err := client.New(srv.URL, client.Options{Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if it, ok, err := c.Cache("").Get(t.Context(), kv.IntKey(int64(i))); err != nil || !ok || !it.Value.Equal(kv.Int(int64(i))) {
			t.Fatalf("key %d after the refused starts: %+v, %v, %v", i, it, ok, err)
		}
	}
}

// A request still running when --shutdown-timeout ends is cut off, and the
// server says so as it exits (it said "context deadline exceeded").
func TestShutdownTimeoutSaysRequestsWereCutOff(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{Args: []string{"--shutdown-timeout", "200ms"}})
	big := strings.Repeat("v", 64<<20) // far more than the sockets hold
	if status, b, _ := send(t, srv, http.MethodPut, "/v1/keys/big", "", big); status != http.StatusNoContent {
		t.Fatalf("put: %d %s", status, b)
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A get whose answer the client stops reading after its head: the
	// handler is left writing.
	fmt.Fprintf(conn, "GET /v1/keys/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", srv.Token)
	if _, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil {
		t.Fatal(err)
	}
	err = srv.Stop(t.Context())
	if err == nil || !strings.Contains(srv.Logs(), "requests still running after --shutdown-timeout 200ms were cut off") {
		t.Errorf("exit after the shutdown timeout: %v\n%s", err, srv.Logs())
	}
}
