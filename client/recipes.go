package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// ErrRateLimited matches the error of a RateLimit call that was refused.
var ErrRateLimited error = sentinel(wire.CodeRateLimited)

// recipePath is the escaped path of a recipe's key and its ?kt=.
func recipePath(kind string, key kv.Key) (string, url.Values) {
	seg, q := keySegment(key)
	return "/v1/" + kind + "/" + seg, q
}

func formatSeconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

func fromSeconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Lock is a lock on the server (/v1/locks/{key}), held by an owner token,
// optionally with an expiry; RLock's is re-entrant.
type Lock struct {
	c         *Client
	path      string
	query     url.Values
	reentrant bool
}

// Lock returns the (non-reentrant) lock under key.
func (c *Client) Lock(key kv.Key) *Lock {
	p, q := recipePath("locks", key)
	return &Lock{c: c, path: p, query: q}
}

// WithTag stores the lock's state item with tag (python-diskcache's
// recipes take tag=), so that Evict(tag) removes it; it returns l.
func (l *Lock) WithTag(tag kv.Key) *Lock {
	setQuery(l.query, kv.SetOptions{Tag: tag})
	return l
}

// RLock returns the re-entrant lock under key: its owner may acquire it
// again, and must release it as many times.
func (c *Client) RLock(key kv.Key) *Lock {
	l := c.Lock(key)
	l.reentrant = true
	return l
}

// LockStatus describes a lock.
type LockStatus struct {
	// Acquired is set by Acquire: whether this call got the lock.
	Acquired bool `json:"acquired"`
	// Locked is set by Status.
	Locked bool `json:"locked"`
	// Holder is the owner holding the lock ("" when free or held by an
	// unknown holder, such as python-diskcache's Lock).
	Holder string `json:"holder"`
	// Count is the holder's depth (1 for a held plain lock).
	Count int `json:"count"`
	// Remaining is how long the hold has left; 0 when it never expires.
	Remaining time.Duration `json:"-"`
}

type lockAnswer struct {
	LockStatus
	Remaining float64 `json:"remaining"`
}

func (l *Lock) q(pairs ...string) url.Values {
	q := url.Values{}
	for k, v := range l.query {
		q[k] = v
	}
	if l.reentrant {
		q.Set("reentrant", "true")
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		q.Set(pairs[i], pairs[i+1])
	}
	return q
}

// Acquire takes the lock for owner, for ttl (0: until released). With wait
// > 0 the server retries until it gets the lock or wait has passed (bounded
// by its request timeout). Not getting it is not an error: see Acquired.
func (l *Lock) Acquire(ctx context.Context, owner string, ttl, wait time.Duration) (LockStatus, error) {
	var out lockAnswer
	_, err := l.c.doJSON(ctx, request{method: http.MethodPost, path: l.path + "/acquire",
		query: l.q("owner", owner, "ttl", formatSeconds(ttl), "wait", formatSeconds(wait))}, &out)
	out.LockStatus.Remaining = fromSeconds(out.Remaining)
	return out.LockStatus, err
}

// Release releases owner's hold (once, for a re-entrant lock) and returns
// the depth left. It fails with ErrNotOwner when owner does not hold it.
func (l *Lock) Release(ctx context.Context, owner string) (int, error) {
	var out struct {
		Count int `json:"count"`
	}
	_, err := l.c.doJSON(ctx, request{method: http.MethodPost, path: l.path + "/release", query: l.q("owner", owner)}, &out)
	return out.Count, err
}

// Refresh gives owner's hold a new ttl from now (0: no expiry). It fails
// with ErrNotOwner when owner does not hold the lock.
func (l *Lock) Refresh(ctx context.Context, owner string, ttl time.Duration) error {
	_, err := l.c.doJSON(ctx, request{method: http.MethodPost, path: l.path + "/refresh",
		query: l.q("owner", owner, "ttl", formatSeconds(ttl)), idempotent: true}, nil)
	return err
}

