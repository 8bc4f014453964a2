// Package client is the Go client of the cacheserver HTTP API: every route
// of docs/api/openapi.yaml, with contexts, connection reuse, retries with
// backoff for idempotent calls and typed errors.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/frames"
)

// Options configure a Client.
type Options struct {
	// Token is the bearer token.
	Token string
	// TokenFile is a file holding the bearer token (a mounted Secret's
	// key), used instead of Token. The client reads it again when it
	// changes and whenever the server answers 401 (then it sends the
	// request once more if the token changed), so a rotated Secret is
	// picked up without errors.
	TokenFile string
	// HTTPClient sends the requests over HTTP; nil means a client with
	// keep-alive connections, MaxConns and TLSConfig. Whichever it is, a
	// call that a server took and then answers neither it nor its
	// /healthz for a second is given up (see DirectOnly), so a frozen
	// server does not hold a call without a deadline forever; so is a
	// read of an answer's body (a Stream's) that gets nothing for as long
	// (ErrUnanswered). Behind a
	// Service the check may reach another pod than the call's: give
	// calls through one a deadline.
	HTTPClient *http.Client
	// TLSConfig is for https URLs (a private CA in RootCAs, say), over
	// HTTP and frames alike; nil means the system's roots. With
	// HTTPClient, set it on that client's transport instead (New refuses
	// both).
	TLSConfig *tls.Config
	// MaxConns caps the connections open to each server (the base URL and
	// each shard), idle or busy; a call beyond it waits for one to come
	// free, within its context. 0 means 64, negative means no cap. Keep
	// it under the servers' --max-connections divided by the clients that
	// share them: a server refuses connections over its cap (503
	// too_many_connections). With Frames, the upgraded connections and
	// the plain HTTP ones (HEAD, bodies over 1 MiB) have a cap each. Not
	// with HTTPClient (New refuses both): set its transport's
	// MaxConnsPerHost.
	MaxConns int
	// Retries is how many times an idempotent call is retried after a
	// connection error, a server that stopped answering (see DirectOnly)
	// or a 503, and any call after a 503
	// too_many_connections (the server refused the connection before
	// reading the request); 0 means 2, negative means none.
	Retries int
	// Backoff is the first retry's delay, doubled each time (up to 2s)
	// with jitter; 0 means 50ms. A server's Retry-After (up to 10s) makes
	// the delay at least that; when the delay would pass the context's
	// deadline, the call ends at once with the last error.
	Backoff time.Duration
	// Frames sends requests as frames on connections upgraded with GET
	// /v1/frames (docs/api/frames.md), saving HTTP/1.1's per-request work on
	// both sides; HEAD, bodies over 1 MiB or of unknown length, and servers
	// without frames go over HTTP (through HTTPClient's transport when it
	// is set). A streamed answer larger than 64 KiB carries no
	// Content-Length over frames (Stream.Size is then -1).
	Frames bool
	// DirectOnly sends every request to the base URL. By default the client
	// reads the topology of a sharded cache from the base URL and sends each
	// key straight to the shard that owns it, falling back to the base URL
	// when that shard cannot be reached, or stalls: a call it has not
	// answered for a second makes the client ask its /healthz, and if that
	// goes unanswered too (a frozen pod) the call is given up there. An
	// idempotent call then goes through the base URL; any other fails with
	// ErrShardTimeout, since the shard may have applied it. The shard's
	// calls go to the base URL for the next 5 seconds.
	DirectOnly bool
}

// Client talks to one cacheserver (or a Service in front of several).
type Client struct {
	base    *url.URL
	http    *http.Client
	probe   *http.Client // for health checks
	token   string
	file    *tokenFile // nil without Options.TokenFile
	retries int
	backoff time.Duration
	router  *router // nil with Options.DirectOnly
}

const (
	// maxBackoff caps the delay between retries.
	maxBackoff = 2 * time.Second
	// maxRetryAfter caps the wait a server's Retry-After asks for.
	maxRetryAfter = 10 * time.Second
	// defaultMaxConns is Options.MaxConns's default.
	defaultMaxConns = 64
)

