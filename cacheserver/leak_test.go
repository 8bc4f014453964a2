package cacheserver_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// Leak test load: requests per round and how many run at once.
const (
	leakKeepAliveRequests = 1500
	leakFreshConnRequests = 300
	leakAborted           = 40
	leakWorkers           = 8
	leakSlack             = 2 // fds and goroutines allowed above the baseline
	leakCaches            = 5 // --fanout 4 databases and one named cache
)

// procState is what the test watches in the server process: its open file
// descriptors by kind and its goroutines.
type procState struct {
	fds        int // all of them
	sockets    int // the listener and connections
	sqlite     int // SQLite databases and their -wal and -shm files
	valueFiles int // .val files
	other      int // the rest: pipes, epoll, /dev/null, ...
	goroutines int
}

func (p procState) String() string {
	return fmt.Sprintf("%d fds (%d sockets, %d SQLite, %d value files, %d other), %d goroutines",
		p.fds, p.sockets, p.sqlite, p.valueFiles, p.other, p.goroutines)
}

// readProcState counts the server's open file descriptors in /proc by
// kind and reads go_goroutines from /metrics (over a connection of its
// own, closed after the scrape).
func readProcState(t *testing.T, srv *testserver.Server) procState {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", srv.PID())
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var st procState
	for _, e := range ents {
		target, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed while listing
		}
		st.fds++
		switch {
		case strings.HasPrefix(target, "socket:"):
			st.sockets++
		case strings.Contains(target, engine.DBName):
			st.sqlite++
		case strings.HasSuffix(target, ".val"):
			st.valueFiles++
		default:
			st.other++
		}
	}
	scrape := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := scrape.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("go_goroutines %q", v)
			}
			st.goroutines = int(f)
		}
	}
	if st.goroutines == 0 {
		t.Fatal("/metrics has no go_goroutines")
	}
	return st
}

// waitQuiet polls until the server holds no connection but its listener
// (the scrape's own connection aside) and ok accepts its state, or fails
// after the deadline with the last state seen.
func waitQuiet(t *testing.T, srv *testserver.Server, what string, ok func(procState) bool) procState {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st := readProcState(t, srv)
		// The scrape's connection may still be open on the server side
		// when /proc is read on the next round; one socket is the listener.
		if st.sockets <= 2 && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the server did not settle within 30s: %s", what, st)
		}
		<-tick.C
	}
}

