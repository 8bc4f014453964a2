package cacheserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// recipeRoutes serves the engine's coordination recipes (locks, bounded
// semaphores, running averages, token-bucket rate limits). Each keeps its
// state in an item of the FanoutCache database that holds the key, as
// python-diskcache's recipes do on a FanoutCache.
func (s *Server) recipeRoutes() {
	s.route("POST /v1/locks/{key}/acquire", s.handleLockAcquire)
	s.route("POST /v1/locks/{key}/release", s.handleLockRelease)
	s.route("POST /v1/locks/{key}/refresh", s.handleLockRefresh)
	s.route("GET /v1/locks/{key}", s.handleLockStatus)
	s.route("POST /v1/semaphores/{key}/acquire", s.handleSemaphoreAcquire)
	s.route("POST /v1/semaphores/{key}/release", s.handleSemaphoreRelease)
	s.route("POST /v1/semaphores/{key}/refresh", s.handleSemaphoreRefresh)
	s.route("GET /v1/semaphores/{key}", s.handleSemaphoreStatus)
	s.route("POST /v1/averages/{key}", s.handleAverageAdd)
	s.route("GET /v1/averages/{key}", s.handleAverageGet(false))
	s.route("DELETE /v1/averages/{key}", s.handleAverageGet(true))
	s.route("POST /v1/ratelimits/{key}", s.handleRateLimit)
}

// maxSeconds bounds ttl, wait and per (about 31 years).
const maxSeconds = 1e9

// secondsParam reads a number of seconds (a float ≥ 0); 0 when absent.
func secondsParam(r *http.Request, name string) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxSeconds {
		return 0, badRequest(wire.CodeBadRequest, "%s=%q is not a number of seconds between 0 and %g", name, v, float64(maxSeconds))
	}
	return time.Duration(f * float64(time.Second)), nil
}

// ownerParam reads the required ?owner=.
func ownerParam(r *http.Request) (string, error) {
	owner := r.URL.Query().Get("owner")
	if owner == "" {
		return "", badRequest(wire.CodeBadRequest, "?owner= is required and must not be empty")
	}
	return owner, nil
}

// seconds writes a duration as float seconds for JSON.
func seconds(d time.Duration) float64 { return d.Seconds() }

// waitRegistry wakes requests waiting (?wait=) for a lock or semaphore
// when this server releases it, so that they need not poll for releases
// made here; releases by other processes are found by the timed retries.
// Topics name a database directory and a key.
type waitRegistry struct {
	mu sync.Mutex
	m  map[string]*waitEntry
	// stopping is closed when the server shuts down: every wait ends, and
	// answers that it did not get its turn, rather than holding the
	// shutdown up for as long as it was asked to wait.
	stopping chan struct{}
	stopOnce sync.Once
}

func newWaitRegistry() *waitRegistry {
	return &waitRegistry{m: map[string]*waitEntry{}, stopping: make(chan struct{})}
}

// stop ends every wait, now and later.
func (w *waitRegistry) stop() { w.stopOnce.Do(func() { close(w.stopping) }) }

type waitEntry struct {
	ch chan struct{}
	n  int
}

// watch returns a channel closed by the next notify of topic; call done
// when no longer waiting.
func (w *waitRegistry) watch(topic string) (<-chan struct{}, func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.m[topic]
	if e == nil {
		e = &waitEntry{ch: make(chan struct{})}
		w.m[topic] = e
	}
	e.n++
	return e.ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.m[topic] == e {
			if e.n--; e.n == 0 {
				delete(w.m, topic)
			}
		}
	}
}

// notify wakes everyone watching topic.
func (w *waitRegistry) notify(topic string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e := w.m[topic]; e != nil {
		close(e.ch)
		delete(w.m, topic)
	}
}

// topic names a recipe's key in its database.
func topic(kind string, db *engine.Cache, key kv.Key) string {
	raw, kt := wire.FormatKey(key)
	return kind + "\x00" + db.Directory() + "\x00" + kt + "\x00" + raw
}

// Polling bounds of ?wait=: besides the wake-ups of releases made through
// this process, a waiter looks again after these intervals (doubling), in
// case the holder was another process; and when the engine says the claim
// expires sooner, at that moment.
const (
	firstPoll = 10 * time.Millisecond
	maxPoll   = 500 * time.Millisecond
	// lateTry is how far past its deadline a waiter still makes its last
	// try (its timer fires a little late even on a quiet server).
	lateTry = 100 * time.Millisecond
)