// New returns a client of the server at baseURL (e.g. http://cache:8080).
func New(baseURL string, opts Options) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("client: base URL %q must be an absolute http or https URL, like http://host:8080", baseURL)
	}
	if opts.HTTPClient != nil && (opts.TLSConfig != nil || opts.MaxConns != 0) {
		return nil, errors.New("client: Options.TLSConfig and MaxConns are for the client's own transport: with HTTPClient, set them on its transport")
	}
	c := &Client{base: u, token: opts.Token, retries: opts.Retries, backoff: opts.Backoff}
	if opts.TokenFile != "" {
		f := &tokenFile{path: opts.TokenFile}
		if _, err := f.reload(); err != nil {
			return nil, err
		}
		c.file = f
	}
	// A redirect would resend a write to another path: never follow one.
	var hc http.Client
	if opts.HTTPClient != nil {
		hc = *opts.HTTPClient
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	maxConns := opts.MaxConns
	if maxConns == 0 {
		maxConns = defaultMaxConns
	}
	maxConns = max(maxConns, 0) // negative: no cap
	if opts.HTTPClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		tr.MaxConnsPerHost = maxConns
		tr.TLSClientConfig = opts.TLSConfig.Clone()
		// HTTP/1.1 over TLS too: a call given up on then closes its
		// connection, and the server drops the write if it has not
		// applied it yet; over HTTP/2 it would only reset the stream,
		// which a server stopped and resumed may see too late.
		tr.ForceAttemptHTTP2 = false
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetHTTP1(true)
		hc.Transport = tr
	}
	// Health checks (of a call that has not been answered for a second) go
	// on a connection of their own, outside MaxConns: a call waiting for
	// one of its connections is not the server stalling, and a server
	// answers /healthz even over its --max-connections.
	c.probe = &hc
	if tr, ok := hc.Transport.(*http.Transport); ok {
		ptr := tr.Clone()
		ptr.MaxConnsPerHost, ptr.DisableKeepAlives = 0, true
		c.probe = &http.Client{Transport: ptr, CheckRedirect: hc.CheckRedirect}
	}
	if opts.Frames {
		fallback := hc.Transport
		if fallback == nil {
			fallback = http.DefaultTransport
		}
		tlsConfig := opts.TLSConfig
		if tr, ok := fallback.(*http.Transport); ok {
			tlsConfig = tr.TLSClientConfig // HTTPClient's, or the one just made
		}
		hc.Transport = frames.New(frames.Options{Fallback: fallback, TLSClientConfig: tlsConfig,
			MaxIdlePerHost: 64, MaxConnsPerHost: maxConns})
	}
	c.http = &hc
	if c.retries == 0 {
		c.retries = 2
	}
	if c.retries < 0 {
		c.retries = 0
	}
	if c.backoff == 0 {
		c.backoff = 50 * time.Millisecond
	}
	if !opts.DirectOnly {
		c.router = &router{down: map[int]time.Time{}, checking: map[int]bool{}}
	}
	return c, nil
}

// Close closes the client's idle connections (their goroutines with them);
// calls in flight finish. A Client used after Close opens new connections.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// Error is an error answered by the server.
type Error struct {
	Status  int
	Code    string
	Message string
	// Body is the whole JSON error body, for the fields some errors add:
	// the shards' answers of a 502 partial_failure (shards), what a batch
	// set stored (stored, failed), the shard a 503 shard_unavailable names.
	Body json.RawMessage
}

func (e *Error) Error() string {
	return fmt.Sprintf("cacheserver: %d %s: %s", e.Status, e.Code, e.Message)
}

// Is matches the sentinel errors by code. A 404 for a path the server has
// no route for (a base URL with a wrong path, say) is ErrNoRoute, not
// ErrNotFound, so that it is never taken for a miss. ErrUnavailable and
// ErrUnanswered also match the answers that say the same of a shard
// behind the server, or of the connection.
func (e *Error) Is(target error) bool {
	s, ok := target.(sentinel)
	if !ok {
		return false
	}
	noRoute := e.Status == http.StatusNotFound && e.Code == wire.CodeNotFound && strings.HasPrefix(e.Message, "no route ")
	switch s {
	case ErrNoRoute:
		return noRoute
	case ErrUnavailable:
		return e.Code == wire.CodeUnavailable || e.Code == wire.CodeShardUnavailable || e.Code == wire.CodeTooManyConnections
	case ErrUnanswered:
		return e.Code == wire.CodeShardTimeout
	}
	return string(s) == e.Code && !(noRoute && s == ErrNotFound)
}

type sentinel string

func (s sentinel) Error() string { return string(s) }

