// Package cacheserver serves an engine.FanoutCache over HTTP: the /v1 API
// documented in docs/api/openapi.yaml, bearer-token auth, Prometheus
// metrics and health endpoints.
package cacheserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// Server is the HTTP API over one FanoutCache directory.
type Server struct {
	cfg     Config
	cache   *engine.FanoutCache
	log     *slog.Logger
	tokens  *tokenSource
	metrics *metrics
	mux     *http.ServeMux
	waiters *waitRegistry
	cluster *cluster
	peers   *peers
	health  *peerHealth // peers that stopped answering (peerhealth.go)
	// catchUps spares the peers the asking for an epoch none has.
	catchUps catchUpGate
	reb      *rebalancer
	// collLocks serialise drops of named collections with their requests.
	collLocks collectionLocks
	// admin holds the operator's token, the only one that may change the
	// topology; nil when the server was started without one.
	admin *tokenSource
	disk  *diskGuard
	// patterns lists the registered routes, for Routes.
	patterns []string
	// started is when the server was built: GET /v1/usage reports it so
	// that a reader of its counters sees a restart.
	started time.Time
	// frames tracks the connections upgraded to frames (frames.go).
	frames *frameConns
	// hotGet holds the metrics of the frames shortcut's route
	// (frames_hot.go); nil when the engine keeps no values in memory.
	hotGet *routeMetrics
}

// handlerFunc is a handler that returns its error for writeError.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// New opens the cache directory of cfg and builds the server.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	// A data directory written with another fanout would lose most of its
	// keys to the new hashing (python-diskcache opens it all the same).
	if err := engine.CheckFanout(cfg.DataDir, cfg.Fanout); err != nil {
		return nil, fmt.Errorf("cacheserver: --%s %d: %w", settings.FlagFanout, cfg.Fanout, err)
	}
	fc, err := engine.OpenFanout(ctx, cfg.DataDir, engine.FanoutOptions{
		Fanout:   cfg.Fanout,
		Timeout:  cfg.DatabaseTimeout,
		Settings: cfg.EngineSettings().Values(),
		// A cache can lose a damaged database and serve the rest.
		Quarantine: true,
		// Request goroutines block on the network between writes: a
		// lone write waits a moment for others to share its commit.
		BatchYield: true,
		// Nor does one wait for a WAL checkpoint.
		BackgroundCheckpoints: true,
		// A new named cache gets a fanout database's share of size_limit,
		// not python-diskcache's 1 GiB.
		CacheSizeLimit: -1,
		// Named caches, deques and indexes are made on request: bound the
		// memory and file descriptors their connections hold.
		MaxOpenCollections: cfg.MaxOpenCollections,
		SyncFile:           cfg.valueFileSync(),
		// Nothing else writes a server's data directory; with values in
		// memory nothing else may open it, which also spares each
		// transaction its file locks.
		HotBytes:  cfg.HotValueBytes,
		Exclusive: cfg.HotValueBytes > 0,
		PageSize:  cfg.PageSize,
		// Writes spread over the fanout wait for each other's commits and
		// then share theirs (commitGate): measured on 2 CPUs, one turn
		// takes a fifth of the CPU off a SET at 64 connections.
		CommitTurns: max(1, runtime.GOMAXPROCS(0)/2),
	})
	if err != nil {
		return nil, fmt.Errorf("cacheserver: open %s: %w", cfg.DataDir, err)
	}
	collMax := cfg.CollectionMaxBytes
	if collMax == 0 {
		collMax = fc.Settings().SizeLimit
	}
	fc.SetCollectionMaxBytes(collMax)
	for _, q := range fc.Quarantined() {
		log.Error("damaged database moved aside and started empty; its items are lost",
			slog.Int("fanout_database", q.Index), slog.String("moved_to", q.Path), slog.Any("error", q.Err))
	}
	applyGoMemoryLimit(&cfg, fc, os.Getenv("GOMEMLIMIT"), log)
	s := &Server{cfg: cfg, cache: fc, log: log, mux: http.NewServeMux(), waiters: newWaitRegistry(), started: time.Now(), frames: newFrameConns()}
	if !cfg.InsecureNoAuth {
		if s.tokens, err = newTokenSource(cfg.TokenFile, log); err != nil {
			_ = fc.Close()
			return nil, err
		}
	}
	s.metrics = newMetrics(fc)
	s.metrics.registry.MustRegister(serverCollector{s})
	if cfg.HotValueBytes > 0 {
		s.hotGet = s.hotGetMetrics()
	}
	// A newer topology than the persisted copy at start (flags, mounted
	// file) gets the same stale-data check as an announcement.
	if s.cluster, err = newClusterChecked(cfg, s.beforeAdopt); err != nil {
		_ = fc.Close()
		return nil, err
	}
	if note := s.cluster.startNote; note != "" {
		log.Warn("topology: " + note)
	}
	s.health = newPeerHealth()
	if s.peers, err = newPeers(cfg); err != nil {
		_ = fc.Close()
		return nil, err
	}
	s.metrics.registry.MustRegister(s.peers.collector())
	if cfg.AdminTokenFile != "" {
		if s.admin, err = newTokenSource(cfg.AdminTokenFile, log.With(slog.String("token", "admin"))); err != nil {
			_ = fc.Close()
			return nil, fmt.Errorf("admin token: %w", err)
		}
	}
	s.disk = newDiskGuard(cfg.DataDir, cfg.DiskReserveBytes, log, s.metrics.diskFull)
	s.disk.giveBack = fc.GiveBackSpace
	if s.reb, err = newRebalancer(s); err != nil {
		_ = fc.Close()
		return nil, err
	}
	s.cluster.beforeAdopt = s.beforeAdopt
	s.cluster.afterAdopt = s.reb.adopted
	s.cluster.status = s.reb.status
	s.routes()
	if s.cluster.firstRouted() {
		if err := s.discardUnowned(ctx, s.cluster.self, s.cluster.current(), "written before keys were routed"); err != nil {
			_ = fc.Close()
			return nil, err
		}
	}
	return s, nil
}

