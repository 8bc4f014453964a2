// Package frames is a client of the cacheserver's frames transport
// (docs/api/frames.md) as an http.RoundTripper: a request goes as one
// request frame on a pooled connection upgraded with GET /v1/frames, and
// its answer frame comes back as an *http.Response whose body streams the
// answer's chunks. Requests frames cannot carry go through a fallback
// RoundTripper (plain HTTP), so a caller can swap it in for http.Transport.
package frames

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

const (
	// Protocol is the Upgrade token of the frames transport.
	Protocol = "diskcache-frames/1"
	// MaxFrameBytes bounds a request frame (the server's limit): larger
	// requests go over the fallback.
	MaxFrameBytes = 1 << 20
	// maxHeaders bounds the headers of one request frame.
	maxHeaders = 32
	// smallAnswer bounds the first chunk read with an answer's head (the
	// server's chunks are 64 KiB at most).
	smallAnswer = 64 << 10
)

// ErrUnanswered marks a request whose frame reached the server whole and
// whose connection then ended without a whole answer: the server may have
// served it (an incr may have counted), so a caller must not send a request
// that is not idempotent again, and can tell this from "not sent".
var ErrUnanswered = errors.New("the server took the request and the connection ended before its answer")

// ErrNotSent marks a request that failed before its frame reached the
// server whole (connecting, upgrading, writing): the server cannot have
// served it.
var ErrNotSent = errors.New("the request did not reach the server")

// Options configure a Transport.
type Options struct {
	// Fallback carries what frames cannot (required): HEAD, bodies of
	// unknown length or over a frame, servers without frames.
	Fallback http.RoundTripper
	// TLSClientConfig is used for https URLs (the upgrade works on TLS
	// connections too); nil means the defaults.
	TLSClientConfig *tls.Config
	// MaxIdlePerHost bounds the idle upgraded connections kept per server
	// and token (default 128).
	MaxIdlePerHost int
	// IdleTimeout closes a pooled connection idle this long instead of
	// reusing it (default 90s, under the server's 2 minutes).
	IdleTimeout time.Duration
	// RefusedFor is how long a server that refused the upgrade (it
	// predates frames) gets plain HTTP before it is asked again (default 5m).
	RefusedFor time.Duration
	// DialTimeout bounds connecting and upgrading (default 10s).
	DialTimeout time.Duration
	// MaxConnsPerHost caps the upgraded connections open to one server,
	// idle or busy, whatever their token; a request beyond it waits for
	// one to come free (0: no cap). The fallback has its own.
	MaxConnsPerHost int
}

// Stats count what a Transport did.
type Stats struct {
	Framed   uint64 // requests answered over frames
	Fallback uint64 // requests sent through the fallback
	Upgrades uint64 // connections upgraded to frames
	Retries  uint64 // requests sent again on a fresh connection after a failed one
}

// Transport is an http.RoundTripper over the frames transport. It is safe
// for concurrent use; each connection carries one request at a time.
type Transport struct {
	opts   Options
	dialer net.Dialer

	mu      sync.Mutex
	idle    map[poolKey][]*conn
	refused map[string]time.Time // scheme://host → ask again after
	swept   time.Time            // the last sweep of idle connections
	open    map[string]int       // scheme://host → connections open (with MaxConnsPerHost)
	freed   chan struct{}        // closed (and replaced) when a connection goes idle or closes

	framed, fallback, upgrades, retries atomic.Uint64
}

// poolKey: connections are upgraded with a token, so they are pooled per
// server and token.
type poolKey struct {
	base string // scheme://host:port
	auth string
}