// Sentinels to test Errors with errors.Is.
var (
	ErrNotFound     error = sentinel(wire.CodeNotFound)
	ErrEmpty        error = sentinel(wire.CodeEmpty)
	ErrNotNumeric   error = sentinel(wire.CodeNotNumeric)
	ErrTimeout      error = sentinel(wire.CodeTimeout)
	ErrUnauthorized error = sentinel(wire.CodeUnauthorized)
	ErrBadRequest   error = sentinel(wire.CodeBadRequest)
	ErrNotOwner     error = sentinel(wire.CodeNotOwner)
	ErrBadKey       error = sentinel(wire.CodeBadKey)
	ErrKeyTooLarge  error = sentinel(wire.CodeKeyTooLarge)
	ErrBadValue     error = sentinel(wire.CodeBadValue)
	ErrTooLarge     error = sentinel(wire.CodeValueTooLarge)
	ErrOverflow     error = sentinel(wire.CodeOverflow)
	ErrQueueFull    error = sentinel(wire.CodeQueueFull)
	// ErrUnavailable: the call was not served, so it was not applied: the
	// server could not be reached (the connection was refused, its name
	// does not resolve, TLS failed), or it answered so (503 unavailable
	// while shutting down, too_many_connections, shard_unavailable).
	// Repeating any call is safe.
	ErrUnavailable error = sentinel(wire.CodeUnavailable)
	// ErrUnanswered: a server took the call and its connection ended, or
	// the server stalled, before the answer; it may have been applied (do
	// not repeat an Incr). A shard_timeout answer (ErrShardTimeout) says
	// the same of a shard behind the server and matches it too.
	ErrUnanswered error = sentinel("unanswered")
	// ErrShardUnavailable: the shard owning the key could not be reached
	// (an ErrUnavailable).
	ErrShardUnavailable error = sentinel(wire.CodeShardUnavailable)
	// ErrShardTimeout: the owner took the call and did not answer; it may
	// have been applied (an ErrUnanswered).
	ErrShardTimeout error = sentinel(wire.CodeShardTimeout)
	// ErrPartialFailure: some shards failed their part (Error.Body says
	// what each answered).
	ErrPartialFailure error = sentinel(wire.CodePartialFailure)
	// ErrNoRoute: the server has no such route (see Error.Is).
	ErrNoRoute error = sentinel("no_route")
)

// request describes one call.
type request struct {
	method     string
	path       string // already escaped
	query      url.Values
	header     http.Header
	body       []byte    // replayable body
	stream     io.Reader // one-shot body (never retried)
	length     int64     // of stream, -1 unknown
	idempotent bool
}

// do sends a request, retrying idempotent ones on connection errors and
// 503s. The caller closes the response body. Non-2xx answers become *Error
// except the statuses listed in pass.
func (c *Client) do(ctx context.Context, req request, pass ...int) (*http.Response, error) {
	route := routeOf(req.path, req.query)
	attempts := 1
	if req.idempotent && req.stream == nil {
		attempts += c.retries
	}
	var lastErr error
	var retryAfter time.Duration // the last answer's Retry-After
	for attempt := 0; attempt < attempts; attempt++ {
		if attempt > 0 {
			if err := c.pause(ctx, attempt, retryAfter, lastErr); err != nil {
				return nil, err
			}
			retryAfter = 0
		}
		base, shard, skipped := c.target(ctx, route)
		resp, err := c.sendWatched(ctx, base, req)
		switch {
		case err == nil:
		case shard >= 0:
			resp, err = c.afterShardFailed(ctx, shard, base, req, err)
		case skipped >= 0 && notSent(err) && ctx.Err() == nil:
			// The owner is known down and the base URL (on the owner's
			// server, say) could not be reached either: name the shard.
			err = fmt.Errorf("%w: shard %d, known down, and then the base URL could not be reached: %w", ErrShardUnavailable, skipped, err)
		}
		if err == nil && resp.StatusCode == http.StatusUnauthorized && c.file != nil && req.stream == nil && !contains(pass, resp.StatusCode) {
			// The token may have been rotated under us: read it again and,
			// if it changed, send the request once more with the new one.
			if changed, ferr := c.file.reload(); ferr == nil && changed {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				resp, err = c.sendWatched(ctx, base, req)
			}
		}
		if err != nil {
			if ctx.Err() == nil {
				err = classify(err)
			}
			lastErr = fmt.Errorf("client: %s %s: %w", req.method, req.path, err)
			// A stalled server is retried too (only idempotent calls
			// have attempts left): through a Service the next attempt
			// may reach another pod.
			if ctx.Err() != nil || !(retryable(err) || errors.Is(err, errShardStalled)) {
				return nil, lastErr
			}
			continue
		}
		c.observe(resp.Header)
		if resp.StatusCode < 300 || contains(pass, resp.StatusCode) {
			return resp, nil
		}
		retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"))
		lastErr = readError(resp)
		var e *Error
		if errors.As(lastErr, &e) && e.Code == wire.CodeTooManyConnections {
			// Refused on accept, the request not served (503, or 408 on
			// a connection that sent none in time): any call may go
			// again.
			if req.stream == nil {
				attempts = max(attempts, 1+c.retries)
			}
			continue
		}
		if resp.StatusCode == http.StatusServiceUnavailable {
			continue
		}
		return nil, lastErr
	}
	return nil, lastErr
}

