package cacheserver

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
)

// scrapeLimiter renders /metrics at most once per interval, however many
// scrapers ask: a scrape is answered by the first rendering that starts
// after it arrives (so it never sees figures older than itself), and
// scrapes waiting at the same time share that rendering. Rendering reads
// every fanout database and encodes a few thousand series; done once per
// scraper, 32 scrapers in a loop took the CPU from the data requests.
type scrapeLimiter struct {
	interval time.Duration
	gather   prometheus.Gatherer

	mu   sync.Mutex
	last time.Time  // when the last rendering started
	next *rendering // the rendering a scrape arriving now waits for

	// sleep waits before a rendering; joined is called when a scrape has
	// joined one (tests replace both).
	sleep  func(time.Duration)
	joined func()
}

type rendering struct {
	done chan struct{}
	body []byte
	err  error
}

var textFormat = expfmt.NewFormat(expfmt.TypeTextPlain)

func newScrapeLimiter(g prometheus.Gatherer, interval time.Duration) *scrapeLimiter {
	return &scrapeLimiter{gather: g, interval: interval, sleep: time.Sleep, joined: func() {}}
}

// render returns a rendering that started after the call.
func (l *scrapeLimiter) render(ctx context.Context) ([]byte, error) {
	l.mu.Lock()
	r := l.next
	if r == nil {
		r = &rendering{done: make(chan struct{})}
		l.next = r
		go l.run(r, time.Until(l.last.Add(l.interval)))
	}
	l.mu.Unlock()
	l.joined()
	select {
	case <-r.done:
		return r.body, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *scrapeLimiter) run(r *rendering, wait time.Duration) {
	if wait > 0 {
		l.sleep(wait)
	}
	l.mu.Lock()
	l.next, l.last = nil, time.Now() // later scrapes wait for the next one
	l.mu.Unlock()
	defer close(r.done)
	families, err := l.gather.Gather()
	if err != nil && len(families) == 0 {
		r.err = fmt.Errorf("gather metrics: %w", err)
		return
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, textFormat)
	for _, mf := range families {
		if err := enc.Encode(mf); err != nil {
			r.err = fmt.Errorf("encode metrics: %w", err)
			return
		}
	}
	r.body = buf.Bytes()
}

// metricsHandler serves /metrics through the limiter, behind the data
// token when the server was told so (--metrics-require-token).
func (s *Server) metricsHandler() http.Handler {
	l := newScrapeLimiter(s.metrics.registry, s.cfg.MetricsInterval)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.MetricsRequireToken && !s.acceptsAuthorization(r.Header.Get("Authorization")) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="diskcache"`)
			writeErrorJSON(w, http.StatusUnauthorized, wire.Error{Code: wire.CodeUnauthorized, Message: "missing or wrong bearer token (this server serves /metrics with the data token only)"})
			return
		}
		body, err := l.render(r.Context())
		if err != nil {
			writeErrorJSON(w, http.StatusServiceUnavailable, wire.Error{Code: wire.CodeUnavailable, Message: err.Error()})
			return
		}
		w.Header().Set("Content-Type", string(textFormat))
		_, _ = w.Write(body)
	})
}
