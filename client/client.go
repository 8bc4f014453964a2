// Package client is the Go client of the cacheserver HTTP API: every route
// of docs/api/openapi.yaml, with contexts, connection reuse, retries with
// backoff for idempotent calls and typed errors.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
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
	// HTTPClient sends the requests; nil means a client with keep-alive
	// connections and sane timeouts.
	HTTPClient *http.Client
	// Retries is how many times an idempotent call is retried after a
	// connection error or a 503, and any call after a 503
	// too_many_connections (the server refused the connection before
	// reading the request); 0 means 2, negative means none.
	Retries int
	// Backoff is the first retry's delay, doubled each time (up to 2s)
	// with jitter; 0 means 50ms.
	Backoff time.Duration
	// Frames sends requests as frames on connections upgraded with GET
	// /v1/frames (docs/api/frames.md), saving HTTP/1.1's per-request work on
	// both sides; HEAD, bodies over 1 MiB or of unknown length, and servers
	// without frames go over HTTP. Only when HTTPClient is nil. A streamed
	// answer larger than 64 KiB carries no Content-Length over frames
	// (Stream.Size is then -1).
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
	token   string
	file    *tokenFile // nil without Options.TokenFile
	retries int
	backoff time.Duration
	router  *router // nil with Options.DirectOnly
}

// maxBackoff caps the delay between retries.
const maxBackoff = 2 * time.Second

// New returns a client of the server at baseURL (e.g. http://cache:8080).
func New(baseURL string, opts Options) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q must be absolute, like http://host:8080", baseURL)
	}
	c := &Client{base: u, http: opts.HTTPClient, token: opts.Token, retries: opts.Retries, backoff: opts.Backoff}
	if opts.TokenFile != "" {
		f := &tokenFile{path: opts.TokenFile}
		if _, err := f.reload(); err != nil {
			return nil, err
		}
		c.file = f
	}
	if c.http == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		c.http = &http.Client{Transport: tr}
		if opts.Frames {
			c.http.Transport = frames.New(frames.Options{Fallback: tr, TLSClientConfig: tr.TLSClientConfig, MaxIdlePerHost: tr.MaxIdleConnsPerHost})
		}
	}
	// A redirect would resend a write to another path: never follow one.
	hc := *c.http
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
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
// ErrNotFound, so that it is never taken for a miss.
func (e *Error) Is(target error) bool {
	s, ok := target.(sentinel)
	if !ok {
		return false
	}
	noRoute := e.Status == http.StatusNotFound && e.Code == wire.CodeNotFound && strings.HasPrefix(e.Message, "no route ")
	if s == ErrNoRoute {
		return noRoute
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
	// ErrShardUnavailable: the shard owning the key could not be reached.
	ErrShardUnavailable error = sentinel(wire.CodeShardUnavailable)
	// ErrShardTimeout: the owner took the call and did not answer; it may
	// have been applied (do not repeat an Incr on it).
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
	for attempt := 0; attempt < attempts; attempt++ {
		if attempt > 0 {
			d := min(c.backoff<<min(attempt-1, 30), maxBackoff)
			d += time.Duration(rand.Int64N(int64(d)/2 + 1))
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		base, shard := c.target(ctx, route)
		var resp *http.Response
		var err error
		if shard < 0 {
			resp, err = c.send(ctx, base, req)
		} else {
			resp, err = c.sendShard(ctx, base, req)
			if err != nil {
				resp, err = c.afterShardFailed(ctx, shard, base, req, err)
			}
		}
		if err != nil {
			lastErr = fmt.Errorf("client: %s %s: %w", req.method, req.path, err)
			if ctx.Err() != nil || !retryable(err) {
				return nil, lastErr
			}
			continue
		}
		c.observe(resp.Header)
		if resp.StatusCode == http.StatusUnauthorized && c.file != nil && req.stream == nil && !contains(pass, resp.StatusCode) {
			// The token may have been rotated under us: read it again and,
			// if it changed, send the request once more with the new one.
			if changed, ferr := c.file.reload(); ferr == nil && changed {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp, err = c.send(ctx, base, req); err != nil {
					lastErr = fmt.Errorf("client: %s %s: %w", req.method, req.path, err)
					if ctx.Err() != nil || !retryable(err) {
						return nil, lastErr
					}
					continue
				}
				c.observe(resp.Header)
			}
		}
		if resp.StatusCode < 300 || contains(pass, resp.StatusCode) {
			return resp, nil
		}
		lastErr = readError(resp)
		if resp.StatusCode == http.StatusServiceUnavailable {
			var e *Error
			if req.stream == nil && errors.As(lastErr, &e) && e.Code == wire.CodeTooManyConnections {
				// Refused on accept, the request not served: any
				// call may go again.
				attempts = max(attempts, 1+c.retries)
			}
			continue
		}
		return nil, lastErr
	}
	return nil, lastErr
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
	return c.send(ctx, c.base, req)
}

// Stalls: an attempt on a shard that has not answered after stallCheckAfter
// asks the shard's /healthz, within stallCheckTimeout, and again every
// stallCheckAfter while it waits (as the servers check their peers).
const (
	stallCheckAfter   = time.Second
	stallCheckTimeout = time.Second
)

// errShardStalled ends an attempt on a shard that took the request and
// answers neither it nor its health check (a frozen pod or node).
var errShardStalled = errors.New("the shard answers neither the request nor its health check")

// sendShard makes one attempt of req on a shard's own URL, given up with
// errShardStalled when the shard stops answering: a frozen pod would
// otherwise hold the call until its context ends, forever for one without
// a deadline, while the base URL's server would have answered.
func (c *Client) sendShard(ctx context.Context, base *url.URL, req request) (*http.Response, error) {
	sctx, cancel := context.WithCancelCause(ctx)
	var mu sync.Mutex
	answered, stalled := false, false
	var check *time.Timer
	check = time.AfterFunc(stallCheckAfter, func() {
		healthy := c.healthy(ctx, base)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case answered:
		case healthy:
			check.Reset(stallCheckAfter)
		default:
			stalled = true
			cancel(errShardStalled)
		}
	})
	resp, err := c.send(sctx, base, req)
	mu.Lock()
	answered = true
	check.Stop()
	gaveUp := stalled
	mu.Unlock()
	if gaveUp {
		if err == nil {
			resp.Body.Close() // answered as it was given up: its body is cut
		}
		cancel(nil)
		return nil, fmt.Errorf("%w: %v", errShardStalled, err)
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// healthy reports whether the server at base answers /healthz in time.
func (c *Client) healthy(ctx context.Context, base *url.URL) bool {
	ctx, cancel := context.WithTimeout(ctx, stallCheckTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, base.String()+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// cancelOnClose releases an attempt's context with the answer's body.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
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

// retryable reports connection-level failures worth another try.
// notSent reports whether err shows the request never reached a server:
// the connection could not be made (refused, no route, a name that does
// not resolve).
func notSent(err error) bool {
	var oe *net.OpError
	var de *net.DNSError
	return errors.As(err, &de) || errors.As(err, &oe) && oe.Op == "dial"
}

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
		we = wire.Error{Code: http.StatusText(resp.StatusCode), Message: strings.TrimSpace(string(b))}
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
