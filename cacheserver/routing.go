package cacheserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/frames"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// scope says which shard answers a route.
type scope int

const (
	scopeLocal scope = iota // the shard that receives the request
	scopeKey                // the owner of the {key}
	scopeName               // the owner of the collection {name}
	scopeAll                // every shard, results merged
	scopeBatch              // each key's owner, results merged in request order
)

// scopeOf decides a route's scope once, when it is registered: a whole
// named collection lives on the owner of its name; keys, locks and the
// other recipes on the owner of their key; the cache's bulk operations
// reach every shard.
func scopeOf(path string) scope {
	switch {
	case !strings.HasPrefix(path, "/v1/") || path == "/v1/topology" || path == "/v1/usage" || path == "/v1/frames" || strings.HasPrefix(path, "/v1/rebalance/"),
		path == "/v1/keys": // the listing goes from shard to shard itself
		return scopeLocal
	case strings.Contains(path, "{name}"):
		return scopeName
	case strings.Contains(path, "{key}"):
		return scopeKey
	case strings.HasPrefix(path, "/v1/batch/"):
		return scopeBatch
	}
	return scopeAll
}

// maxFanOutBody bounds the request body of a cluster-wide operation, which
// is buffered to be sent to every shard (they are small JSON documents).
const maxFanOutBody = 1 << 20

// peers is how a shard talks to the others: pooled keep-alive connections.
// Forwarded requests and the parts of cluster-wide operations go as frames
// on upgraded connections (cheaper for both shards than a second HTTP/1.1
// exchange), falling back to HTTP for what frames do not carry; the
// rebalancing and topology calls use plain HTTP.
type peers struct {
	client  *http.Client
	forward *http.Client
	frames  *frames.Transport
}

func newPeers(cfg Config) (*peers, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 0
	tr.MaxIdleConnsPerHost = 128
	tr.IdleConnTimeout = 90 * time.Second
	tr.DisableCompression = true // values pass through as they are
	tr.Proxy = nil
	// HTTP/1.1 over TLS too: a forward given up on then closes its
	// connection, which the owner sees before it applies the write
	// (kv.WithAbandoned); over HTTP/2 it would only reset the stream.
	tr.ForceAttemptHTTP2 = false
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	if cfg.PeerCAFile != "" {
		pem, err := os.ReadFile(cfg.PeerCAFile)
		if err != nil {
			return nil, fmt.Errorf("--peer-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--peer-ca-file %s holds no PEM certificate", cfg.PeerCAFile)
		}
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	ft := frames.New(frames.Options{Fallback: tr, TLSClientConfig: tr.TLSClientConfig, MaxIdlePerHost: tr.MaxIdleConnsPerHost, IdleTimeout: tr.IdleConnTimeout})
	return &peers{client: &http.Client{Transport: tr}, forward: &http.Client{Transport: ft}, frames: ft}, nil
}

// collector exports how requests to peers went out: as frames or over HTTP.
func (p *peers) collector() prometheus.Collector {
	desc := prometheus.NewDesc("diskcache_peer_requests_total",
		"Requests this shard sent to other shards (forwarded, or its part of a cluster-wide operation) by transport: frames, or http for what frames do not carry (HEAD, bodies over 1 MiB or of unknown length, peers without frames).",
		[]string{"transport"}, nil)
	return peerCollector{desc: desc, t: p.frames}
}

type peerCollector struct {
	desc *prometheus.Desc
	t    *frames.Transport
}

func (c peerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c peerCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.t.Stats()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(st.Framed), "frames")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(st.Fallback), "http")
}

// hopHeaders are connection-level headers a forwarder must not pass on.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func copyHeaders(dst, src http.Header) {
	for k, vv := range src {
		dst[k] = append(dst[k][:0:0], vv...)
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
}

// routingError answers with a routing error body: wire.Error plus fields.
type routingError struct {
	status int
	body   map[string]any
}

func (e *routingError) Error() string { return fmt.Sprint(e.body["message"]) }

