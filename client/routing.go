package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// shardCooldown is how long a shard that could not be reached is skipped
// (its requests go to the base URL, which forwards them).
const shardCooldown = 5 * time.Second

// router sends each key straight to the shard that owns it, by the
// topology the base URL (a Service in front of every shard) answers. Any
// shard would forward a misrouted request, so a stale or missing topology
// costs a hop, never a wrong answer.
type router struct {
	mu         sync.Mutex
	layout     *topology.Layout // nil: not known (yet), send to the base URL
	shards     []*url.URL
	stale      bool      // a newer epoch was seen: refresh before the next keyed call
	standalone bool      // the server has no topology: never ask again
	lastTry    time.Time // of the last fetch, to space out failed ones
	down       map[int]time.Time
	checking   map[int]bool // shards whose health a background check asks
}

// routeOf returns the routing bytes of a request path, mirroring the
// server: collections by name, keys and recipes by key, the rest nil
// (any URL).
func routeOf(path string, query url.Values) []byte {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		return nil
	}
	kind, rest, _ := strings.Cut(rest, "/")
	seg, _, _ := strings.Cut(rest, "/")
	if seg == "" {
		return nil
	}
	switch kind {
	case "caches", "deques", "indexes":
		name, err := url.PathUnescape(seg)
		if err != nil {
			return nil
		}
		return []byte(name)
	case "keys", "locks", "semaphores", "averages", "ratelimits":
		text, err := url.PathUnescape(seg)
		if err != nil {
			return nil
		}
		raw, err := wire.DecodeKeySegment(text, query.Get(wire.ParamKeyEncoding))
		if err != nil {
			return nil
		}
		k, err := wire.ParseKey(raw, query.Get(wire.ParamKeyType))
		if err != nil {
			return nil
		}
		return wire.Routing(k)
	}
	return nil
}

// target returns the base URL to send a request with these routing bytes
// to, and the shard it belongs to (-1 for the client's base URL); skipped
// is the owner when it is taken out of routing for a while (else -1).
func (c *Client) target(ctx context.Context, route []byte) (u *url.URL, shard, skipped int) {
	r := c.router
	if r == nil || route == nil {
		return c.base, -1, -1
	}
	r.mu.Lock()
	need := !r.standalone && (r.layout == nil || r.stale) && time.Since(r.lastTry) > time.Second
	r.mu.Unlock()
	if need {
		c.refreshTopology(ctx)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.layout == nil {
		return c.base, -1, -1
	}
	i := topology.Owner(route, len(r.shards))
	if until, ok := r.down[i]; ok && time.Now().Before(until) {
		return c.base, -1, i
	}
	return r.shards[i], i, -1
}

// refreshTopology reads GET /v1/topology from the base URL.
func (c *Client) refreshTopology(ctx context.Context) {
	r := c.router
	r.mu.Lock()
	r.lastTry = time.Now()
	r.mu.Unlock()
	// Watched as every call is: a frozen base URL must not hold the call
	// that reads the topology first.
	resp, err := c.sendWatched(ctx, c.base, request{method: http.MethodGet, path: "/v1/topology", idempotent: true})
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		r.mu.Lock()
		r.standalone = true
		r.mu.Unlock()
		return
	}
	var t topology.Topology
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&t) != nil || len(t.Shards) == 0 {
		return
	}
	shards := make([]*url.URL, len(t.Shards))
	for i, s := range t.Shards {
		if shards[i], err = url.Parse(strings.TrimRight(s, "/")); err != nil {
			return
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.layout == nil || t.Epoch >= r.layout.Epoch {
		r.layout, r.shards, r.stale = &t.Layout, shards, false
		r.down = map[int]time.Time{}
	}
}

// observe notes the epoch a shard answered with; a newer one than the
// client routes by makes it refresh before its next keyed call.
func (c *Client) observe(h http.Header) {
	r := c.router
	if r == nil {
		return
	}
	e := h.Get(wire.HeaderEpoch)
	if e == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.layout != nil {
		if n, err := strconv.ParseInt(e, 10, 64); err == nil && n > r.layout.Epoch {
			r.stale = true
		}
	}
}

// checkLater asks a shard's /healthz in the background (one check per shard
// at a time) and takes it out of routing if it does not answer.
func (c *Client) checkLater(shard int, base *url.URL) {
	r := c.router
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.checking[shard] {
		return
	}
	r.checking[shard] = true
	go func() {
		healthy := c.healthy(context.Background(), base)
		if !healthy {
			c.unreachable(shard)
		}
		r.mu.Lock()
		delete(r.checking, shard)
		r.mu.Unlock()
	}()
}

// unreachable takes a shard out of routing for a while.
func (c *Client) unreachable(shard int) {
	r := c.router
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down[shard] = time.Now().Add(shardCooldown)
}