// New returns a Transport; opts.Fallback must be set.
func New(opts Options) *Transport {
	if opts.Fallback == nil {
		panic("frames.New: Options.Fallback is required")
	}
	if opts.MaxIdlePerHost <= 0 {
		opts.MaxIdlePerHost = 128
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 90 * time.Second
	}
	if opts.RefusedFor <= 0 {
		opts.RefusedFor = 5 * time.Minute
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 10 * time.Second
	}
	return &Transport{
		opts:    opts,
		dialer:  net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second},
		idle:    map[poolKey][]*conn{},
		refused: map[string]time.Time{},
		open:    map[string]int{},
		freed:   make(chan struct{}),
	}
}

// Stats returns the counters so far.
func (t *Transport) Stats() Stats {
	return Stats{Framed: t.framed.Load(), Fallback: t.fallback.Load(), Upgrades: t.upgrades.Load(), Retries: t.retries.Load()}
}

// CloseIdleConnections closes the pooled connections (and the fallback's).
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[poolKey][]*conn{}
	t.mu.Unlock()
	for _, cs := range idle {
		for _, c := range cs {
			_ = c.nc.Close()
		}
	}
	if ci, ok := t.opts.Fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// methodCodes are the request frame's method codes. HEAD is left to HTTP:
// an answer frame carries no Content-Length, which is all a HEAD answers.
var methodCodes = map[string]byte{http.MethodGet: 1, http.MethodPut: 3, http.MethodPost: 4, http.MethodDelete: 5, http.MethodPatch: 6}

// RoundTrip sends req as a frame when it can, through the fallback when not.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	plan, ok := t.plan(req)
	if !ok {
		return t.viaFallback(req)
	}
	ctx := req.Context()
	c, err := t.getConn(ctx, plan.key)
	if err != nil {
		closeBody(req)
		return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	if c == nil { // the upgrade was refused
		return t.viaFallback(req)
	}
	frame, err := plan.frame(req)
	closeBody(req)
	if err != nil {
		t.put(c)
		return nil, fmt.Errorf("frames %s %s: reading the body: %w", req.Method, req.URL.Host, err)
	}
	for attempt := 0; ; attempt++ {
		if kv.Abandoned(ctx) {
			// The last moment before the frame leaves: a forwarding server
			// stopped while it held the request runs again long after its
			// client gave up, and the owner would apply the write over the
			// ones acknowledged since.
			t.put(c)
			return nil, fmt.Errorf("frames %s %s: %w: %w", req.Method, req.URL.Host, ErrNotSent, kv.ErrAbandoned)
		}
		resp, sent, err := t.exchange(ctx, c, req, frame)
		if err == nil {
			t.framed.Add(1)
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("frames %s %s: %w", req.Method, req.URL.Host, ctx.Err())
		}
		// Send once more on a fresh connection only when the peer provably
		// did not serve the request: the frame never fully left (a server
		// serves only whole frames), or a pooled connection answered
		// nothing to a GET (as net/http retries idempotent requests).
		retry := attempt == 0 && (!sent || (c.reused && req.Method == http.MethodGet))
		if !retry && sent {
			return nil, fmt.Errorf("frames %s %s: %w: %w", req.Method, req.URL.Host, ErrUnanswered, err)
		}
		if !retry {
			return nil, fmt.Errorf("frames %s %s: %w: %w", req.Method, req.URL.Host, ErrNotSent, err)
		}
		t.retries.Add(1)
		if c, err = t.newConn(ctx, plan.key); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
		}
		if c == nil {
			return nil, fmt.Errorf("frames %s %s: the server refused the upgrade on retry", req.Method, req.URL.Host)
		}
	}
}