func newRoutingError(status int, code string, extra map[string]any, format string, args ...any) *routingError {
	body := map[string]any{"error": code, "message": fmt.Sprintf(format, args...)}
	for k, v := range extra {
		body[k] = v
	}
	return &routingError{status: status, body: body}
}

// dispatch sends a request to the shard that must answer it. It returns
// true when it answered (forwarded, merged or refused), false when this
// shard serves the request itself.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request, sc scope, detail bool) (bool, error) {
	a := s.cluster.current()
	if a == nil {
		return true, newRoutingError(http.StatusServiceUnavailable, wire.CodeNoTopology, nil,
			"shard %d has no topology yet", s.cluster.self)
	}
	if fe := r.Header.Get(wire.HeaderForwardedEpoch); fe != "" {
		return s.fromPeer(r, sc, fe, a)
	}
	switch sc {
	case scopeKey, scopeName:
		routing, err := s.routingBytes(r, sc)
		if err != nil {
			return false, nil // the handler answers the malformed key
		}
		owner := topology.Owner(routing, len(a.Shards))
		if owner == s.cluster.self {
			return false, nil
		}
		return s.forward(w, r, routing, owner, a)
	case scopeAll:
		return true, s.broadcast(w, r, a, detail)
	case scopeBatch:
		return true, s.batchBroadcast(w, r, a)
	}
	return false, nil
}

// ownPartAsked reports whether a client asks this shard for its own part,
// with Diskcache-Scope: shard on a request no shard forwarded: of a
// cluster-wide operation (the operator, a client that adds up the shards
// itself), or a look at what this shard itself holds under a key or name
// (GET, HEAD), or with a batch get. A write under a key or name, or a batch
// set or delete, goes to its owners whatever the header says: stored on
// another shard, no read would find it. A forwarded request is checked by
// dispatch (epoch, owner) whatever its scope.
func ownPartAsked(r *http.Request, sc scope) bool {
	if r.Header.Get(wire.HeaderScope) != "shard" || r.Header.Get(wire.HeaderForwardedEpoch) != "" {
		return false
	}
	switch sc {
	case scopeAll:
		return true
	case scopeKey, scopeName:
		return r.Method == http.MethodGet || r.Method == http.MethodHead
	case scopeBatch:
		return strings.HasSuffix(r.URL.Path, "/batch/get")
	}
	return false
}

// fromPeer checks a request another shard forwarded: both must route by the
// same epoch, and a forwarded request is never forwarded again (one hop).
func (s *Server) fromPeer(r *http.Request, sc scope, fe string, a *topology.Announcement) (bool, error) {
	epoch, err := strconv.ParseInt(fe, 10, 64)
	if err != nil {
		return true, badRequest(wire.CodeBadRequest, "%s %q is not an epoch", wire.HeaderForwardedEpoch, fe)
	}
	if epoch > a.Epoch {
		a = s.catchUp(r.Context(), epoch, r, false)
	}
	if epoch < a.Epoch {
		return true, s.wrongEpoch("the sender routes by epoch %d, this shard by %d", epoch, a.Epoch)
	}
	if epoch > a.Epoch {
		return true, newRoutingError(http.StatusServiceUnavailable, wire.CodeNoTopology, nil,
			"shard %d has not learned epoch %d yet (it has %d)", s.cluster.self, epoch, a.Epoch)
	}
	if sc == scopeKey || sc == scopeName {
		if routing, err := s.routingBytes(r, sc); err == nil && topology.Owner(routing, len(a.Shards)) != s.cluster.self {
			return true, s.wrongEpoch("shard %d does not own this key at epoch %d", s.cluster.self, a.Epoch)
		}
	}
	return false, nil
}

func (s *Server) wrongEpoch(format string, args ...any) error {
	return newRoutingError(http.StatusConflict, wire.CodeWrongEpoch, map[string]any{"topology": s.cluster.view()}, format, args...)
}