// pause waits before a retry: the backoff, or the last answer's
// Retry-After when longer. A wait that would pass the context's deadline
// is not begun: the call ends at once, with the last error.
func (c *Client) pause(ctx context.Context, attempt int, retryAfter time.Duration, lastErr error) error {
	d := min(c.backoff<<min(attempt-1, 30), maxBackoff)
	d += time.Duration(rand.Int64N(int64(d)/2 + 1))
	d = max(d, retryAfter)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return fmt.Errorf("client: a retry in %v would pass the context's deadline: %w; the last attempt: %w", d.Round(time.Millisecond), context.DeadlineExceeded, lastErr)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("client: waiting to retry: %w; the last attempt: %w", ctx.Err(), lastErr)
	case <-t.C:
		return nil
	}
}

// parseRetryAfter reads a Retry-After header (seconds or an HTTP date),
// capped at maxRetryAfter; 0 when absent or unreadable.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.Atoi(v); err == nil {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	return min(max(d, 0), maxRetryAfter)
}

// afterShardFailed decides what follows a failed attempt on a shard's own
// URL. The owner's pod cannot be reached (down, or its name does not resolve
// from here): the base URL forwards to it, or answers 503 naming it. A call
// that is not idempotent, or whose body was a one-shot stream, goes again
// only if it never left (one sent may have been applied: an incr would
// count twice); sent to a shard that then stalled, it is a 504
// shard_timeout, as the servers answer it.
func (c *Client) afterShardFailed(ctx context.Context, shard int, base *url.URL, req request, err error) (*http.Response, error) {
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The caller's deadline may be shorter than a stall takes to
			// tell: find out in the background, for the calls that follow.
			c.checkLater(shard, base)
		}
		return nil, err
	}
	replayable := req.idempotent && req.stream == nil
	switch {
	case errors.Is(err, errShardStalled):
		c.unreachable(shard)
		if !replayable {
			return nil, &Error{Status: http.StatusGatewayTimeout, Code: wire.CodeShardTimeout,
				Message: fmt.Sprintf("shard %d (%s) took the request and stopped answering; it may have been applied", shard, base.Host)}
		}
	case retryable(err) && (replayable || notSent(err)):
		c.unreachable(shard)
	default:
		return nil, err
	}
	resp, berr := c.sendWatched(ctx, c.base, req)
	if berr != nil && ctx.Err() == nil {
		// Name the shard: with the base URL on the shard's own server (its
		// keys, the base shard down), a bare "connection refused" would not.
		if notSent(berr) {
			return nil, fmt.Errorf("%w: shard %d (%s) and then the base URL could not be reached: %w", ErrShardUnavailable, shard, base.Host, berr)
		}
		return nil, fmt.Errorf("shard %d (%s) failed (%v), and then the base URL: %w", shard, base.Host, err, berr)
	}
	return resp, berr
}

// Stalls: an attempt on a shard that has not answered after stallCheckAfter
// asks the shard's /healthz, within stallCheckTimeout, and again every
// stallCheckAfter while it waits (as the servers check their peers).
const (
	stallCheckAfter   = time.Second
	stallCheckTimeout = time.Second
)

// errShardStalled ends an attempt on a server that took the request and
// answers neither it nor its health check (a frozen pod or node).
var errShardStalled = errors.New("the server answers neither the request nor its health check")