// Cache returns the served cache.
func (s *Server) Cache() *engine.FanoutCache { return s.cache }

// Registry returns the Prometheus registry behind /metrics.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.registry }

// Close closes the cache; call it after the HTTP server has shut down.
func (s *Server) Close() error {
	s.health.close()
	err := s.cache.Close()
	if s.reb != nil && s.reb.state != nil {
		_ = s.reb.state.close()
	}
	return err
}

// Mux returns the route multiplexer behind Handler (which adds the path
// checks), so tests can ask which route a request reaches.
func (s *Server) Mux() *http.ServeMux { return s.mux }

// Handler returns the root handler.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ServeMux answers paths with dot or empty segments with a redirect
		// to the cleaned path, which a client following it with its body
		// would turn into a write to another key or cache. Refuse instead.
		if !plainPath(r.URL.Path) {
			// (The profiles' index is /debug/pprof/, with its slash.)
			if p := r.URL.EscapedPath(); p != "/" && p != "/debug/pprof/" && path.Clean(p) != p {
				writeErrorJSON(w, http.StatusBadRequest, wire.Error{Code: wire.CodeBadRequest,
					Message: fmt.Sprintf("path %q has empty, '.' or '..' segments; percent-encode them (%%2E, ?ke=base64 for keys)", p)})
				return
			}
		}
		s.mux.ServeHTTP(w, r)
	})
}

// plainPath reports whether the unescaped path p has no empty, '.' or '..'
// segments and no trailing slash: then neither has its escaped form (which
// has the same '/' and '.' as p, or fewer where p's came from %2F and
// %2E), and the check of Handler needs no EscapedPath (an unescaping and
// an allocation per request).
func plainPath(p string) bool {
	return strings.HasPrefix(p, "/") && !strings.Contains(p, "//") && !strings.Contains(p, "/.") &&
		(p == "/" || !strings.HasSuffix(p, "/"))
}

// route registers a handler under pattern with auth, metrics, a request
// timeout and error mapping.
func (s *Server) route(pattern string, h handlerFunc) {
	s.patterns = append(s.patterns, pattern)
	s.mux.Handle(pattern, s.wrap(pattern, true, nil, h))
}

// publicRoute registers a handler that needs no token.
func (s *Server) publicRoute(pattern string, h handlerFunc) {
	s.patterns = append(s.patterns, pattern)
	s.mux.Handle(pattern, s.wrap(pattern, false, nil, h))
}

