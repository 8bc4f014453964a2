package maintenance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

const testToken = "maintenance-token"

func newClient(t *testing.T, url string) *cacheclient.Cache {
	t.Helper()
	c, err := cacheclient.New(url, cacheclient.Options{Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	return c.Cache("")
}

func fill(t *testing.T, c *cacheclient.Cache, prefix string, n, size int, expire kv.Expiry) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		v := bytes.Repeat([]byte{byte('a' + i%26)}, size)
		if err := c.Set(ctx, kv.TextKey(fmt.Sprintf("%s-%d", prefix, i)), kv.Bytes(v), kv.SetOptions{Expire: expire}); err != nil {
			t.Fatal(err)
		}
	}
}

func info(t *testing.T, c *cacheclient.Cache) cacheclient.Info {
	t.Helper()
	in, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// TestRunnerEndToEnd runs maintenance against three real cacheserver
// processes on loopback: shard 0 holds expired items, shard 1 is over its
// size limit (and holds expired items too), shard 2 was killed before the
// run. Writes do not cull (--cull-limit 0), so only the run removes items.
func TestRunnerEndToEnd(t *testing.T) {
	const sizeLimit = 256 << 10
	noCull := []string{"--cull-limit", "0"}
	s0 := testserver.Start(t, testserver.Options{Token: testToken, Args: noCull})
	s1 := testserver.Start(t, testserver.Options{Token: testToken, Args: append([]string{
		"--size-limit", fmt.Sprint(sizeLimit), "--fanout", "2", "--disk-min-file-size", "1024"}, noCull...)})
	s2 := testserver.Start(t, testserver.Options{Token: testToken, Args: noCull})
	urls := []string{s0.URL, s1.URL, s2.URL}

	// Expired on arrival: an expire time in the past, so nothing depends
	// on how much time passes.
	past := kv.ExpireAfterSeconds(-3600)
	c0, c1 := newClient(t, s0.URL), newClient(t, s1.URL)
	fill(t, c0, "dead", 20, 100, past)
	fill(t, c0, "live", 5, 100, kv.Expiry{})
	fill(t, c0, "later", 3, 100, kv.ExpireAfter(time.Hour))
	fill(t, c1, "dead", 4, 100, past)
	fill(t, c1, "big", 100, 8<<10, kv.Expiry{}) // 800 KiB in value files
	if got := info(t, c0).Count; got != 28 {
		t.Fatalf("shard 0 holds %d items before the run, want 28", got)
	}
	before := info(t, c1)
	if before.Volume <= sizeLimit || before.Count != 104 {
		t.Fatalf("shard 1 before the run: %+v, want over %d bytes and 104 items", before, sizeLimit)
	}
	s2.Kill()

	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	r := &Runner{Parallelism: 2, Clock: clk}
	res := r.Run(context.Background(), Job{
		Shards:  3,
		Expire:  true,
		Cull:    true,
		Token:   testToken,
		Resolve: func(i int) string { return urls[i] },
	})

	if len(res.Shards) != 3 {
		t.Fatalf("%d shard results", len(res.Shards))
	}
	for i, s := range res.Shards {
		if s.Shard != i {
			t.Errorf("result %d is for shard %d", i, s.Shard)
		}
	}
	// Shard 0: the expired items are gone and counted, the others stay.
	r0 := res.Shards[0]
	if r0.Err != nil || r0.Expired != 20 || r0.Culled != 0 {
		t.Errorf("shard 0: %+v, want 20 expired, 0 culled", r0)
	}
	if got := info(t, c0); got.Count != 8 || !r0.HasUsage || r0.Count != 8 {
		t.Errorf("shard 0 after the run: %d items (reported %d), want 8", got.Count, r0.Count)
	}
	for _, k := range []string{"live-0", "later-2"} {
		if _, ok, err := c0.Get(context.Background(), kv.TextKey(k)); err != nil || !ok {
			t.Errorf("shard 0 lost %s: %v %v", k, ok, err)
		}
	}
	// Shard 1: expired items first, then culled back under the size limit.
	r1 := res.Shards[1]
	after := info(t, c1)
	if r1.Err != nil || r1.Expired != 4 || r1.Culled == 0 {
		t.Errorf("shard 1: %+v, want 4 expired and some culled", r1)
	}
	t.Logf("shard 1: %d items, %d bytes before; %d expired, %d culled; %d items, %d bytes after",
		before.Count, before.Volume, r1.Expired, r1.Culled, after.Count, after.Volume)
	if after.Volume > sizeLimit {
		t.Errorf("shard 1 still over its limit: %d > %d bytes", after.Volume, sizeLimit)
	}
	if after.Count != before.Count-r1.Expired-r1.Culled || r1.Count != after.Count || r1.Volume != after.Volume {
		t.Errorf("shard 1: %d items before, %d after, reported %+v", before.Count, after.Count, r1)
	}
	// Shard 2 is down: its own error, the others unaffected.
	r2 := res.Shards[2]
	if r2.Err == nil || !errors.Is(r2.Err, syscall.ECONNREFUSED) || !strings.HasPrefix(r2.Err.Error(), "expire: ") {
		t.Errorf("shard 2: err %v, want connection refused on expire", r2.Err)
	}
	if r2.HasUsage || r2.Expired != 0 || r2.Culled != 0 {
		t.Errorf("shard 2: %+v", r2)
	}
	if res.OK() || len(res.Failed()) != 1 || res.Failed()[0].Shard != 2 {
		t.Errorf("failed shards %+v, want only shard 2", res.Failed())
	}
	if err := res.Err(); err == nil || !strings.HasPrefix(err.Error(), "shard 2: expire: ") {
		t.Errorf("Err() = %v", err)
	}
	if res.Expired != 24 || res.Culled != r1.Culled {
		t.Errorf("totals expired %d culled %d", res.Expired, res.Culled)
	}
	if !res.Started.Equal(clk.Now()) || res.Duration() != 0 {
		t.Errorf("stamps %v–%v from the injected clock", res.Started, res.Finished)
	}

	// A second run finds nothing left to do and succeeds where it can.
	res = r.Run(context.Background(), Job{Shards: 2, Expire: true, Cull: true, Token: testToken, Resolve: func(i int) string { return urls[i] }})
	if !res.OK() || res.Expired != 0 || res.Culled != 0 {
		t.Errorf("second run: %+v", res)
	}
}

func TestRunnerOnlyWhatIsEnabled(t *testing.T) {
	s := testserver.Start(t, testserver.Options{Token: testToken, Args: []string{"--cull-limit", "0"}})
	c := newClient(t, s.URL)
	fill(t, c, "dead", 3, 10, kv.ExpireAfterSeconds(-60))
	resolve := func(int) string { return s.URL }
	r := &Runner{}
	// Neither: nothing removed, usage still reported.
	res := r.Run(context.Background(), Job{Shards: 1, Token: testToken, Resolve: resolve})
	if !res.OK() || res.Expired+res.Culled != 0 || res.Shards[0].Count != 3 {
		t.Fatalf("nothing enabled: %+v", res)
	}
	// Cull alone also removes expired items (python-diskcache's cull does),
	// counted as culled.
	res = r.Run(context.Background(), Job{Shards: 1, Cull: true, Token: testToken, Resolve: resolve})
	if !res.OK() || res.Expired != 0 || res.Culled != 3 {
		t.Fatalf("cull only: %+v", res)
	}
	// A wrong token is a per-shard error, typed.
	const badToken = "not-the-token-8d1f"
	res = r.Run(context.Background(), Job{Shards: 1, Expire: true, Token: badToken, Resolve: resolve})
	if err := res.Shards[0].Err; !errors.Is(err, cacheclient.ErrUnauthorized) {
		t.Fatalf("wrong token: %v", err)
	}
	if strings.Contains(res.Err().Error(), badToken) {
		t.Fatalf("the token leaked into the error: %v", res.Err())
	}
	// No address.
	res = r.Run(context.Background(), Job{Shards: 2, Expire: true, Token: testToken, Resolve: func(i int) string {
		if i == 1 {
			return ""
		}
		return s.URL
	}})
	if res.Shards[0].Err != nil || res.Shards[1].Err == nil || !strings.Contains(res.Shards[1].Err.Error(), "no address") {
		t.Fatalf("no address: %+v", res.Shards)
	}
	// No shards: an empty success.
	if res := r.Run(context.Background(), Job{Expire: true}); !res.OK() || len(res.Shards) != 0 {
		t.Fatalf("no shards: %+v", res)
	}
}

// TestRunnerShardTimeout: a shard that accepts connections but never
// answers fails with a timeout and does not hold up the others.
func TestRunnerShardTimeout(t *testing.T) {
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	good := fakeShards(t, nil)
	urls := []string{good.URL, "http://" + hung.Addr().String(), good.URL, good.URL}
	r := &Runner{Parallelism: 1, ShardTimeout: 300 * time.Millisecond, Retries: -1}
	res := r.Run(context.Background(), Job{Shards: 4, Expire: true, Cull: true, Resolve: func(i int) string { return urls[i] }})
	for i, s := range res.Shards {
		if i == 1 {
			if !errors.Is(s.Err, context.DeadlineExceeded) || !strings.Contains(s.Err.Error(), "expire: timed out") {
				t.Errorf("hung shard: %v, want a timeout", s.Err)
			}
			continue
		}
		if s.Err != nil || s.Expired != 1 || s.Culled != 2 {
			t.Errorf("shard %d: %+v", i, s)
		}
	}
	if res.Expired != 3 || res.Culled != 6 {
		t.Errorf("totals %d %d", res.Expired, res.Culled)
	}
}

// fakeShards is an HTTP server answering expire (1 removed), cull (2) and
// info; hold, if set, is called inside each expire request.
func fakeShards(t *testing.T, hold func()) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/expire":
			if hold != nil {
				hold()
			}
			fmt.Fprint(w, `{"removed":1}`)
		case "/v1/cull":
			fmt.Fprint(w, `{"removed":2}`)
		case "/v1/info":
			fmt.Fprint(w, `{"count":10,"volume":4096,"settings":{}}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestRunnerParallelismBound: with a bound of P, P shards are worked on at
// once and never more. Each expire request waits until P are in flight
// (or every shard has started), so a runner that did not overlap shards
// would time out instead of passing.
func TestRunnerParallelismBound(t *testing.T) {
	const shards, par = 7, 3
	var (
		mu               sync.Mutex
		cond             = sync.NewCond(&mu)
		inFlight, peak   int
		started          int
		overlappedWaves  int
		releasedAtTarget bool
	)
	srv := fakeShards(t, func() {
		mu.Lock()
		defer mu.Unlock()
		inFlight++
		started++
		peak = max(peak, inFlight)
		cond.Broadcast()
		for inFlight < par && started < shards {
			cond.Wait()
		}
		if inFlight == par {
			releasedAtTarget = true
			overlappedWaves++
		}
		inFlight-- // before the answer is written: the client sees it after
	})
	r := &Runner{Parallelism: par}
	res := r.Run(context.Background(), Job{Shards: shards, Expire: true, Resolve: func(int) string { return srv.URL }})
	if !res.OK() || res.Expired != shards {
		t.Fatalf("run: %v, expired %d", res.Err(), res.Expired)
	}
	if peak != par || !releasedAtTarget {
		t.Fatalf("peak concurrency %d, want exactly %d", peak, par)
	}
	if overlappedWaves == 0 {
		t.Fatal("no overlap")
	}
}

func TestRunnerContextCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	srv := fakeShards(t, nil)
	res := (&Runner{}).Run(ctx, Job{Shards: 3, Expire: true, Resolve: func(int) string { return srv.URL }})
	if len(res.Failed()) != 3 {
		t.Fatalf("canceled run: %+v", res)
	}
	for _, s := range res.Shards {
		if !errors.Is(s.Err, context.Canceled) {
			t.Errorf("shard %d: %v", s.Shard, s.Err)
		}
	}
}