func (t *Transport) viaFallback(req *http.Request) (*http.Response, error) {
	t.fallback.Add(1)
	return t.opts.Fallback.RoundTrip(req)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// plan is a request that fits a frame: what it needs besides its body.
type plan struct {
	key    poolKey
	code   byte
	target string
	header [][2]string
	size   int // the frame's payload size
}

// plan decides whether req fits a frame.
func (t *Transport) plan(req *http.Request) (plan, bool) {
	var p plan
	u := req.URL
	if u == nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (req.Host != "" && req.Host != u.Host) {
		return p, false
	}
	code, ok := methodCodes[req.Method]
	if !ok || req.ContentLength < 0 || req.ContentLength > MaxFrameBytes || (req.ContentLength == 0 && req.Body != nil && req.Body != http.NoBody) {
		// A zero ContentLength with a body means "unknown" (http.Request's rule).
		return p, false
	}
	auth := req.Header.Values("Authorization")
	if len(auth) > 1 {
		return p, false
	}
	p.key.base = u.Scheme + "://" + u.Host
	if len(auth) == 1 {
		p.key.auth = canonicalAuth(auth[0])
	}
	t.mu.Lock()
	until, refused := t.refused[p.key.base]
	if refused && time.Now().After(until) {
		delete(t.refused, p.key.base)
		refused = false
	}
	t.mu.Unlock()
	if refused {
		return p, false
	}
	p.code = code
	p.target = u.EscapedPath()
	if p.target == "" {
		p.target = "/"
	}
	if u.RawQuery != "" {
		p.target += "?" + u.RawQuery
	}
	if len(p.target) > 1<<16 || strings.ContainsAny(p.target, " \r\n\x00#") {
		return p, false
	}
	size := 1 + 4 + len(p.target) + 1
	for name, values := range req.Header {
		switch textproto.CanonicalMIMEHeaderKey(name) {
		case "Authorization":
			continue // the upgrade's
		case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Expect", "Te", "Trailer", "Keep-Alive", "Proxy-Connection":
			continue // HTTP/1.1's own framing, as http.Transport writes its own
		}
		if len(name) == 0 || len(name) > 255 || !validHeaderName(name) {
			return p, false
		}
		for _, v := range values {
			if !validHeaderValue(v) {
				return p, false
			}
			p.header = append(p.header, [2]string{name, v})
			size += 1 + len(name) + 4 + len(v)
		}
	}
	if len(p.header) > maxHeaders {
		return p, false
	}
	p.size = size + int(req.ContentLength)
	return p, p.size <= MaxFrameBytes
}

// frame encodes the request frame (length prefix included), reading the body.
func (p plan) frame(req *http.Request) ([]byte, error) {
	b := make([]byte, 0, 4+p.size)
	b = appendU32(b, uint32(p.size))
	b = append(b, p.code)
	b = appendU32(b, uint32(len(p.target)))
	b = append(b, p.target...)
	b = append(b, byte(len(p.header)))
	for _, h := range p.header {
		b = append(b, byte(len(h[0])))
		b = append(b, h[0]...)
		b = appendU32(b, uint32(len(h[1])))
		b = append(b, h[1]...)
	}
	if n := req.ContentLength; n > 0 {
		start := len(b)
		b = b[:start+int(n)]
		if _, err := io.ReadFull(req.Body, b[start:]); err != nil {
			return nil, fmt.Errorf("body shorter than its ContentLength %d: %w", n, err)
		}
	}
	return b, nil
}

func appendU32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

func validHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\r' || c == '\n' || c == 0 || (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// canonicalAuth spells a bearer credential one way. Connections are pooled
// by it, and the server takes the scheme in any case and any spaces before
// the token: pooled as spelled, a client varying the spelling through a
// forwarding shard made it open a pool, and up to MaxIdlePerHost
// connections, per spelling to the owner.
func canonicalAuth(v string) string {
	scheme, tok, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return v
	}
	return "Bearer " + strings.TrimLeft(tok, " ")
}

// conn is one upgraded connection.
type conn struct {
	nc     net.Conn
	br     *bufio.Reader
	key    poolKey
	used   time.Time // when it went idle
	reused bool      // it served a request before this one
}

// getConn returns a pooled live connection or a new one; nil (and no
// error) when the server refused the upgrade.
func (t *Transport) getConn(ctx context.Context, key poolKey) (*conn, error) {
	return t.connect(ctx, key, true)
}