// retryFor calls try until it succeeds, fails, or wait has passed; it never
// waits past the request's deadline (it keeps a margin to answer). try
// reports success and how long until the current holder's claim expires (0:
// unknown or never). Waiting is on timers and release notifications.
func (s *Server) retryFor(ctx context.Context, wait time.Duration, topic string, try func() (bool, time.Duration, error)) error {
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok {
		margin := max(min(time.Second, time.Until(d)/10), 0)
		if end := d.Add(-margin); end.Before(deadline) {
			deadline = end
		}
	}
	poll := firstPoll
	waiting := false
	for first := true; ; first = false {
		if !first {
			// Woken long past the deadline (the process was stopped, or
			// starved): the client may have given up on this answer, and a
			// lock taken now would be held by no one. Likewise once the
			// request is cancelled (its client went away).
			if err := ctx.Err(); err != nil {
				return err
			}
			if time.Since(deadline) > lateTry {
				return nil
			}
		}
		woken, done := s.waiters.watch(topic) // before trying: a release in between wakes us
		ok, hint, err := try()
		if err != nil || ok {
			done()
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			done()
			return nil
		}
		d := poll
		if hint > 0 && hint+time.Millisecond < d {
			d = hint + time.Millisecond
		}
		if !waiting {
			waiting = true
			s.metrics.waiting.Inc()
			defer s.metrics.waiting.Dec()
		}
		t := time.NewTimer(min(d, left))
		select {
		case <-ctx.Done():
			t.Stop()
			done()
			return ctx.Err()
		case <-s.waiters.stopping:
			t.Stop()
			done()
			return nil
		case <-woken:
			t.Stop()
		case <-t.C:
			poll = min(2*poll, maxPoll)
		}
		done()
	}
}

// LockState is the answer of the lock routes.
type LockState struct {
	Acquired  *bool   `json:"acquired,omitempty"`
	Locked    *bool   `json:"locked,omitempty"`
	Holder    string  `json:"holder"`
	Count     int     `json:"count"`
	Remaining float64 `json:"remaining"`
}

// lockParams resolves the key, its database and ?reentrant=.
func (s *Server) lockParams(r *http.Request) (kv.Key, *engine.Cache, bool, error) {
	key, err := s.pathKey(r)
	if err != nil {
		return key, nil, false, err
	}
	reentrant, err := boolParam(r, "reentrant", false)
	if err != nil {
		return key, nil, false, err
	}
	return key, s.cache.DatabaseFor(key), reentrant, nil
}

// ownedLock is what a lock's changes name: the lock (its database, whether
// reentrant, the tag its state is stored with) and the owner.
type ownedLock struct {
	key       kv.Key
	db        *engine.Cache
	reentrant bool
	owner     string
	tag       kv.Key
}

func (l ownedLock) lock() engine.Lock   { return engine.Lock{Cache: l.db, Tag: l.tag} }
func (l ownedLock) rlock() engine.RLock { return engine.RLock{Cache: l.db, Tag: l.tag} }

// lockOwnerParams is lockParams plus the required ?owner= and ?tag=&tt=.
func (s *Server) lockOwnerParams(r *http.Request) (ownedLock, error) {
	key, db, reentrant, err := s.lockParams(r)
	if err != nil {
		return ownedLock{}, err
	}
	owner, err := ownerParam(r)
	if err != nil {
		return ownedLock{}, err
	}
	tag, err := recipeTag(r)
	return ownedLock{key: key, db: db, reentrant: reentrant, owner: owner, tag: tag}, err
}

// recipeTag reads ?tag=&tt=, the tag a recipe's state item is stored with
// (python-diskcache's recipes take one); the zero Key stores none.
func recipeTag(r *http.Request) (kv.Key, error) {
	opts, err := setOptions(r)
	return opts.Tag, err
}

func lockTopic(db *engine.Cache, key kv.Key) string { return topic("lock", db, key) }

