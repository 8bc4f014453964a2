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
// down, and forwards to it answer 503 shard_unavailable at once. Meanwhile
// the shard asks the peer's /healthz every downRecheck in the background
// and forwards to it again once it answers: no request is sent to a peer
// taken for down (it would wait out the check, and a write could be
// applied when the peer runs again, over newer ones). The forward that
// waited is given up too: a read, or a request still connecting (it never
// reached the peer), with 503 shard_unavailable, anything else with 504
// shard_timeout (the peer may still apply it).
const (
	healthAfter   = time.Second
	healthTimeout = time.Second
	downRecheck   = 250 * time.Millisecond
	// downForget: a peer taken for down that no forward has wanted for
	// this long is no longer asked (a shard removed from the topology
	// would be asked for ever); the next forward to it tries it again.
	downForget = time.Minute
)

type peerHealth struct {
	mu sync.Mutex
	// Peers are known by their URL, which a topology change may give
	// another index.
	down       map[string]bool      // peers taken for down
	wanted     map[string]time.Time // when a forward last wanted a peer taken for down
	rechecking map[string]bool      // peers a recheckPeer goroutine asks
	checks     map[string]*peerCheck
	closed     bool          // Close: no recheck starts, and those running end
	stop       chan struct{} // closed by Close
}

// peerCheck is one /healthz check of a peer; ok is set before done closes.
type peerCheck struct {
	done chan struct{}
	ok   bool
}

func newPeerHealth() *peerHealth {
	return &peerHealth{down: map[string]bool{}, wanted: map[string]time.Time{}, rechecking: map[string]bool{},
		checks: map[string]*peerCheck{}, stop: make(chan struct{})}
}

// close ends the background rechecks.
func (h *peerHealth) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.stop)
	}
}

// peerHealthy reports whether a forward may go to the peer at url: yes
// unless it is taken for down.
func (s *Server) peerHealthy(url string) bool {
	h := s.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down[url] {
		h.wanted[url] = time.Now()
		return false
	}
	return true
}

// peerAnswered records that the peer at url answered a forward.
func (s *Server) peerAnswered(url string) {
	h := s.health
	h.mu.Lock()
	delete(h.down, url)
	h.mu.Unlock()
}

// errPeerDown ends a forward whose owner failed its health check.
var errPeerDown = errors.New("the shard does not answer its health check")

// watchForward checks the peer at url once the forward has waited
// healthAfter, and gives the forward up if the peer does not answer; the
// returned func stops the watch (the answer came).
func (s *Server) watchForward(url string, giveUp context.CancelCauseFunc) (stop func()) {
	var mu sync.Mutex
	answered := false
	t := time.AfterFunc(healthAfter, func() {
		if !s.checkPeer(context.Background(), url) {
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

// checkPeer asks the peer at url for /healthz and records whether it answered. A
// check already running for the peer is waited for and its verdict taken.
func (s *Server) checkPeer(ctx context.Context, url string) bool {
	h := s.health
	h.mu.Lock()
	if c := h.checks[url]; c != nil {
		h.mu.Unlock()
		<-c.done // within healthTimeout
		return c.ok
	}
	c := &peerCheck{done: make(chan struct{})}
	h.checks[url] = c
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
		delete(h.down, url)
	} else {
		if !h.down[url] {
			h.down[url], h.wanted[url] = true, time.Now()
		}
		if !h.rechecking[url] && !h.closed {
			h.rechecking[url] = true
			go s.recheckPeer(url)
		}
	}
	delete(h.checks, url)
	h.mu.Unlock()
	close(c.done)
	return c.ok
}

// recheckPeer asks the peer at url, taken for down, for /healthz every downRecheck
// until it answers (or a forward's answer shows it is up), so that
// forwards go to it again within downRecheck of its return.
func (s *Server) recheckPeer(url string) {
	h := s.health
	t := time.NewTicker(downRecheck)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		h.mu.Lock()
		if h.down[url] && time.Since(h.wanted[url]) > downForget {
			delete(h.down, url)
		}
		if !h.down[url] {
			delete(h.rechecking, url)
			delete(h.wanted, url)
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		s.checkPeer(context.Background(), url)
	}
}