// newConn returns a new connection (once a slot is free).
func (t *Transport) newConn(ctx context.Context, key poolKey) (*conn, error) {
	return t.connect(ctx, key, false)
}

func (t *Transport) connect(ctx context.Context, key poolKey, pooled bool) (*conn, error) {
	for {
		if pooled {
			if c := t.idleConn(key); c != nil {
				return c, nil
			}
		}
		t.mu.Lock()
		if limit := t.opts.MaxConnsPerHost; limit > 0 && t.open[key.base] >= limit {
			// At the cap: an idle connection of another token (a rotated
			// one) gives its slot up; otherwise wait for one.
			if other := t.takeIdleOther(key); other != nil {
				t.mu.Unlock()
				_ = other.nc.Close()
				continue
			}
			freed := t.freed
			t.mu.Unlock()
			select {
			case <-freed:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("frames: waiting for one of the %d connections to %s: %w", limit, key.base, ctx.Err())
			}
		}
		t.open[key.base]++
		t.mu.Unlock()
		return t.dial(ctx, key)
	}
}

// idleConn takes a live pooled connection, or returns nil.
func (t *Transport) idleConn(key poolKey) *conn {
	now := time.Now()
	for {
		t.mu.Lock()
		cs := t.idle[key]
		if len(cs) == 0 {
			t.mu.Unlock()
			return nil
		}
		c := cs[len(cs)-1]
		cs[len(cs)-1] = nil
		t.idle[key] = cs[:len(cs)-1]
		t.mu.Unlock()
		// A pooled connection the peer closed (a restart, its idle timeout)
		// is found here, before anything is sent on it.
		if now.Sub(c.used) < t.opts.IdleTimeout && c.br.Buffered() == 0 && alive(c.nc) {
			c.reused = true
			return c
		}
		_ = c.nc.Close()
	}
}

// takeIdleOther takes an idle connection to key's server under another
// token. t.mu is held.
func (t *Transport) takeIdleOther(key poolKey) *conn {
	for k, cs := range t.idle {
		if k.base == key.base && k != key && len(cs) > 0 {
			c := cs[len(cs)-1]
			cs[len(cs)-1] = nil
			t.idle[k] = cs[:len(cs)-1]
			return c
		}
	}
	return nil
}

// wake tells the requests waiting for a connection to look again. t.mu is
// held.
func (t *Transport) wake() {
	close(t.freed)
	t.freed = make(chan struct{})
}

// release gives back a connection's slot under MaxConnsPerHost.
func (t *Transport) release(base string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open[base]--; t.open[base] <= 0 {
		delete(t.open, base)
	}
	t.wake()
}

// slotConn gives its slot back once, when closed.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// SyscallConn reaches the socket, for alive.
func (c *slotConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// put returns c to its pool.
func (t *Transport) put(c *conn) {
	c.used = time.Now()
	t.mu.Lock()
	stale := t.sweep(c.used)
	if cs := t.idle[c.key]; len(cs) < t.opts.MaxIdlePerHost {
		t.idle[c.key] = append(cs, c)
		c = nil
		t.wake()
	}
	t.mu.Unlock()
	if c != nil {
		stale = append(stale, c)
	}
	for _, s := range stale {
		_ = s.nc.Close()
	}
}

// sweep takes the connections idle past IdleTimeout out of every pool, at
// most once per IdleTimeout: the pools of a retired token are otherwise
// never visited again. t.mu is held.
func (t *Transport) sweep(now time.Time) (stale []*conn) {
	if now.Sub(t.swept) < t.opts.IdleTimeout {
		return nil
	}
	t.swept = now
	for key, cs := range t.idle {
		kept := cs[:0]
		for _, c := range cs {
			if now.Sub(c.used) < t.opts.IdleTimeout {
				kept = append(kept, c)
			} else {
				stale = append(stale, c)
			}
		}
		clear(cs[len(kept):])
		if len(kept) == 0 {
			delete(t.idle, key)
		} else {
			t.idle[key] = kept
		}
	}
	return stale
}

// dial connects and upgrades, in a slot connect took for it; nil (and no
// error) when the server refused.
func (t *Transport) dial(ctx context.Context, key poolKey) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, t.opts.DialTimeout)
	defer cancel()
	host := strings.TrimPrefix(strings.TrimPrefix(key.base, "https://"), "http://")
	addr := host
	if _, _, err := net.SplitHostPort(host); err != nil {
		if strings.HasPrefix(key.base, "https://") {
			addr = net.JoinHostPort(host, "443")
		} else {
			addr = net.JoinHostPort(host, "80")
		}
	}
	nc, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.release(key.base)
		return nil, fmt.Errorf("frames: dial %s: %w", key.base, err)
	}
	nc = &slotConn{Conn: nc, release: func() { t.release(key.base) }}
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	c, err := t.upgrade(ctx, nc, key, host)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil || c == nil {
		_ = nc.Close()
		if err != nil && ctx.Err() != nil {
			err = ctx.Err()
		}
		if err != nil {
			return nil, fmt.Errorf("frames: upgrade %s: %w", key.base, err)
		}
	}
	return c, nil
}