// wrap adds auth, metrics, the request timeout and error mapping to h; a
// non-nil resolve is the route's store resolver (storeRoute), left in the
// request's context for Server.store.
func (s *Server) wrap(pattern string, auth bool, resolve storeResolver, h handlerFunc) http.Handler {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		method, path = "ANY", pattern
	}
	rm := s.metrics.forRoute(path, method)
	sc := scopeOf(path)
	detail := strings.HasSuffix(path, "/stats") || strings.HasSuffix(path, "/info")
	// A move stream lasts as long as the rate cap makes it: the request
	// timeout (meant for one operation) does not bound it.
	timeout := s.cfg.RequestTimeout > 0 && !strings.HasPrefix(path, "/v1/rebalance/")
	stores := storesData(pattern)
	// A request on a named collection holds it against a drop, except the
	// drop itself (which holds it alone).
	collKind := collectionKind(pattern)
	if method == http.MethodDelete && strings.HasSuffix(path, "/{name}") {
		collKind = ""
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() { rm.observe(rec.status, time.Since(start)) }()
		hasBody := r.Body != nil && r.Body != http.NoBody
		if auth && !s.acceptsAuthorization(r.Header.Get("Authorization")) {
			rec.Header().Set("WWW-Authenticate", `Bearer realm="diskcache"`)
			// Drop the connection after the answer: kept alive, it would
			// hold one of --max-connections for the idle timeout for a
			// client without the token. Over HTTP/2 net/http takes this
			// header as a GOAWAY, then a close once the streams are done.
			rec.Header().Set("Connection", "close")
			if hasBody && r.ProtoMajor == 1 {
				// Answer at once: draining the unread body (net/http reads
				// up to 256 KiB of it) would let anyone hold connections
				// open by sending it slowly. A read deadline already past
				// makes that drain fail.
				defer func() { _ = http.NewResponseController(w).SetReadDeadline(time.Now()) }()
			}
			writeErrorJSON(rec, http.StatusUnauthorized, wire.Error{Code: wire.CodeUnauthorized, Message: "missing or wrong bearer token"})
			return
		}
		if r.URL.RawQuery != "" {
			if err := checkQuery(r.URL.RawQuery); err != nil {
				s.writeError(rec, r, badRequest(wire.CodeBadRequest, "%v", err))
				return
			}
		}
		if _, inMemory := r.Body.(*frameBody); hasBody && !inMemory {
			b := &clientBody{ReadCloser: r.Body, rc: http.NewResponseController(w), timeout: s.cfg.BodyTimeout}
			b.extend()
			r.Body = b
		}
		if !readOnly(r) && clientGone(r) {
			// Its client closed the connection before this write was
			// served: a server that was stopped (a frozen pod) and runs
			// again finds the requests its clients gave up on. No one
			// reads the answer, and the write, applied now, could undo
			// one the client has made since through another shard. All
			// the client sent is here: a body it cut short is answered
			// as ever (400), a whole request dropped (as a proxy drops
			// one whose client closed the connection).
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				s.writeError(rec, r, err)
				return
			}
			rec.status = statusClientGone
			panic(http.ErrAbortHandler)
		}
		ctx := r.Context()
		if c, _ := ctx.Value(connKey{}).(net.Conn); c != nil && !readOnly(r) {
			// Asked again where the write is applied or forwarded: a
			// server stopped after the check above and run again would
			// otherwise apply it (or send it to its owner) after writes
			// its client made since, through another shard.
			ctx = kv.WithAbandoned(ctx, func() bool { return peerClosed(c) })
		}
		switch {
		case timeout:
			var key any
			if resolve != nil {
				key = storeRouteKey{}
			}
			dc := withLazyDeadline(ctx, start.Add(s.cfg.RequestTimeout), key, resolve)
			defer dc.release()
			ctx = dc
		case resolve != nil:
			ctx = context.WithValue(ctx, storeRouteKey{}, resolve)
		}
		r = r.WithContext(ctx)
		err := error(nil)
		handled := false
		var stored func(context.Context) // see claimKey
		if s.cluster.sharded() {
			defer s.cluster.enter()()
			if a := s.cluster.current(); a != nil {
				rec.Header().Set(wire.HeaderEpoch, strconv.FormatInt(a.Epoch, 10))
			}
			if sc != scopeLocal && !ownPartAsked(r, sc) {
				// Forwarded requests (batch parts and fan-out sub-requests
				// included) have their epoch checked there: a lagging
				// sender's write would land where no read looks.
				handled, err = s.dispatch(rec, r, sc, detail)
			}
			if !handled && err == nil {
				stored, err = s.claim(r, sc, pattern)
			}
		}
		switch {
		case handled || err != nil:
		case stores && s.disk.isFull():
			// This shard's volume is full (one it forwards to may not be).
			err = &apiError{status: http.StatusInsufficientStorage, code: wire.CodeInsufficientStorage, msg: diskFullMessage}
		default:
			if sc != scopeLocal {
				s.metrics.serve()
			}
			if collKind != "" {
				defer s.collLocks.shared(collKind, r.PathValue("name"))()
			}
			err = h(rec, r)
			if stored != nil && err == nil && rec.status < http.StatusBadRequest {
				stored(ctx)
			}
		}
		if err != nil {
			if rec.wrote {
				// Headers are gone; all that is left is to cut the response.
				s.log.WarnContext(ctx, "error after response started", slog.String("path", r.URL.Path), slog.Any("error", err))
				panic(http.ErrAbortHandler)
			}
			s.writeError(rec, r, err)
		}
	})
}