// Status reports whether the lock is held, by whom and for how long.
func (l *Lock) Status(ctx context.Context) (LockStatus, error) {
	var out lockAnswer
	_, err := l.c.doJSON(ctx, request{method: http.MethodGet, path: l.path, query: l.q(), idempotent: true}, &out)
	out.LockStatus.Remaining = fromSeconds(out.Remaining)
	return out.LockStatus, err
}

// Semaphore is a bounded semaphore on the server (/v1/semaphores/{key}):
// at most Value permits held at once, each by an owner token.
type Semaphore struct {
	c     *Client
	path  string
	query url.Values
	value int
}

// Semaphore returns the semaphore under key with value permits.
func (c *Client) Semaphore(key kv.Key, value int) *Semaphore {
	p, q := recipePath("semaphores", key)
	return &Semaphore{c: c, path: p, query: q, value: value}
}

// WithTag stores the semaphore's state item with tag; it returns s.
func (s *Semaphore) WithTag(tag kv.Key) *Semaphore {
	setQuery(s.query, kv.SetOptions{Tag: tag})
	return s
}

func (s *Semaphore) q(pairs ...string) url.Values {
	q := url.Values{}
	for k, v := range s.query {
		q[k] = v
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		q.Set(pairs[i], pairs[i+1])
	}
	return q
}

// SemaphoreStatus is the answer of Semaphore.Acquire.
type SemaphoreStatus struct {
	Acquired bool
	// InUse is the number of permits held afterwards.
	InUse int
	// RetryAfter is, when not acquired, how long until the soonest held
	// permit expires (0 when none expires).
	RetryAfter time.Duration
}

// Acquire takes a permit for owner, for ttl (0: until released); with wait
// > 0 the server retries until it gets one or wait has passed.
func (s *Semaphore) Acquire(ctx context.Context, owner string, ttl, wait time.Duration) (SemaphoreStatus, error) {
	var out struct {
		Acquired   bool    `json:"acquired"`
		InUse      int     `json:"in_use"`
		RetryAfter float64 `json:"retry_after"`
	}
	_, err := s.c.doJSON(ctx, request{method: http.MethodPost, path: s.path + "/acquire",
		query: s.q("owner", owner, "value", strconv.Itoa(s.value), "ttl", formatSeconds(ttl), "wait", formatSeconds(wait))}, &out)
	return SemaphoreStatus{Acquired: out.Acquired, InUse: out.InUse, RetryAfter: fromSeconds(out.RetryAfter)}, err
}

// Release gives back one of owner's permits and returns the permits held
// afterwards; ErrNotOwner when owner holds none.
func (s *Semaphore) Release(ctx context.Context, owner string) (int, error) {
	var out struct {
		InUse int `json:"in_use"`
	}
	_, err := s.c.doJSON(ctx, request{method: http.MethodPost, path: s.path + "/release", query: s.q("owner", owner)}, &out)
	return out.InUse, err
}

// Refresh makes all of owner's permits expire ttl from now (0: never);
// ErrNotOwner when owner holds none.
func (s *Semaphore) Refresh(ctx context.Context, owner string, ttl time.Duration) error {
	_, err := s.c.doJSON(ctx, request{method: http.MethodPost, path: s.path + "/refresh",
		query: s.q("owner", owner, "ttl", formatSeconds(ttl)), idempotent: true}, nil)
	return err
}

// Holders returns the permits each owner holds and their total.
func (s *Semaphore) Holders(ctx context.Context) (map[string]int, int, error) {
	var out struct {
		Holders map[string]int `json:"holders"`
		InUse   int            `json:"in_use"`
	}
	_, err := s.c.doJSON(ctx, request{method: http.MethodGet, path: s.path, query: s.q(), idempotent: true}, &out)
	return out.Holders, out.InUse, err
}

// Averager is a running average on the server (/v1/averages/{key}).
type Averager struct {
	c     *Client
	path  string
	query url.Values
	opts  kv.SetOptions // the state item's expiry and tag, given by every Add
}

// Averager returns the running average under key.
func (c *Client) Averager(key kv.Key) *Averager {
	p, q := recipePath("averages", key)
	return &Averager{c: c, path: p, query: q}
}