// catchUp learns a newer topology from a peer after a forwarded request
// showed that one exists (the operator's announcement reached the sender
// first). Only shards of the topology in force are asked, so a request
// cannot point this shard at a server of its choice; trustSender adds the
// sender itself (Diskcache-Forwarded-By) for a request made with the admin
// token, whose holder could announce a topology anyway: a new shard that
// pulls from its previous owner is in no topology the owner knows yet.
func (s *Server) catchUp(ctx context.Context, epoch int64, r *http.Request, trustSender bool) *topology.Announcement {
	a := s.cluster.current()
	if !s.catchUps.try(epoch) {
		return a
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	defer func() { s.catchUps.done(epoch, s.cluster.current().Epoch >= epoch) }()
	candidates := append([]string{r.Header.Get(wire.HeaderForwardedBy)}, a.Shards...)
	for i, u := range candidates {
		if u == "" || (i == 0 && !trustSender && !containsString(a.Shards, u)) || (i > 0 && i-1 == s.cluster.self) {
			continue
		}
		t, err := s.fetchTopology(ctx, u, r.Header.Get("Authorization"))
		if err != nil || t.Epoch < epoch {
			continue
		}
		if changed, err := s.cluster.adopt(t.Announcement); err == nil && changed {
			s.log.Info("adopted a newer topology from a peer", slog.String("peer", u), slog.Int64("epoch", t.Epoch))
		}
		break
	}
	return s.cluster.current()
}

// catchUpGate keeps requests that name an epoch no peer has from making
// the shard ask its peers for it each time (a client sending
// Diskcache-Forwarded-Epoch: 999 made every request cost a round of
// topology fetches): after a catch-up that did not find an epoch, requests
// for it or a later one skip the asking for catchUpPause. Short, as a
// catch-up can also miss an epoch the operator has announced to some
// shards and not yet to others.
type catchUpGate struct {
	mu         sync.Mutex
	missed     int64 // the smallest epoch the last failed catch-up looked for
	missedTill time.Time
}

// try reports whether a catch-up for epoch may ask the peers now.
func (g *catchUpGate) try(epoch int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !(epoch >= g.missed && time.Now().Before(g.missedTill))
}

// done records how a catch-up for epoch ended.
func (g *catchUpGate) done(epoch int64, found bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if found {
		return
	}
	if !time.Now().Before(g.missedTill) || epoch < g.missed {
		g.missed = epoch
	}
	g.missedTill = time.Now().Add(catchUpPause)
}

const catchUpPause = 100 * time.Millisecond

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (s *Server) fetchTopology(ctx context.Context, base, auth string) (topology.Topology, error) {
	var t topology.Topology
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/topology", nil)
	if err != nil {
		return t, err
	}
	req.Header.Set("Authorization", auth)
	resp, err := s.peers.client.Do(req)
	if err != nil {
		return t, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return t, fmt.Errorf("GET %s/v1/topology: %s", base, resp.Status)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, maxFanOutBody)).Decode(&t)
	return t, err
}

// routingBytes returns what decides the owner of a key or collection route.
func (s *Server) routingBytes(r *http.Request, sc scope) ([]byte, error) {
	if sc == scopeName {
		return []byte(r.PathValue("name")), nil
	}
	k, err := s.pathKey(r)
	if err != nil {
		return nil, err
	}
	return wire.Routing(k), nil
}