// handleLockAcquire takes the lock for owner (re-entering it with
// reentrant=true), for ttl seconds (0 or absent: until released); with
// wait it retries until it gets the lock or wait seconds have passed.
func (s *Server) handleLockAcquire(w http.ResponseWriter, r *http.Request) error {
	l, err := s.lockOwnerParams(r)
	if err != nil {
		return err
	}
	ttl, err := secondsParam(r, "ttl")
	if err != nil {
		return err
	}
	wait, err := secondsParam(r, "wait")
	if err != nil {
		return err
	}
	var out LockState
	err = s.retryFor(r.Context(), wait, lockTopic(l.db, l.key), func() (bool, time.Duration, error) {
		var acquired bool
		var holder string
		var count int
		var remaining time.Duration
		var err error
		if l.reentrant {
			acquired, holder, count, remaining, err = l.rlock().Acquire(r.Context(), l.key, l.owner, ttl)
		} else {
			acquired, holder, remaining, err = l.lock().Acquire(r.Context(), l.key, l.owner, ttl)
			count = 1 // a plain lock that is held is held once
		}
		out = LockState{Acquired: &acquired, Holder: holder, Count: count, Remaining: seconds(remaining)}
		return acquired, remaining, err
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// handleLockRelease releases owner's hold (once, for a reentrant lock) and
// wakes the waiters of this process.
func (s *Server) handleLockRelease(w http.ResponseWriter, r *http.Request) error {
	l, err := s.lockOwnerParams(r)
	if err != nil {
		return err
	}
	count := 0
	if l.reentrant {
		count, err = l.rlock().Release(r.Context(), l.key, l.owner)
	} else {
		err = l.lock().Release(r.Context(), l.key, l.owner)
	}
	if err != nil {
		return err
	}
	if count == 0 {
		s.waiters.notify(lockTopic(l.db, l.key))
	}
	writeJSON(w, http.StatusOK, map[string]any{"released": true, "count": count})
	return nil
}

func (s *Server) handleLockRefresh(w http.ResponseWriter, r *http.Request) error {
	l, err := s.lockOwnerParams(r)
	if err != nil {
		return err
	}
	ttl, err := secondsParam(r, "ttl")
	if err != nil {
		return err
	}
	if l.reentrant {
		err = l.rlock().Refresh(r.Context(), l.key, l.owner, ttl)
	} else {
		err = l.lock().Refresh(r.Context(), l.key, l.owner, ttl)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"refreshed": true})
	return nil
}

func (s *Server) handleLockStatus(w http.ResponseWriter, r *http.Request) error {
	key, db, reentrant, err := s.lockParams(r)
	if err != nil {
		return err
	}
	var locked bool
	var holder string
	var count int
	var remaining time.Duration
	if reentrant {
		locked, holder, count, remaining, err = engine.RLock{Cache: db}.Locked(r.Context(), key)
	} else {
		locked, holder, remaining, err = engine.Lock{Cache: db}.Locked(r.Context(), key)
		if locked {
			count = 1
		}
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, LockState{Locked: &locked, Holder: holder, Count: count, Remaining: seconds(remaining)})
	return nil
}

func semaphoreTopic(db *engine.Cache, key kv.Key) string {
	return topic("semaphore", db, key)
}

// handleSemaphoreAcquire takes one of ?value= (default 1) permits for
// owner, for ttl seconds (0: until released), retrying for wait seconds.
func (s *Server) handleSemaphoreAcquire(w http.ResponseWriter, r *http.Request) error {
	key, err := s.pathKey(r)
	if err != nil {
		return err
	}
	owner, err := ownerParam(r)
	if err != nil {
		return err
	}
	value, err := intParam(r, "value", 1, 1, math.MaxInt32)
	if err != nil {
		return err
	}
	ttl, err := secondsParam(r, "ttl")
	if err != nil {
		return err
	}
	wait, err := secondsParam(r, "wait")
	if err != nil {
		return err
	}
	tag, err := recipeTag(r)
	if err != nil {
		return err
	}
	db := s.cache.DatabaseFor(key)
	var acquired bool
	var inUse int
	var retry time.Duration
	err = s.retryFor(r.Context(), wait, semaphoreTopic(db, key), func() (bool, time.Duration, error) {
		var err error
		acquired, inUse, retry, err = engine.BoundedSemaphore{Cache: db, Tag: tag}.Acquire(r.Context(), key, owner, int(value), ttl)
		return acquired, retry, err
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"acquired": acquired, "in_use": inUse, "retry_after": seconds(retry)})
	return nil
}

func (s *Server) handleSemaphoreRelease(w http.ResponseWriter, r *http.Request) error {
	key, err := s.pathKey(r)
	if err != nil {
		return err
	}
	owner, err := ownerParam(r)
	if err != nil {
		return err
	}
	tag, err := recipeTag(r)
	if err != nil {
		return err
	}
	db := s.cache.DatabaseFor(key)
	inUse, err := engine.BoundedSemaphore{Cache: db, Tag: tag}.Release(r.Context(), key, owner)
	if err != nil {
		return err
	}
	s.waiters.notify(semaphoreTopic(db, key))
	writeJSON(w, http.StatusOK, map[string]int{"in_use": inUse})
	return nil
}

func (s *Server) handleSemaphoreRefresh(w http.ResponseWriter, r *http.Request) error {
	key, err := s.pathKey(r)
	if err != nil {
		return err
	}
	owner, err := ownerParam(r)
	if err != nil {
		return err
	}
	ttl, err := secondsParam(r, "ttl")
	if err != nil {
		return err
	}
	tag, err := recipeTag(r)
	if err != nil {
		return err
	}
	if err := (engine.BoundedSemaphore{Cache: s.cache.DatabaseFor(key), Tag: tag}).Refresh(r.Context(), key, owner, ttl); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"refreshed": true})
	return nil
}