// With gives the average's state item opts' expiry (renewed by every Add,
// as python-diskcache's Averager(expire=)) and tag; it returns a.
func (a *Averager) With(opts kv.SetOptions) *Averager {
	a.opts = opts
	return a
}

type averageAnswer struct {
	Average float64 `json:"average"`
	Count   int64   `json:"count"`
}

// Add adds x and returns the average and count after.
func (a *Averager) Add(ctx context.Context, x float64) (float64, int64, error) {
	var out averageAnswer
	q := url.Values{}
	for k, v := range a.query {
		q[k] = v
	}
	setQuery(q, a.opts)
	_, err := a.c.doJSON(ctx, request{method: http.MethodPost, path: a.path, query: q,
		body: []byte(wire.FormatNumber(kv.Float(x))), header: http.Header{"Content-Type": {"text/plain"}}}, &out)
	return out.Average, out.Count, err
}

// Get returns the average and count; ErrNotFound when nothing was added.
func (a *Averager) Get(ctx context.Context) (float64, int64, error) {
	var out averageAnswer
	_, err := a.c.doJSON(ctx, request{method: http.MethodGet, path: a.path, query: a.query, idempotent: true}, &out)
	return out.Average, out.Count, err
}

// Pop returns the average and count and removes them; ErrNotFound when
// nothing was added.
func (a *Averager) Pop(ctx context.Context) (float64, int64, error) {
	var out averageAnswer
	_, err := a.c.doJSON(ctx, request{method: http.MethodDelete, path: a.path, query: a.query}, &out)
	return out.Average, out.Count, err
}

// RateLimit is a token bucket on the server (/v1/ratelimits/{key}): Count
// tokens, refilled at Count per Per.
type RateLimit struct {
	c     *Client
	path  string
	query url.Values
	count int
	per   time.Duration
}

// RateLimit returns the bucket under key allowing count calls per period.
func (c *Client) RateLimit(key kv.Key, count int, per time.Duration) *RateLimit {
	p, q := recipePath("ratelimits", key)
	return &RateLimit{c: c, path: p, query: q, count: count, per: per}
}

// WithTag stores the bucket's state item with tag; it returns r.
func (r *RateLimit) WithTag(tag kv.Key) *RateLimit {
	setQuery(r.query, kv.SetOptions{Tag: tag})
	return r
}

// RateResult is the answer of RateLimit.Take.
type RateResult struct {
	Allowed bool
	// Remaining is the tokens left.
	Remaining float64
	// RetryAfter is, when refused, how long until the bucket has the
	// tokens asked for.
	RetryAfter time.Duration
}

// Take takes cost tokens. When they are not there it returns the result
// (Allowed false, RetryAfter set) and an error matching ErrRateLimited.
func (r *RateLimit) Take(ctx context.Context, cost int) (RateResult, error) {
	q := url.Values{}
	for k, v := range r.query {
		q[k] = v
	}
	q.Set("count", strconv.Itoa(r.count))
	q.Set("per", formatSeconds(r.per))
	q.Set("cost", strconv.Itoa(cost))
	resp, err := r.c.do(ctx, request{method: http.MethodPost, path: r.path, query: q}, http.StatusTooManyRequests)
	if err != nil {
		return RateResult{}, err
	}
	defer resp.Body.Close()
	var out struct {
		Allowed    bool    `json:"allowed"`
		Remaining  float64 `json:"remaining"`
		RetryAfter float64 `json:"retry_after"`
		Code       string  `json:"error"`
		Message    string  `json:"message"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return RateResult{}, fmt.Errorf("client: decode rate limit answer: %w", err)
	}
	res := RateResult{Allowed: out.Allowed, Remaining: out.Remaining, RetryAfter: fromSeconds(out.RetryAfter)}
	if resp.StatusCode == http.StatusTooManyRequests {
		return res, &Error{Status: resp.StatusCode, Code: out.Code, Message: out.Message}
	}
	return res, nil
}