// forward passes the request to its owner and streams the answer back. A
// small body is kept so that, if the owner routes by a newer epoch, the
// request can be sent once more by the topology it answers with.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, routing []byte, owner int, a *topology.Announcement) (bool, error) {
	var kept []byte
	if r.ContentLength >= 0 && r.ContentLength <= maxFanOutBody {
		var err error
		if kept, err = io.ReadAll(r.Body); err != nil {
			return true, bodyError(err)
		}
	}
	for attempt := 0; ; attempt++ {
		var body io.Reader
		var streamed *lentBody
		if kept != nil {
			body = bytes.NewReader(kept)
		} else {
			streamed = &lentBody{r: r.Body, want: r.ContentLength}
			body = streamed
		}
		resp, err := s.send(r, a, owner, body, r.ContentLength, false)
		partRead := streamed != nil && streamed.takeBack()
		if partRead {
			// The client's body was left part-read: what is left of it
			// must not be read as its next request.
			w.Header().Set("Connection", "close")
		}
		if err != nil {
			if cbe := streamed.failed(); cbe != nil {
				// The client's body broke or stalled, not the owner: the
				// owner refuses a body cut short, so nothing was applied.
				return true, cbe
			}
			var re *routingError
			if partRead && errors.As(err, &re) && re.body["error"] == wire.CodeShardTimeout {
				// The owner went away before the whole body was sent to it
				// (not "may have been applied").
				return true, notApplied(owner, a.Shards[owner])
			}
			return true, err
		}
		if resp.StatusCode == http.StatusConflict && kept != nil && attempt == 0 {
			t, ok := readWrongEpoch(resp)
			if !ok {
				resp.Body = io.NopCloser(bytes.NewReader(t.raw))
			} else if _, err := s.cluster.adopt(t.Announcement); err == nil || errors.Is(err, errTopologyConflict) {
				a = s.cluster.current()
				owner = topology.Owner(routing, len(a.Shards))
				if owner == s.cluster.self {
					r.Body = io.NopCloser(bytes.NewReader(kept))
					return false, nil
				}
				continue
			} else {
				resp.Body = io.NopCloser(bytes.NewReader(t.raw))
			}
		}
		defer resp.Body.Close()
		copyHeaders(w.Header(), resp.Header)
		w.WriteHeader(resp.StatusCode)
		s.metrics.forwarded(owner, resp.StatusCode)
		buf := copyBuffers.Get().(*[]byte)
		_, err = io.CopyBuffer(flushWriter{w: w, rc: http.NewResponseController(w)}, resp.Body, *buf)
		copyBuffers.Put(buf)
		if err != nil {
			// The status is out: all that is left is to cut the response.
			s.log.WarnContext(r.Context(), "forwarded response cut short", slog.Int("shard", owner), slog.Any("error", err))
			panic(http.ErrAbortHandler)
		}
		return true, nil
	}
}

// wrongEpochBody is a 409 answer read back: the topology it carries, and
// the raw bytes to pass on when it is not a wrong_epoch.
type wrongEpochBody struct {
	topology.Topology
	raw []byte
}

func readWrongEpoch(resp *http.Response) (wrongEpochBody, bool) {
	var out wrongEpochBody
	out.raw, _ = io.ReadAll(io.LimitReader(resp.Body, maxFanOutBody))
	resp.Body.Close()
	var ok bool
	out.Topology, ok = wrongEpochOf(out.raw)
	return out, ok
}

// wrongEpochOf returns the topology a 409 wrong_epoch body carries; ok is
// false for any other body.
func wrongEpochOf(raw []byte) (topology.Topology, bool) {
	var body struct {
		Error    string            `json:"error"`
		Topology topology.Topology `json:"topology"`
	}
	if json.Unmarshal(raw, &body) != nil || body.Error != wire.CodeWrongEpoch {
		return topology.Topology{}, false
	}
	return body.Topology, true
}