func (t *Transport) upgrade(ctx context.Context, nc net.Conn, key poolKey, host string) (*conn, error) {
	if strings.HasPrefix(key.base, "https://") {
		cfg := t.opts.TLSClientConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = strings.Cut(host, ":")
			if h, _, err := net.SplitHostPort(host); err == nil {
				cfg.ServerName = h
			}
		}
		cfg.NextProtos = []string{"http/1.1"} // the upgrade needs HTTP/1.1
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		nc = tc
	}
	var b bytes.Buffer
	b.WriteString("GET /v1/frames HTTP/1.1\r\nHost: " + host + "\r\n")
	if key.auth != "" {
		b.WriteString("Authorization: " + key.auth + "\r\n")
	}
	b.WriteString("Connection: Upgrade\r\nUpgrade: " + Protocol + "\r\n\r\n")
	if _, err := nc.Write(b.Bytes()); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 32<<10)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = resp.Body.Close()
		// 401 and 503 are this request's to answer over HTTP; anything
		// else (404 from a server without frames) is remembered.
		if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusServiceUnavailable {
			t.mu.Lock()
			t.refused[key.base] = time.Now().Add(t.opts.RefusedFor)
			t.mu.Unlock()
		}
		return nil, nil
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), Protocol) {
		return nil, fmt.Errorf("101 answer upgrades to %q, not %s", resp.Header.Get("Upgrade"), Protocol)
	}
	t.upgrades.Add(1)
	return &conn{nc: nc, br: br, key: key}, nil
}