func (s *Server) handleSemaphoreStatus(w http.ResponseWriter, r *http.Request) error {
	key, err := s.pathKey(r)
	if err != nil {
		return err
	}
	holders, err := engine.BoundedSemaphore{Cache: s.cache.DatabaseFor(key)}.Holders(r.Context(), key)
	if err != nil {
		return err
	}
	inUse := 0
	for _, n := range holders {
		inUse += n
	}
	writeJSON(w, http.StatusOK, map[string]any{"holders": holders, "in_use": inUse})
	return nil
}

// AverageState is the answer of the average routes.
type AverageState struct {
	Average float64 `json:"average"`
	Count   int64   `json:"count"`
}

// afterTx runs after (in the same transaction) once fn has succeeded, so
// that a recipe's result can be completed atomically.
type afterTx struct {
	c     *engine.Cache
	after func(tx *engine.Tx) error
}

func (a afterTx) Transact(ctx context.Context, fn func(tx *engine.Tx) error) error {
	return a.c.Transact(ctx, func(tx *engine.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return a.after(tx)
	})
}

// handleAverageAdd adds the number in the body to the running average and
// answers the average and count after, read in the same transaction.
func (s *Server) handleAverageAdd(w http.ResponseWriter, r *http.Request) error {
	key, err := s.pathKey(r)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 65))
	if err != nil {
		return err
	}
	if len(b) > 64 {
		return badRequest(wire.CodeBadValue, "the body must be one number")
	}
	x, err := parseFloatNumber(string(b))
	if err != nil {
		return badRequest(wire.CodeBadValue, "the body must be one number: %v", err)
	}
	opts, err := setOptions(r)
	if err != nil {
		return err
	}
	var count int64
	tx := afterTx{c: s.cache.DatabaseFor(key), after: func(tx *engine.Tx) error {
		// The state is [total, count] as JSON text (see engine.Averager).
		it, ok, err := tx.Get(key, engine.GetOptions{})
		if err != nil || !ok {
			return err
		}
		var pair []float64
		if json.Unmarshal(it.Value.Data, &pair) == nil && len(pair) == 2 {
			count = int64(pair[1])
		}
		return nil
	}}
	avg, err := engine.Averager{Cache: tx, Expire: opts.Expire, Tag: opts.Tag}.Add(r.Context(), key, x)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, AverageState{Average: avg, Count: count})
	return nil
}

// handleAverageGet answers the average and count (pop: and removes them);
// 404 when nothing was added.
func (s *Server) handleAverageGet(pop bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		key, err := s.pathKey(r)
		if err != nil {
			return err
		}
		a := engine.Averager{Cache: s.cache.DatabaseFor(key)}
		var avg float64
		var count int64
		if pop {
			avg, count, err = a.Pop(r.Context(), key)
		} else {
			avg, count, err = a.Get(r.Context(), key)
		}
		if err != nil {
			return err
		}
		if count == 0 {
			return notFound(wire.CodeNotFound, "no average under key %s", key)
		}
		writeJSON(w, http.StatusOK, AverageState{Average: avg, Count: count})
		return nil
	}
}

// handleRateLimit takes ?cost= (default 1) tokens from the bucket under
// the key (?count= tokens, refilled at count per ?per= seconds): 200 when
// allowed, 429 with Retry-After (whole seconds, rounded up) when not.
func (s *Server) handleRateLimit(w http.ResponseWriter, r *http.Request) error {
	key, err := s.pathKey(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if !q.Has("count") || !q.Has("per") {
		return badRequest(wire.CodeBadRequest, "?count= and ?per= are required")
	}
	count, err := intParam(r, "count", 0, 1, math.MaxInt32)
	if err != nil {
		return err
	}
	per, err := secondsParam(r, "per")
	if err != nil {
		return err
	}
	if per <= 0 {
		return badRequest(wire.CodeBadRequest, "per=%q must be a positive number of seconds", q.Get("per"))
	}
	cost, err := intParam(r, "cost", 1, 0, count)
	if err != nil {
		return err
	}
	tag, err := recipeTag(r)
	if err != nil {
		return err
	}
	allowed, retry, remaining, err := engine.Throttler{Cache: s.cache.DatabaseFor(key), Tag: tag}.Throttle(r.Context(), key, int(count), per, int(cost))
	if err != nil {
		return err
	}
	if allowed {
		writeJSON(w, http.StatusOK, map[string]any{"allowed": true, "remaining": remaining})
		return nil
	}
	w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(retry.Seconds())), 10))
	writeJSON(w, http.StatusTooManyRequests, map[string]any{
		"error":       wire.CodeRateLimited,
		"message":     fmt.Sprintf("rate limit of %d per %s exceeded; retry in %s", count, per, retry.Round(time.Millisecond)),
		"allowed":     false,
		"retry_after": seconds(retry),
		"remaining":   remaining,
	})
	return nil
}