// send makes one request to shard i for r: same method, path, query and
// headers (the client's token included), marked as forwarded.
func (s *Server) send(r *http.Request, a *topology.Announcement, i int, body io.Reader, length int64, shardScope bool) (*http.Response, error) {
	url := a.Shards[i] + r.URL.RequestURI()
	if !s.peerHealthy(a.Shards[i]) {
		s.metrics.forwarded(i, 0)
		return nil, newRoutingError(http.StatusServiceUnavailable, wire.CodeShardUnavailable,
			map[string]any{"shard": i, "url": a.Shards[i]}, "shard %d (%s) is unavailable: it does not answer its health check", i, a.Shards[i])
	}
	if !readOnly(r) && kv.Abandoned(r.Context()) {
		// Its client has gone: sent now, the write could land over ones
		// the client made since (the frames transport asks again as the
		// frame leaves).
		return nil, kv.ErrAbandoned
	}
	// Cancelled (errPeerDown) when the owner fails its health check while
	// this waits for its answer; not when the answer came (it streams on,
	// and the request's end releases it).
	ctx, giveUp := context.WithCancelCause(r.Context())
	// A request whose writing failed did not reach the owner whole, and
	// the owner refuses a body cut short: nothing was applied there.
	var cutShort atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(w httptrace.WroteRequestInfo) {
		if w.Err != nil {
			cutShort.Store(true)
		}
	}})
	out, err := http.NewRequestWithContext(ctx, r.Method, url, body)
	if err != nil {
		giveUp(nil)
		return nil, err
	}
	copyHeaders(out.Header, r.Header)
	out.ContentLength = length
	if length == 0 {
		out.Body = http.NoBody
	}
	out.Header.Set(wire.HeaderForwardedEpoch, strconv.FormatInt(a.Epoch, 10))
	if self := s.cluster.self; self < len(a.Shards) {
		out.Header.Set(wire.HeaderForwardedBy, a.Shards[self])
	}
	if shardScope {
		out.Header.Set(wire.HeaderScope, "shard")
	}
	stopWatch := s.watchForward(a.Shards[i], giveUp)
	resp, err := s.peers.forward.Do(out)
	stopWatch()
	if err == nil {
		s.peerAnswered(a.Shards[i])
	}
	if errors.Is(err, kv.ErrAbandoned) {
		return nil, err
	}
	if err != nil && errors.Is(context.Cause(ctx), errPeerDown) {
		s.metrics.forwarded(i, 0)
		if cutShort.Load() && !readOnly(r) {
			return nil, notApplied(i, a.Shards[i])
		}
		if !mayHaveReached(err) {
			// Still connecting (a restarted pod's old address hangs):
			// nothing was done, whatever the method.
			return nil, newRoutingError(http.StatusServiceUnavailable, wire.CodeShardUnavailable,
				map[string]any{"shard": i, "url": a.Shards[i]}, "shard %d (%s) is unavailable: it does not answer its health check, and the request did not reach it", i, a.Shards[i])
		}
		if readOnly(r) {
			return nil, newRoutingError(http.StatusServiceUnavailable, wire.CodeShardUnavailable,
				map[string]any{"shard": i, "url": a.Shards[i]}, "shard %d (%s) is unavailable: it took the request but does not answer its health check", i, a.Shards[i])
		}
		return nil, newRoutingError(http.StatusGatewayTimeout, wire.CodeShardTimeout,
			map[string]any{"shard": i, "url": a.Shards[i]},
			"shard %d (%s) took the request but does not answer its health check; the request may have been applied there", i, a.Shards[i])
	}
	if err != nil {
		if errors.Is(r.Context().Err(), context.DeadlineExceeded) {
			// Not the server's own "timeout" (nothing done): the owner may
			// have applied the request and not answered yet.
			s.metrics.forwarded(i, 0)
			return nil, newRoutingError(http.StatusGatewayTimeout, wire.CodeShardTimeout,
				map[string]any{"shard": i, "url": a.Shards[i]},
				"shard %d (%s) did not answer within the request timeout; the request may have been applied there", i, a.Shards[i])
		}
		if r.Context().Err() != nil {
			return nil, r.Context().Err()
		}
		s.metrics.forwarded(i, 0)
		if cutShort.Load() && !repeatable(r) {
			return nil, notApplied(i, a.Shards[i])
		}
		if mayHaveReached(err) && !repeatable(r) {
			// The owner may have read the request and gone away (killed,
			// restarted) before answering: it may have applied it.
			return nil, newRoutingError(http.StatusGatewayTimeout, wire.CodeShardTimeout,
				map[string]any{"shard": i, "url": a.Shards[i]},
				"shard %d (%s) may have taken the request, and closed the connection without answering; the request may have been applied there", i, a.Shards[i])
		}
		return nil, newRoutingError(http.StatusServiceUnavailable, wire.CodeShardUnavailable,
			map[string]any{"shard": i, "url": a.Shards[i]}, "shard %d (%s) is unavailable: %v", i, a.Shards[i], withoutURL(err))
	}
	return resp, nil
}

// notApplied answers a forward whose owner went away before the whole
// request reached it: the owner refuses a body cut short, so nothing was
// applied, and the client may send the request again.
func notApplied(i int, url string) *routingError {
	return newRoutingError(http.StatusServiceUnavailable, wire.CodeShardUnavailable, map[string]any{"shard": i, "url": url},
		"shard %d (%s) is unavailable: it stopped answering before the whole request reached it, so nothing was applied", i, url)
}

