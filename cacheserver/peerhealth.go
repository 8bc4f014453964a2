package cacheserver

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"
)

// Forwarding to a shard that stopped answering (stalled, not gone: its
// kernel still takes connections) would make every request for its keys
// wait out the request timeout, and a client's own timeout, shorter,
// would give up on the whole cache behind one URL. So a forward that has
// waited healthAfter for its answer makes the shard ask that peer's
// /healthz; a peer that does not answer within healthTimeout is taken for
// down, and forwards to it answer 503 shard_unavailable at once, but for
// one per healthAfter that tries it, until one is answered. The forward that waited is given up too: a read, or a
// request still connecting (it never reached the peer), with 503
// shard_unavailable, anything else with 504 shard_timeout (the peer may
// still apply it).
const (
	healthAfter   = time.Second
	healthTimeout = time.Second
)

type peerHealth struct {
	mu     sync.Mutex
	down   map[int]time.Time // peer → when it was last tried, while down
	checks map[int]*peerCheck
}

// peerCheck is one /healthz check of a peer; ok is set before done closes.
type peerCheck struct {
	done chan struct{}
	ok   bool
}

func newPeerHealth() *peerHealth {
	return &peerHealth{down: map[int]time.Time{}, checks: map[int]*peerCheck{}}
}

// peerHealthy reports whether a forward may go to peer i: yes unless it is
// taken for down, and then once per healthAfter (the forward tries it: an
// answer ends the down state, none within healthAfter makes its watch
// check again).
func (s *Server) peerHealthy(i int) bool {
	h := s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	last, isDown := h.down[i]
	if !isDown {
		return true
	}
	if time.Since(last) < healthAfter {
		return false
	}
	h.down[i] = time.Now() // this forward tries; the others wait their turn
	return true
}

// peerAnswered records that peer i answered a forward.
func (s *Server) peerAnswered(i int) {
	h := s.health
	h.mu.Lock()
	delete(h.down, i)
	h.mu.Unlock()
}

// errPeerDown ends a forward whose owner failed its health check.
var errPeerDown = errors.New("the shard does not answer its health check")

// watchForward checks peer i once the forward has waited healthAfter, and
// gives the forward up if the peer does not answer; the returned func
// stops the watch (the answer came).
func (s *Server) watchForward(i int, url string, giveUp context.CancelCauseFunc) (stop func()) {
	var mu sync.Mutex
	answered := false
	t := time.AfterFunc(healthAfter, func() {
		if !s.checkPeer(context.Background(), i, url) {
			mu.Lock()
			defer mu.Unlock()
			if !answered {
				giveUp(errPeerDown)
			}
		}
	})
	return func() {
		t.Stop()
		mu.Lock()
		answered = true
		mu.Unlock()
	}
}

// checkPeer asks peer i for /healthz and records whether it answered. A
// check already running for the peer is waited for and its verdict taken.
func (s *Server) checkPeer(ctx context.Context, i int, url string) bool {
	h := s.health
	h.mu.Lock()
	if c := h.checks[i]; c != nil {
		h.mu.Unlock()
		<-c.done // within healthTimeout
		return c.ok
	}
	c := &peerCheck{done: make(chan struct{})}
	h.checks[i] = c
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	if req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/healthz", nil); err == nil {
		if resp, err := s.peers.client.Do(req); err == nil {
			resp.Body.Close()
			c.ok = resp.StatusCode == http.StatusOK
		}
	}
	h.mu.Lock()
	if c.ok {
		delete(h.down, i)
	} else {
		h.down[i] = time.Now()
	}
	delete(h.checks, i)
	h.mu.Unlock()
	close(c.done)
	return c.ok
}
