package cacheserver

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
)

// The health port (--health-listen) serves the kubelet's probes and
// Prometheus apart from the data connections: --max-connections does not
// apply to it, so a pod whose clients hold every data connection (or a
// storm of connections refused over the cap) stays live, ready and
// scraped. It serves nothing else, and bounds its own connections and
// their time so it cannot be used to exhaust the process's resources in
// turn.
const (
	// healthMaxConnections is the connections the health port holds at
	// once: the kubelet opens one per probe (three kinds) and a scraper
	// keeps one or two. Beyond it a connection waits, unaccepted, in the
	// kernel's backlog until one closes.
	healthMaxConnections = 32
	// A request head must arrive within healthReadHeaderTimeout (the TLS
	// handshake included), a request whole within healthReadTimeout; an
	// idle kept-alive connection is closed after healthIdleTimeout.
	healthReadHeaderTimeout = 5 * time.Second
	healthReadTimeout       = 10 * time.Second
	healthWriteTimeout      = 30 * time.Second
	healthIdleTimeout       = 30 * time.Second
	healthMaxHeaderBytes    = 8 << 10
)

// healthPaths are the paths the health port serves, with the handlers
// (and auth rules) of the main port.
var healthPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// healthHandler serves healthPaths through the main routes and answers
// 404 to the rest.
func (s *Server) healthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthPaths[r.URL.Path] {
			writeErrorJSON(w, http.StatusNotFound, wire.Error{Code: wire.CodeNotFound,
				Message: fmt.Sprintf("the health port serves only GET /healthz, /readyz and /metrics, not %s %s", r.Method, r.URL.Path)})
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

// newHealthServer is the http.Server of the health port: HTTP/1.1 only
// (one request at a time per connection), TLS with the main port's
// certificate when tlsConfig is set.
func (s *Server) newHealthServer(tlsConfig *tls.Config, errorLog *errorLog) *http.Server {
	srv := &http.Server{
		Handler:           s.healthHandler(),
		ReadHeaderTimeout: healthReadHeaderTimeout,
		ReadTimeout:       healthReadTimeout,
		WriteTimeout:      healthWriteTimeout,
		IdleTimeout:       healthIdleTimeout,
		MaxHeaderBytes:    healthMaxHeaderBytes,
		ErrorLog:          errorLog.logger(),
		TLSConfig:         tlsConfig,
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	srv.Protocols = &protocols
	return srv
}

// healthListener holds at most cap(slots) connections; Accept waits for
// one to close beyond that.
type healthListener struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newHealthListener(l net.Listener, limit int) *healthListener {
	return &healthListener{Listener: l, slots: make(chan struct{}, limit), done: make(chan struct{})}
}

func (l *healthListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *healthListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}