// withoutURL drops the request URL net/http puts in its errors: it holds
// the key, which an error answer (and every log that prints it) must not
// show; the message names the shard instead.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// mayHaveReached reports whether a failed forward may have delivered the
// request: over frames the transport knows (ErrUnanswered, ErrNotSent);
// over plain HTTP (bodies over a frame, peers without frames) only a
// failure to connect proves it did not.
func mayHaveReached(err error) bool {
	switch {
	case errors.Is(err, frames.ErrUnanswered):
		return true
	case errors.Is(err, frames.ErrNotSent):
		return false
	}
	var op *net.OpError
	return !(errors.As(err, &op) && op.Op == "dial")
}

// readOnly reports whether r changes nothing: a GET, a HEAD or a batch
// get. A forward of it given up on a stalled owner is shard_unavailable,
// not a shard_timeout that may have been applied.
func readOnly(r *http.Request) bool {
	method, path, _ := strings.Cut(r.Pattern, " ")
	if r.Pattern == "" {
		method, path = r.Method, r.URL.Path
	}
	return method == http.MethodGet || method == http.MethodHead ||
		(method == http.MethodPost && strings.HasSuffix(path, "/batch/get"))
}

// repeatable reports whether applying r twice leaves what applying it once
// does, so that "unavailable" (send it again) is a safe answer even when
// the owner may have applied it: reads, sets, deletes of a key or of a
// whole collection, and the batches. The rest (incr, add, pop, a deque's
// push or delete at an index, a lock's acquire, an average's take) is not.
func repeatable(r *http.Request) bool {
	method, path, _ := strings.Cut(r.Pattern, " ")
	if r.Pattern == "" {
		method, path = r.Method, r.URL.Path
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPut:
		return true
	case http.MethodDelete:
		return !strings.HasSuffix(path, "/items/{index}") && !strings.HasPrefix(path, "/v1/averages/")
	case http.MethodPost:
		for _, read := range []string{"/batch/get", "/batch/set", "/batch/delete", "/count"} {
			if strings.HasSuffix(path, read) {
				return true
			}
		}
	}
	return false
}

// lentBody lends a client's request body to a forward. net/http's
// transport may go on reading a request body after RoundTrip has returned
// (another goroutine writes it), so a forward cut short (the owner went
// away, or answered before reading it all) can leave the client's body
// part-read while reads of it go on: kept alive, the connection then had
// the rest of one request's body read as the next request, and a client
// could make the shard serve a request hidden in a value. takeBack ends
// the loan and says whether the connection must be closed.
type lentBody struct {
	r        io.Reader
	want     int64 // the body's length; -1 unknown
	mu       sync.Mutex
	read     int64
	eof      bool
	returned bool
	err      *clientBodyError // reading the client's body failed
}

func (b *lentBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	returned := b.returned
	b.mu.Unlock()
	if returned {
		return 0, errors.New("the forward has ended")
	}
	n, err := b.r.Read(p)
	b.mu.Lock()
	b.read += int64(n)
	b.eof = b.eof || errors.Is(err, io.EOF)
	if cbe := (*clientBodyError)(nil); errors.As(err, &cbe) && b.err == nil {
		b.err = cbe
	}
	b.mu.Unlock()
	return n, err
}

// failed is the error reading the client's body gave, if any (nil for a
// nil b: no body was lent).
func (b *lentBody) failed() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		return nil
	}
	return b.err
}

// takeBack makes later reads fail and reports whether the body may be
// left part-read (a read in progress may still end it).
func (b *lentBody) takeBack() (partRead bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.returned = true
	return !b.eof && (b.want < 0 || b.read < b.want)
}

// copyBuffers hold the buffers forwarded answers are copied through: a
// fresh 32 KiB buffer per forwarded request (io.Copy's) was eight times
// what the rest of a small request allocates.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// flushWriter flushes after every write so streamed answers keep moving.
type flushWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		_ = f.rc.Flush()
	}
	return n, err
}