// sendWatched makes one attempt of req, given up with errShardStalled when
// the server stops answering: a frozen pod would otherwise hold the call
// until its context ends, forever for one without a deadline. On a shard's
// own URL, the base URL's server would then answer; the base URL (a
// Service) may reach another pod when retried. A call that merely takes
// long (a blocking pop) is not given up: the server's /healthz answers.
// The answer's body is watched too, while a read of it waits: a server
// that freezes in the middle of a large value ends that read with
// ErrUnanswered. A caller that does not read its stream for a while is
// not the server stalling.
func (c *Client) sendWatched(ctx context.Context, base *url.URL, req request) (*http.Response, error) {
	sctx, cancel := context.WithCancelCause(ctx)
	w := &stallWatch{waiting: true}
	w.mu.Lock()
	w.timer = time.AfterFunc(stallCheckAfter, func() {
		if !w.due() {
			return
		}
		w.checked(c.healthy(ctx, base), cancel)
	})
	w.mu.Unlock()
	resp, err := c.send(sctx, base, req)
	if w.answered() {
		if err == nil {
			resp.Body.Close() // answered as it was given up: its body is cut
		}
		w.stop()
		cancel(nil)
		return nil, fmt.Errorf("%w: %v", errShardStalled, err)
	}
	if err != nil {
		w.stop()
		cancel(nil)
		return nil, err
	}
	resp.Body = &watchedBody{ReadCloser: resp.Body, ctx: ctx, watch: w, cancel: cancel}
	return resp, nil
}

// stallWatch tells whether an attempt waits on a server that stopped
// answering: its timer checks the server's health every stallCheckAfter
// while the attempt waits for the answer's head, or for its body in a read
// that has made no progress since the last tick.
type stallWatch struct {
	timer *time.Timer
	mu    sync.Mutex
	// waiting: for the answer's head, or in a read of its body.
	waiting    bool
	progressed bool // the body read bytes since the last tick
	stalled    bool // given up: the server failed its health check
	stopped    bool
}

// due reports whether the server's health is to be asked now; if not, the
// timer is set for the next tick.
func (w *stallWatch) due() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return false
	}
	if !w.waiting || w.progressed {
		w.progressed = false
		w.timer.Reset(stallCheckAfter)
		return false
	}
	return true
}

// checked takes the health check's result: the attempt is given up when
// the server failed it while the attempt still waits.
func (w *stallWatch) checked(healthy bool, cancel context.CancelCauseFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.stopped:
	case healthy || !w.waiting || w.progressed:
		w.progressed = false
		w.timer.Reset(stallCheckAfter)
	default:
		w.stalled = true
		cancel(errShardStalled)
	}
}

// answered marks the answer's head as come (or the attempt as failed) and
// reports whether the attempt was given up first.
func (w *stallWatch) answered() (stalled bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waiting = false
	return w.stalled
}

// reading marks a read of the body as begun (true) or done, with n bytes,
// and reports whether the attempt was given up.
func (w *stallWatch) reading(begun bool, n int) (stalled bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waiting = begun
	if n > 0 {
		w.progressed = true
	}
	return w.stalled
}

func (w *stallWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.timer.Stop()
}

