package cacheserver

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/diskcache-operator/diskcache-operator/topology"
)

// Cluster-wide deletions during a move: they reach the shards of both
// layouts, with every shard's moves paused around them.

// gate lets a cluster-wide deletion pause the moves: while paused, no batch
// is sent and no pull runs, and pause returns once those in flight ended.
// A pause is a lease: it ends by itself if resume never comes.
type gate struct {
	mu     sync.Mutex
	cond   *sync.Cond
	until  time.Time
	active int
}

func (g *gate) paused() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return time.Now().Before(g.until)
}

func (g *gate) enter(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for time.Now().Before(g.until) {
		if err := ctx.Err(); err != nil {
			return err
		}
		t := time.AfterFunc(time.Until(g.until), func() { g.mu.Lock(); g.cond.Broadcast(); g.mu.Unlock() })
		g.cond.Wait()
		t.Stop()
	}
	g.active++
	return nil
}

func (g *gate) exit() {
	g.mu.Lock()
	g.active--
	g.cond.Broadcast()
	g.mu.Unlock()
}

func (g *gate) pause(lease time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if u := time.Now().Add(lease); u.After(g.until) {
		g.until = u
	}
	for g.active > 0 {
		g.cond.Wait()
	}
	// The lease runs from the moment nothing is in flight any more.
	if u := time.Now().Add(lease); u.After(g.until) {
		g.until = u
	}
}

func (g *gate) resume() {
	g.mu.Lock()
	g.until = time.Time{}
	g.cond.Broadcast()
	g.mu.Unlock()
}

// unionLayout returns a with the shards of the previous layout that left
// appended (StatefulSet ordinals keep their place: shards[i] is ordinal i).
func unionLayout(a *topology.Announcement) *topology.Announcement {
	u := *a
	u.Shards = slices.Clone(a.Shards)
	for _, p := range a.Previous.Shards {
		if !slices.Contains(u.Shards, p) {
			u.Shards = append(u.Shards, p)
		}
	}
	return &u
}

// isDeletion reports the cluster-wide operations that delete items.
func isDeletion(path string) bool {
	for _, op := range []string{"/clear", "/evict", "/expire", "/cull"} {
		if strings.HasSuffix(path, op) {
			return true
		}
	}
	return false
}

// pauseMoves pauses the moves on every shard of a and returns once each
// answered (a shard that cannot be reached moves nothing either, and the
// deletion will report it).
func (s *Server) pauseMoves(ctx context.Context, a *topology.Announcement) {
	s.eachPeer(ctx, a, "pause", func() { s.reb.gate.pause(pauseLease) })
}

func (s *Server) resumeMoves(a *topology.Announcement) {
	s.eachPeer(context.Background(), a, "resume", s.reb.gate.resume)
}

func (s *Server) eachPeer(ctx context.Context, a *topology.Announcement, op string, local func()) {
	var wg sync.WaitGroup
	for i, u := range a.Shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == s.cluster.self {
				local()
				return
			}
			if s.admin == nil {
				return
			}
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pauseLease)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, u+"/v1/rebalance/"+op, nil)
			if err != nil {
				return
			}
			s.peerHeaders(req, a)
			resp, err := s.peers.client.Do(req)
			if err != nil {
				s.log.Warn("rebalance: "+op+" a shard", slog.String("url", u), slog.Any("error", err))
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
}
