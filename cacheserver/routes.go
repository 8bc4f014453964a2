package cacheserver

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// keyRoutes are served both for the server's cache (/v1/…) and for every
// named cache (/v1/caches/{name}/…): resolve finds the one a request names.
func (s *Server) keyRoutes(prefix string, resolve storeResolver) {
	s.storeRoute("GET "+prefix+"/keys/{key}", resolve, s.handleGet)
	s.storeRoute("HEAD "+prefix+"/keys/{key}", resolve, s.handleHead)
	s.storeRoute("PUT "+prefix+"/keys/{key}", resolve, s.handleSet)
	s.storeRoute("DELETE "+prefix+"/keys/{key}", resolve, s.handleDelete)
	s.storeRoute("POST "+prefix+"/keys/{key}/add", resolve, s.handleAdd)
	s.storeRoute("POST "+prefix+"/keys/{key}/replace", resolve, s.handleReplace)
	s.storeRoute("POST "+prefix+"/keys/{key}/touch", resolve, s.handleTouch)
	s.storeRoute("POST "+prefix+"/keys/{key}/pop", resolve, s.handlePop)
	s.storeRoute("POST "+prefix+"/keys/{key}/incr", resolve, s.handleIncr(false))
	s.storeRoute("POST "+prefix+"/keys/{key}/decr", resolve, s.handleIncr(true))
	s.storeRoute("POST "+prefix+"/batch/get", resolve, s.handleBatchGet)
	s.storeRoute("POST "+prefix+"/batch/set", resolve, s.handleBatchSet)
	s.storeRoute("POST "+prefix+"/batch/delete", resolve, s.handleBatchDelete)
	s.storeRoute("POST "+prefix+"/evict", resolve, s.handleEvict)
	s.storeRoute("POST "+prefix+"/expire", resolve, s.handleExpire)
	s.storeRoute("POST "+prefix+"/cull", resolve, s.handleCull)
	s.storeRoute("POST "+prefix+"/clear", resolve, s.handleClear)
	s.storeRoute("POST "+prefix+"/check", resolve, s.handleCheck)
	s.storeRoute("GET "+prefix+"/stats", resolve, s.handleStats)
	s.storeRoute("POST "+prefix+"/stats", resolve, s.handleStats)
	s.storeRoute("GET "+prefix+"/info", resolve, s.handleInfo)
	s.storeRoute("GET "+prefix+"/settings", resolve, s.handleGetSettings)
	s.storeRoute("PATCH "+prefix+"/settings", resolve, s.handlePatchSettings)
	s.storeRoute("PUT "+prefix+"/tag-index", resolve, s.handleTagIndex)
	s.storeRoute("DELETE "+prefix+"/tag-index", resolve, s.handleTagIndex)
}

func (s *Server) routes() {
	s.publicRoute("GET /healthz", s.handleHealthz)
	s.publicRoute("GET /readyz", s.handleReadyz)
	s.mux.Handle("GET /metrics", s.metricsHandler())
	s.pprofRoutes()
	s.route("GET /v1/topology", s.handleGetTopology)
	s.route("PUT /v1/topology", s.handlePutTopology)
	s.route("GET /v1/config", s.handleGetConfig)
	s.route("GET /v1/usage", s.handleUsage)
	s.route("GET /v1/frames", s.upgradeFrames)
	s.route("POST /v1/rebalance/receive", s.handleRebalanceReceive)
	s.route("GET /v1/rebalance/export", s.handleRebalanceExport)
	s.route("POST /v1/rebalance/pause", s.handleRebalancePause)
	s.route("POST /v1/rebalance/resume", s.handleRebalanceResume)
	s.keyRoutes("/v1", s.rootStore)
	s.keyRoutes("/v1/caches/{name}", s.namedCache)
	s.route("DELETE /v1/caches/{name}", s.handleDrop("cache"))
	s.namedCacheRoutes()
	s.route("GET /v1/collections", s.handleCollections)
	s.dequeRoutes()
	s.indexRoutes()
	s.recipeRoutes()
	s.route("/", func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set(wire.HeaderNoRoute, "1")
		return notFound(wire.CodeNotFound, "no route %s %s; see docs/api/openapi.yaml", r.Method, r.URL.Path)
	})
}