// connKey is the context key of a request's connection (ConnContext).
type connKey struct{}

// statusClientGone counts, in the requests' metrics, the requests dropped
// because their client had closed the connection (nginx's 499).
const statusClientGone = 499

// clientGone reports whether the client of r has closed its connection:
// it waits for no answer any more.
func clientGone(r *http.Request) bool {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	return c != nil && peerClosed(c)
}

// acceptsAuthorization reports whether an Authorization header value
// carries a data token or the operator's (any when the server runs
// without tokens).
func (s *Server) acceptsAuthorization(authorization string) bool {
	if s.tokens == nil {
		return true
	}
	tok, ok := bearerOf(authorization)
	return ok && (s.tokens.accepts(tok) || s.admin != nil && s.admin.accepts(tok))
}

// isAdmin reports whether r carries the operator's token.
func (s *Server) isAdmin(r *http.Request) bool {
	if s.admin == nil {
		return false
	}
	got, ok := bearer(r)
	return ok && s.admin.accepts(got)
}

// bearer is the token of r's Authorization header. The scheme name is
// case-insensitive (RFC 9110 section 11.1).
func bearer(r *http.Request) (string, bool) { return bearerOf(r.Header.Get("Authorization")) }

// bearerOf is the token of an Authorization header value.
func bearerOf(authorization string) (string, bool) {
	scheme, got, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimLeft(got, " "), true
}

// clientBody bounds how long a request body may go without a byte
// arriving (a read deadline that each read pushes back), and marks the
// errors of reading it (a malformed chunk, a connection cut short, the
// deadline) as the client's, so they are answered 4xx wherever the engine
// or a decoder wrapped them.
type clientBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		// Lift the deadline: once the body is read the server watches the
		// connection for the client going away, and a deadline passing
		// while the handler works would cancel the request.
		_ = b.rc.SetReadDeadline(time.Time{})
	case err != nil:
		err = &clientBodyError{err: err}
	case n > 0:
		b.extend()
	}
	return n, err
}

func (b *clientBody) extend() {
	if b.timeout > 0 {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	}
}

// clientBodyError is a failure to read the request body.
type clientBodyError struct{ err error }

func (e *clientBodyError) Error() string { return "read request body: " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }

// statusRecorder remembers the status for metrics and whether the
// response has started.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// storeResolver finds the Store a route serves from its request's path
// values.
type storeResolver func(r *http.Request) (Store, error)

// storeRouteKey is the context key under which storeRoute leaves the
// route's resolver for Server.store.
type storeRouteKey struct{}

// storeRoute registers a route that serves the Store resolve finds: the
// handler asks Server.store for it.
func (s *Server) storeRoute(pattern string, resolve storeResolver, h handlerFunc) {
	s.patterns = append(s.patterns, pattern)
	s.mux.Handle(pattern, s.wrap(pattern, true, resolve, h))
}

// store resolves the Store a request addresses, with the resolver its
// route was registered with.
func (s *Server) store(r *http.Request) (Store, error) {
	resolve, ok := r.Context().Value(storeRouteKey{}).(storeResolver)
	if !ok {
		return nil, fmt.Errorf("cacheserver: route %q serves no store", r.Pattern)
	}
	return resolve(r)
}

// rootStore is the server's own cache (/v1/…).
func (s *Server) rootStore(*http.Request) (Store, error) { return s.cache, nil }

// namedCache is the named cache of /v1/caches/{name}/….
func (s *Server) namedCache(r *http.Request) (Store, error) {
	open := s.cache.Cache
	if findsNothingToDo(r) {
		open = s.cache.CacheIfExists // a read or a delete creates no cache
	}
	c, err := open(r.Context(), r.PathValue("name"))
	if err != nil {
		if errors.Is(err, kv.ErrInvalidName) {
			return nil, badRequest(wire.CodeBadName, "%v", err)
		}
		return nil, err
	}
	return c, nil
}