// exchange writes the frame on c and reads the answer's head. sent is
// false when the frame provably did not reach the server whole. On error c
// is closed.
func (t *Transport) exchange(ctx context.Context, c *conn, req *http.Request, frame []byte) (resp *http.Response, sent bool, err error) {
	stop := context.AfterFunc(ctx, func() { _ = c.nc.Close() })
	fail := func(e error) (*http.Response, bool, error) {
		stop()
		_ = c.nc.Close()
		return nil, sent, e
	}
	if _, err := c.nc.Write(frame); err != nil {
		return fail(fmt.Errorf("writing the frame: %w", err))
	}
	sent = true
	head, err := readHead(c.br)
	if err != nil {
		if errors.Is(err, errNoAnswer) && !c.reused {
			err = fmt.Errorf("the server closed a fresh connection without answering: %w", err)
		}
		return fail(err)
	}
	b := &body{t: t, c: c, ctx: ctx, stop: stop}
	resp = &http.Response{
		Status: fmt.Sprintf("%d %s", head.status, http.StatusText(head.status)), StatusCode: head.status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: head.header, Body: b, ContentLength: -1, Request: req,
	}
	// The usual small answer is one chunk: read it and the end mark, so the
	// answer has its Content-Length (answer frames do not carry it: the
	// outer server would otherwise send it chunked) and the connection goes
	// back to the pool before the caller reads.
	n, err := readChunkLen(c.br)
	if err != nil {
		return fail(err)
	}
	if n == 0 {
		b.finish()
		resp.Body = http.NoBody
		resp.ContentLength = 0
		if head.status != http.StatusNoContent && head.status != http.StatusNotModified {
			resp.Header.Set("Content-Length", "0")
		}
		return resp, true, nil
	}
	// A longer answer streams. Its length is known only if the server
	// names it (answer frames carry no Content-Length today): then the
	// body is checked against it.
	b.want = -1
	if cl := resp.Header.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			resp.ContentLength, b.want = v, v
		} else {
			resp.Header.Del("Content-Length")
		}
	}
	if n > smallAnswer {
		b.left = int(n) // streams from the first chunk
		return resp, true, nil
	}
	first := make([]byte, n)
	if _, err := io.ReadFull(c.br, first); err != nil {
		return fail(fmt.Errorf("reading the answer: %w", err))
	}
	if n2, err := readChunkLen(c.br); err != nil {
		return fail(err)
	} else if n2 == 0 {
		if b.want >= 0 && b.want != int64(n) {
			return fail(fmt.Errorf("answer of %d bytes, its Content-Length says %d", n, b.want))
		}
		b.finish()
		resp.Body = io.NopCloser(bytes.NewReader(first))
		resp.ContentLength = int64(n)
		resp.Header.Set("Content-Length", fmt.Sprint(n))
		return resp, true, nil
	} else {
		b.pre, b.left = first, int(n2)
	}
	return resp, true, nil
}

// body streams a multi-chunk answer; the connection goes back to the pool
// once the end mark is read, and is closed if the body is closed before.
type body struct {
	t    *Transport
	c    *conn
	ctx  context.Context // the request's: once it ends, reads fail
	stop func() bool     // stops closing c when the request's context ends
	pre  []byte          // an answer's first chunk, read with its head
	left int             // bytes left in the current chunk
	want int64           // the answer's Content-Length, -1 if unknown
	got  int64           // bytes read so far

	mu     sync.Mutex
	done   bool // the end mark was read
	closed bool
	err    error
}

func (b *body) Read(p []byte) (int, error) {
	// The context's end also closes the connection, but asynchronously:
	// what the socket already holds could still be read meanwhile.
	if err := b.ctx.Err(); err != nil && b.err == nil {
		return 0, b.fail(err)
	}
	if len(b.pre) > 0 {
		n := copy(p, b.pre)
		b.pre = b.pre[n:]
		b.got += int64(n)
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		n, err := readChunkLen(b.c.br)
		if err != nil {
			return 0, b.fail(err)
		}
		if n == 0 {
			if b.want >= 0 && b.got != b.want {
				return 0, b.fail(fmt.Errorf("answer of %d bytes, its Content-Length says %d", b.got, b.want))
			}
			b.finish()
			b.err = io.EOF
			return 0, io.EOF
		}
		b.left = int(n)
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.c.br.Read(p)
	b.left -= n
	b.got += int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, b.fail(fmt.Errorf("reading the answer: %w", err))
	}
	return n, nil
}

func (b *body) fail(err error) error {
	b.mu.Lock()
	b.done = true
	b.mu.Unlock()
	b.stop()
	_ = b.c.nc.Close()
	b.err = err
	return err
}

// finish: the answer was read whole; c serves the next request unless the
// body was closed or the context ended meanwhile (c is closed then).
func (b *body) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = true
	if !b.stop() || b.closed {
		_ = b.c.nc.Close()
		return
	}
	b.t.put(b.c)
}

func (b *body) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed && !b.done {
		// Not read to its end: the connection is mid-answer.
		b.stop()
		_ = b.c.nc.Close()
	}
	b.closed = true
	return nil
}