// Routes lists every route pattern the server registers (for the test that
// keeps docs/api/openapi.yaml complete).
func (s *Server) Routes() []string { return append([]string(nil), s.patterns...) }

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// handleReadyz answers 200 once every database of the fanout answers a write
// transaction within a second: the databases are open and writable. A full
// data volume answers 200 with status disk_full (see below).
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) error {
	if s.cluster.sharded() && s.cluster.current() == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "no topology"})
		return nil
	}
	// A full volume refuses only writes of new data: the shard stays ready,
	// so that clients can still read, and delete to free space (a shard
	// taken out of the Service cut off every new connection, and the
	// operator's settings, with it).
	status := "ready"
	if s.disk.isFull() {
		status = "disk_full"
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	for i := 0; i < s.cache.DatabaseCount(); i++ {
		if err := s.cache.Database(i).Transact(ctx, func(*engine.Tx) error { return nil }); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": err.Error()})
			return nil
		}
	}
	if status == "disk_full" {
		writeJSON(w, http.StatusOK, map[string]string{"status": status, "error": diskFullMessage})
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": status})
	return nil
}

// handleGetTopology answers the topology this shard routes by.
func (s *Server) handleGetTopology(w http.ResponseWriter, r *http.Request) error {
	if !s.cluster.sharded() {
		return notFound(wire.CodeNoTopology, "this server runs alone (no --shard-index): it has no topology")
	}
	writeJSON(w, http.StatusOK, s.cluster.view())
	return nil
}

// handlePutTopology adopts an announcement from the operator: the same
// one again is fine, an older or conflicting one is refused with the
// topology in force.
func (s *Server) handlePutTopology(w http.ResponseWriter, r *http.Request) error {
	switch {
	case s.admin == nil:
		return &apiError{status: http.StatusForbidden, code: wire.CodeAdminDisabled,
			msg: "this server was started without --admin-token-file: its topology cannot be changed over HTTP"}
	case !s.isAdmin(r):
		return &apiError{status: http.StatusForbidden, code: wire.CodeForbidden,
			msg: "changing the topology needs the operator's admin token, not the data token"}
	case !s.cluster.sharded():
		return badRequest(wire.CodeBadTopology, "this server runs alone (no --shard-index)")
	}
	var a topology.Announcement
	if err := decodeJSON(w, r, maxFanOutBody, &a); err != nil {
		return err
	}
	changed, err := s.cluster.adopt(a)
	if errors.Is(err, errTopologyConflict) {
		cur := s.cluster.current()
		return newRoutingError(http.StatusConflict, wire.CodeTopologyConflict, map[string]any{"topology": s.cluster.view()},
			"epoch %d %s the topology in force (epoch %d)", a.Epoch, map[bool]string{true: "differs from", false: "is older than"}[a.Epoch == cur.Epoch], cur.Epoch)
	}
	if err != nil {
		return err
	}
	if s.cluster.firstRouted() {
		go func() {
			if err := s.discardUnowned(context.WithoutCancel(r.Context()), s.cluster.self, s.cluster.current(), "written before keys were routed"); err != nil {
				s.log.Error("discarding what this shard does not own", slog.Any("error", err))
			}
		}()
	}
	if changed {
		s.log.Info("topology announced", slog.Int64("epoch", a.Epoch), slog.Int("shards", len(a.Shards)), slog.Int("self", s.cluster.self))
	}
	w.Header().Set(wire.HeaderEpoch, strconv.FormatInt(s.cluster.current().Epoch, 10))
	writeJSON(w, http.StatusOK, s.cluster.view())
	return nil
}
