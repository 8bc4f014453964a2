package cacheserver

import (
	"context"
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
// down, and forwards to it answer 503 shard_unavailable within
// healthTimeout (each checks again, at most once per healthAfter) until it
// answers. The forward that waited keeps waiting: the peer may apply it.
const (
	healthAfter   = time.Second
	healthTimeout = time.Second
)

type peerHealth struct {
	mu       sync.Mutex
	down     map[int]time.Time // peer → when it was last checked, while down
	checking map[int]bool
}

func newPeerHealth() *peerHealth {
	return &peerHealth{down: map[int]time.Time{}, checking: map[int]bool{}}
}

// healthy checks peer i at url if it is taken for down and was not checked
// within healthAfter (waiting for that check); false while it is down.
func (s *Server) peerHealthy(ctx context.Context, i int, url string) bool {
	h := s.health
	h.mu.Lock()
	last, isDown := h.down[i]
	h.mu.Unlock()
	if !isDown {
		return true
	}
	if time.Since(last) < healthAfter {
		return false
	}
	return s.checkPeer(ctx, i, url)
}

// watchForward checks peer i once the forward has waited healthAfter; the
// returned func stops the watch.
func (s *Server) watchForward(i int, url string) (stop func() bool) {
	return time.AfterFunc(healthAfter, func() { s.checkPeer(context.Background(), i, url) }).Stop
}

// checkPeer asks peer i for /healthz and records whether it answered; one
// check per peer at a time (another caller gets the last verdict).
func (s *Server) checkPeer(ctx context.Context, i int, url string) bool {
	h := s.health
	h.mu.Lock()
	if h.checking[i] {
		_, isDown := h.down[i]
		h.mu.Unlock()
		return !isDown
	}
	h.checking[i] = true
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	ok := false
	if req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/healthz", nil); err == nil {
		if resp, err := s.peers.client.Do(req); err == nil {
			resp.Body.Close()
			ok = resp.StatusCode == http.StatusOK
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checking[i] = false
	if ok {
		delete(h.down, i)
	} else {
		h.down[i] = time.Now()
	}
	return ok
}