// watchedBody is an answer's body under its attempt's stallWatch; closing
// it releases the attempt's context.
type watchedBody struct {
	io.ReadCloser
	ctx    context.Context // the caller's
	watch  *stallWatch
	cancel context.CancelCauseFunc
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.watch.reading(true, 0)
	n, err := b.ReadCloser.Read(p)
	stalled := b.watch.reading(false, n)
	switch {
	case err == nil || err == io.EOF || b.ctx.Err() != nil:
	case stalled:
		err = fmt.Errorf("%w: %w, in the middle of the answer", ErrUnanswered, errShardStalled)
	default:
		// The connection ended before the whole answer came.
		err = classify(err)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.watch.stop()
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

// healthy reports whether the server at base answers /healthz in time.
func (c *Client) healthy(ctx context.Context, base *url.URL) bool {
	ctx, cancel := context.WithTimeout(ctx, stallCheckTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, base.String()+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := c.probe.Do(hr)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// send makes one attempt of req against base.
func (c *Client) send(ctx context.Context, base *url.URL, req request) (*http.Response, error) {
	u := *base
	u.RawPath = base.Path + req.path
	u.Path, _ = url.PathUnescape(u.RawPath)
	if req.query != nil {
		u.RawQuery = req.query.Encode()
	}
	var body io.Reader
	length := int64(0)
	switch {
	case req.stream != nil:
		// Hidden from net/http, which closes a body that is an io.Closer
		// when the connection fails: a stream never sent goes again
		// through the base URL.
		body, length = struct{ io.Reader }{req.stream}, req.length
	case req.body != nil:
		body, length = bytes.NewReader(req.body), int64(len(req.body))
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		hr.ContentLength = length
	}
	for k, v := range req.header {
		hr.Header[k] = v
	}
	if tok := c.bearer(); tok != "" {
		hr.Header.Set("Authorization", "Bearer "+tok)
	}
	return c.http.Do(hr)
}

// bearer is the token to send: the token file's, or Options.Token.
func (c *Client) bearer() string {
	if c.file != nil {
		return c.file.token()
	}
	return c.token
}

// tokenFile is Options.TokenFile: the token it held when last read.
type tokenFile struct {
	path string

	mu    sync.Mutex
	value string
	stamp string // modification time and size when last read
}

// reload reads the file and reports whether the token changed. An empty or
// missing file (a Secret being rewritten) keeps the last token.
func (f *tokenFile) reload() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readLocked()
}

func (f *tokenFile) readLocked() (bool, error) {
	st, err := os.Stat(f.path)
	var b []byte
	if err == nil {
		b, err = os.ReadFile(f.path)
	}
	if err != nil {
		if f.value != "" {
			return false, nil
		}
		return false, fmt.Errorf("client: token file: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		if f.value == "" {
			return false, fmt.Errorf("client: token file %s is empty", f.path)
		}
		return false, nil
	}
	changed := v != f.value
	f.value, f.stamp = v, fileStamp(st)
	return changed, nil
}

// token is the token, read again when the file's modification time or size
// changed (a stat per request, which costs far less than the request).
func (f *tokenFile) token() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st, err := os.Stat(f.path); err == nil && fileStamp(st) != f.stamp {
		_, _ = f.readLocked()
	}
	return f.value
}

func fileStamp(st os.FileInfo) string {
	return fmt.Sprintf("%d:%d", st.ModTime().UnixNano(), st.Size())
}

func contains(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// notSent reports whether err shows the request never reached a server:
// the connection could not be made (refused, no route, a name that does
// not resolve, a certificate not trusted), or frames never sent it.
func notSent(err error) bool {
	var oe *net.OpError
	var de *net.DNSError
	var ce *tls.CertificateVerificationError
	return errors.As(err, &de) || errors.As(err, &oe) && oe.Op == "dial" || errors.As(err, &ce) ||
		errors.Is(err, frames.ErrNotSent)
}

// classify marks a failed attempt (not its context's end) ErrUnavailable
// when the request provably did not reach a server, ErrUnanswered when it
// may have.
func classify(err error) error {
	switch {
	case errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnanswered):
		return err
	case notSent(err):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	default:
		return fmt.Errorf("%w: %w", ErrUnanswered, err)
	}
}

// retryable reports connection-level failures worth another try.
func retryable(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// readError turns an error response into *Error and closes its body.
func readError(resp *http.Response) error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var we wire.Error
	if json.Unmarshal(b, &we) != nil || we.Code == "" {
		we = wire.Error{Code: resp.Header.Get(wire.HeaderError), Message: strings.TrimSpace(string(b))}
		if we.Code == "" { // not a cacheserver's (a proxy's), or the answer to a HEAD of an older one
			we.Code = http.StatusText(resp.StatusCode)
		}
	}
	e := &Error{Status: resp.StatusCode, Code: we.Code, Message: we.Message}
	if json.Valid(b) {
		e.Body = b
	}
	return e
}

// doJSON sends a request and decodes a JSON answer into out (if not nil).
func (c *Client) doJSON(ctx context.Context, req request, out any, pass ...int) (int, error) {
	resp, err := c.do(ctx, req, pass...)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("client: decode %s answer: %w", req.path, err)
		}
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	return resp.StatusCode, nil
}

// Healthy calls /healthz.
func (c *Client) Healthy(ctx context.Context) error {
	_, err := c.doJSON(ctx, request{method: http.MethodGet, path: "/healthz", idempotent: true}, nil)
	return err
}

// Ready calls /readyz.
func (c *Client) Ready(ctx context.Context) error {
	_, err := c.doJSON(ctx, request{method: http.MethodGet, path: "/readyz", idempotent: true}, nil)
	return err
}

// ServerConfig reads GET /v1/config: the server's start-up configuration,
// the damaged databases it set aside at start and, with the admin token,
// the fingerprints of the data tokens it accepts.
func (c *Client) ServerConfig(ctx context.Context) (*wire.ServerConfig, error) {
	var sc wire.ServerConfig
	if _, err := c.doJSON(ctx, request{method: http.MethodGet, path: "/v1/config", idempotent: true}, &sc); err != nil {
		return nil, err
	}
	return &sc, nil
}