// leakLoad sends a mix of requests: sets and gets of small and file-backed
// values (on the server's cache and a named cache), misses, 4xx answers,
// batch requests, and, on fresh connections, downloads abandoned half way
// and uploads cut off half way.
func leakLoad(t *testing.T, srv *testserver.Server, requests int, keepAlive bool) {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: leakWorkers}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	c, err := client.New(srv.URL, client.Options{Token: srv.Token, HTTPClient: hc, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	small := []byte("small value")
	big := bytes.Repeat([]byte("0123456789abcdef"), 5<<10) // 80 KiB: a value file
	var wg sync.WaitGroup
	errs := make(chan error, leakWorkers)
	for w := range leakWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < requests; i += leakWorkers {
				cache := c.Cache("")
				if i%5 == 4 {
					cache = c.Cache("leak/named")
				}
				key := kv.TextKey(fmt.Sprintf("k%d", i%64))
				var err error
				switch i % 8 {
				case 0:
					err = cache.Set(ctx, key, kv.Bytes(small), kv.SetOptions{})
				case 1:
					err = cache.Set(ctx, key, kv.Bytes(big), kv.SetOptions{})
				case 2, 3:
					_, _, err = cache.Get(ctx, key)
				case 4:
					_, _, err = cache.Get(ctx, kv.TextKey(fmt.Sprintf("missing-%d", i)))
				case 5:
					_, err = cache.Incr(ctx, kv.TextKey("leak-counter"), kv.Int(1), kv.Int(0))
				case 6:
					_, err = cache.GetMany(ctx, []kv.Key{key, kv.TextKey("k1"), kv.TextKey("nope")})
				case 7:
					// Mostly a 409 not_numeric: k0 holds bytes.
					_, err = cache.Incr(ctx, kv.TextKey("k0"), kv.Int(1), kv.Int(0))
					if errors.Is(err, client.ErrNotNumeric) || err == nil {
						err = nil
					}
				}
				if err != nil {
					errs <- fmt.Errorf("request %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if keepAlive {
		return
	}
	// Abandoned downloads and cut-off uploads, each on its own connection.
	if err := c.Cache("").Set(ctx, kv.TextKey("huge"), kv.Bytes(bytes.Repeat([]byte{7}, 4<<20)), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range leakAborted {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/keys/huge", nil)
		req.Header.Set("Authorization", "Bearer "+srv.Token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, resp.Body, 64<<10); err != nil {
			t.Fatalf("download %d: %v", i, err)
		}
		resp.Body.Close() // half read: the transport closes the connection

		req, _ = http.NewRequest(http.MethodPut, srv.URL+fmt.Sprintf("/v1/keys/upload-%d", i),
			io.MultiReader(bytes.NewReader(big), failingReader{}))
		req.Header.Set("Authorization", "Bearer "+srv.Token)
		req.Header.Set(wire.HeaderValueType, "bytes")
		req.ContentLength = 4 << 20
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("upload %d cut off half way answered %d", i, resp.StatusCode)
		}
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("client gave up") }

// TestNoLeaksUnderLoad runs a load of keep-alive requests and one of
// requests on fresh connections (with abandoned downloads and cut-off
// uploads) against a real cacheserver process, and checks that afterwards
// its open file descriptors (/proc/<pid>/fd) and goroutines (go_goroutines
// on /metrics) come back to what they were after a warm-up round of the
// same load: sockets back to the listener, no value file open, other
// descriptors and goroutines within leakSlack, SQLite descriptors within
// the bound of the connection pools; and that the cut-off uploads left no
// value files behind (check reports nothing).
func TestNoLeaksUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a load against a cacheserver process")
	}
	srv := testserver.Start(t, testserver.Options{Args: []string{"--fanout", "4"}})

	// Warm-up: opens every database's and the named cache's SQLite
	// connections (kept in pools), value file directories and so on.
	leakLoad(t, srv, leakKeepAliveRequests/3, true)
	leakLoad(t, srv, leakFreshConnRequests/3, false)
	// The baseline is the first quiet state seen twice in a row.
	var prev procState
	base := waitQuiet(t, srv, "after warm-up", func(st procState) bool {
		same := st == prev
		prev = st
		return same
	})
	t.Logf("baseline: %s", base)

	// SQLite connections are pooled, not leaked: each cache keeps up to
	// 2×GOMAXPROCS+2 of them (a database and a WAL descriptor each, and one
	// -shm per database) once that many requests have hit it at once. So
	// SQLite descriptors may grow up to that bound; every other kind must
	// come back to the baseline.
	procs := runtime.NumCPU()
	if n, err := strconv.Atoi(os.Getenv("GOMAXPROCS")); err == nil && n > procs {
		procs = n
	}
	sqliteBound := leakCaches * (2*(2*procs+2) + 1)
	settled := func(st procState) bool {
		return st.valueFiles == 0 && st.other <= base.other+leakSlack && st.sqlite <= sqliteBound &&
			st.goroutines <= base.goroutines+leakSlack
	}
	leakLoad(t, srv, leakKeepAliveRequests, true)
	after := waitQuiet(t, srv, "after the keep-alive load", settled)
	t.Logf("after %d keep-alive requests: %s", leakKeepAliveRequests, after)

	leakLoad(t, srv, leakFreshConnRequests, false)
	after = waitQuiet(t, srv, "after the fresh-connection load", settled)
	t.Logf("after %d requests on fresh connections and %d aborted transfers each way: %s",
		leakFreshConnRequests, leakAborted, after)

	c, err := client.New(srv.URL, client.Options{Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	if warns, err := c.Cache("").Check(context.Background(), false); err != nil || len(warns) != 0 {
		t.Fatalf("check after the load = %+v, %v", warns, err)
	}
}
