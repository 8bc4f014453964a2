package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// metric sums a counter's series on one server whose lines start with name.
func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name) {
			f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err == nil {
				sum += f
			}
		}
	}
	return sum
}

func TestSmartClientGoesStraightToOwners(t *testing.T) {
	cl := testserver.StartCluster(t, 3, testserver.Options{})
	ctx := context.Background()
	// The client knows one URL (a Service would stand there): shard 0's.
	c, err := New(cl.URLs[0], Options{Token: cl.Shards[0].Token})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := 0; i < n; i++ {
		k := kv.TextKey(fmt.Sprintf("k%d", i))
		if err := c.Cache("").Set(ctx, k, kv.Text("v"), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := c.Cache("").Get(ctx, k); err != nil || !ok {
			t.Fatalf("get %v: %v %v", k, ok, err)
		}
	}
	for i, s := range cl.Shards {
		if f := metric(t, s.URL, "diskcache_forwarded_requests_total"); f != 0 {
			t.Errorf("shard %d forwarded %v requests; a smart client needs none", i, f)
		}
		if served := metric(t, s.URL, "diskcache_served_requests_total"); served == 0 {
			t.Errorf("shard %d served nothing", i)
		}
	}

	// A named cache lives on the owner of its name: its writes and its
	// drop go there; the listing is one request, which fans out.
	pages := c.Cache("pages")
	for i := range 5 {
		if err := pages.Set(ctx, kv.IntKey(int64(i)), kv.Int(1), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var listed []string
	for ci, err := range c.Collections(ctx, "", "", 0) {
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, ci.Kind+"/"+ci.Name)
	}
	if len(listed) != 1 || listed[0] != "cache/pages" {
		t.Errorf("collections: %v, want cache/pages", listed)
	}
	if n, err := pages.Drop(ctx); err != nil || n != 5 {
		t.Errorf("Drop = %d, %v; want 5", n, err)
	}
	for i, s := range cl.Shards {
		if f := metric(t, s.URL, "diskcache_forwarded_requests_total"); f != 0 {
			t.Errorf("shard %d forwarded %v requests for the named cache; a smart client needs none", i, f)
		}
	}

	// A client that may only use the base URL pays a hop for other owners.
	direct, _ := New(cl.URLs[0], Options{Token: cl.Shards[0].Token, DirectOnly: true})
	for i := 0; i < 30; i++ {
		if _, _, err := direct.Cache("").Get(ctx, kv.TextKey(fmt.Sprintf("k%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if f := metric(t, cl.URLs[0], "diskcache_forwarded_requests_total"); f == 0 {
		t.Error("the base URL forwarded nothing for a DirectOnly client")
	}

	// Shard 2 down: its keys fall back to the base URL, which answers 503
	// naming it; the other shards' keys still work.
	cl.Shards[2].Kill()
	var down, up int
	for i := 0; i < 40; i++ {
		k := fmt.Sprintf("k%d", i)
		_, ok, err := c.Cache("").Get(ctx, kv.TextKey(k))
		if topology.Owner([]byte(k), 3) == 2 {
			var e *Error
			if !errors.As(err, &e) || e.Code != "shard_unavailable" {
				t.Fatalf("get %s on the down shard: %v", k, err)
			}
			down++
		} else if err != nil || !ok {
			t.Fatalf("get %s: %v %v", k, ok, err)
		} else {
			up++
		}
	}
	if down == 0 || up == 0 {
		t.Fatalf("down %d up %d", down, up)
	}
}

// countingTransport records the hosts of the requests whose path ends in
// suffix.
type countingTransport struct {
	suffix string
	mu     sync.Mutex
	hosts  []string
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, c.suffix) {
		c.mu.Lock()
		c.hosts = append(c.hosts, r.URL.Host)
		c.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(r)
}

// An incr whose owner took it and stalled is not sent again through the
// base URL: it may have been applied (it counted twice).
func TestNonIdempotentCallIsNotResent(t *testing.T) {
	cl := testserver.StartCluster(t, 2, testserver.Options{})
	ctx := context.Background()
	ct := &countingTransport{suffix: "/incr"}
	c, err := New(cl.URLs[0], Options{Token: cl.Shards[0].Token, HTTPClient: &http.Client{Timeout: time.Second, Transport: ct}})
	if err != nil {
		t.Fatal(err)
	}
	key := kv.TextKey(keyOwnedBy(t, 1, 2))
	if _, err := c.Cache("").Incr(ctx, key, kv.Int(1), kv.Int(0)); err != nil {
		t.Fatal(err)
	}
	cl.Shards[1].Freeze(t)
	ct.mu.Lock()
	ct.hosts = nil
	ct.mu.Unlock()
	if _, err := c.Cache("").Incr(ctx, key, kv.Int(1), kv.Int(0)); err == nil {
		t.Fatal("incr with its owner stopped succeeded")
	}
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if len(ct.hosts) != 1 {
		t.Fatalf("the incr was sent to %v; want once, to its owner", ct.hosts)
	}
}

// A get whose server took it and stopped answering is retried, as after a
// connection error: behind a Service the next attempt may reach another
// pod. It was given up after its first attempt.
func TestStalledIdempotentCallIsRetried(t *testing.T) {
	srv := testserver.Start(t, testserver.Options{})
	ct := &countingTransport{suffix: "/v1/keys/k"}
	c, err := New(srv.URL, Options{Token: srv.Token, Retries: 2, Backoff: time.Millisecond, DirectOnly: true,
		HTTPClient: &http.Client{Transport: ct}})
	if err != nil {
		t.Fatal(err)
	}
	srv.Freeze(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second) // a hang shows as the deadline
	defer cancel()
	_, _, err = c.Cache("").Get(ctx, kv.TextKey("k"))
	srv.Thaw(t)
	if !errors.Is(err, ErrUnanswered) {
		t.Errorf("get of a frozen server: %v, want ErrUnanswered", err)
	}
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if len(ct.hosts) != 3 {
		t.Errorf("the get was sent %d times; want 1 + Retries (2)", len(ct.hosts))
	}
}

// keyOwnedBy returns a text key shard owns among n.
func keyOwnedBy(t *testing.T, shard, n int) string {
	t.Helper()
	for i := 0; ; i++ {
		if k := fmt.Sprint("own", i); topology.Owner([]byte(k), n) == shard {
			return k
		}
	}
}