// indexStore is the cache that holds the index of /v1/indexes/{name}/keys/….
func (s *Server) indexStore(r *http.Request) (Store, error) {
	c, err := s.index(r)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Serve serves on l until ctx ends, then shuts down gracefully: stop
// accepting, finish in-flight requests (up to ShutdownTimeout), close the
// cache (checkpointing the WAL).
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	// net/http's error log, with what clients can make it say bounded
	// (errorlog.go); what it held back is reported when serving ends.
	errorLog := newErrorLog(s.log, s.metrics.tlsHandshakeErrors, time.Now, errorLogInterval)
	defer errorLog.flush()
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          errorLog.logger(),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		// For clientGone: the request frames of an upgraded connection
		// keep it too.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) },
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(s.cfg.TLSCert == "")
	protocols.SetHTTP2(s.cfg.TLSCert != "")
	srv.Protocols = &protocols
	// Connections upgraded to frames are not net/http's any more: they
	// close between frames on shutdown and are waited for below.
	srv.RegisterOnShutdown(s.frames.shutdown)

	if s.cfg.TLSCert != "" {
		certs, err := newCertReloader(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			_ = s.Close()
			return err
		}
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.get}
	}
	maxConns := s.cfg.MaxConnections
	if maxConns == 0 {
		maxConns = defaultMaxConnections()
	}
	l = newConnLimitListener(l, maxConns, srv.TLSConfig, s.metrics)
	// The health port, when asked for: the kubelet and Prometheus reach
	// the server there whatever the data connections (healthport.go).
	var health *http.Server
	var hl net.Listener
	if s.cfg.HealthListen != "" {
		var err error
		if hl, err = net.Listen("tcp", s.cfg.HealthListen); err != nil {
			_ = s.Close()
			return fmt.Errorf("cacheserver: --%s %s: %w", settings.FlagHealthListen, s.cfg.HealthListen, err)
		}
		hl = newHealthListener(hl, healthMaxConnections)
		health = s.newHealthServer(srv.TLSConfig, errorLog)
	}
	errc := make(chan error, 2)
	serve := func(srv *http.Server, l net.Listener) {
		var err error
		if s.cfg.TLSCert != "" {
			err = srv.ServeTLS(l, "", "")
		} else {
			err = srv.Serve(l)
		}
		errc <- err
	}
	go serve(srv, l)
	if health != nil {
		go serve(health, hl)
	}
	if d := s.cfg.CollectionIdleTimeout; d > 0 {
		go s.closeIdleCollections(ctx, d)
	}
	attrs := []any{slog.String("addr", l.Addr().String()), slog.String("data_dir", s.cfg.DataDir),
		slog.Int("fanout", s.cfg.Fanout), slog.Bool("tls", s.cfg.TLSCert != ""), slog.Bool("auth", s.tokens != nil),
		slog.Int("max_connections", maxConns)}
	if a := s.cluster.current(); a != nil {
		// The layout it starts by: which one a shard took, from its
		// volume or from the operator, is the first thing to know.
		attrs = append(attrs, slog.Int64("topology_epoch", a.Epoch), slog.Int("topology_shards", len(a.Shards)))
		if a.Previous != nil {
			attrs = append(attrs, slog.Int("topology_previous_shards", len(a.Previous.Shards)))
		}
	}
	s.log.Info("serving", attrs...)
	if hl != nil {
		s.log.Info("serving health", slog.String("health_addr", hl.Addr().String()),
			slog.Int("max_connections", healthMaxConnections))
	}
	if s.cluster.fileName != "" {
		go s.watchTopologyFile(ctx)
	}
	if s.cluster.sharded() {
		go s.reb.run(ctx)
	}
	select {
	case err := <-errc:
		_ = srv.Close()
		if health != nil {
			_ = health.Close()
		}
		_ = s.Close()
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	s.waiters.stop()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if health != nil {
		// Closed at once, as the main port stops accepting: a pod that
		// is shutting down is not ready, and its probes finish nothing.
		_ = health.Close()
	}
	err := srv.Shutdown(sctx)
	if ferr := s.frames.wait(sctx); err == nil {
		err = ferr
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("shutdown: requests still running after --shutdown-timeout %s were cut off", s.cfg.ShutdownTimeout)
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		s.log.Info("shut down cleanly")
	}
	return err
}

// watchTopologyFile adopts a newer topology from the mounted file, which
// the kubelet refreshes some time after the operator changed its ConfigMap.
func (s *Server) watchTopologyFile(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if changed, err := s.cluster.reloadFile(); err != nil {
				s.log.Warn("topology file", slog.Any("error", err))
			} else if changed {
				s.log.Info("topology adopted from file", slog.Int64("epoch", s.cluster.current().Epoch))
			}
		}
	}
}

// closeIdleCollections closes, until ctx ends, the database connections of
// collections unused for idle, so that many collections used now and then
// do not hold the process's file descriptors.
func (s *Server) closeIdleCollections(ctx context.Context, idle time.Duration) {
	t := time.NewTicker(max(idle/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.cache.CloseIdleCollections(idle)
		}
	}
}
