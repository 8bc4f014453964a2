package cacheserver

import (
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
)

// pprofRoutes serves Go's runtime profiles under /debug/pprof/ to the
// operator's token only (--admin-token-file): a profile shows what the
// server does and a CPU profile costs it CPU, so the apps' data token does
// not open them. Without an admin token they answer 404 like any unknown
// path. See docs/benchmarks.md ("Profiling the server").
func (s *Server) pprofRoutes() {
	s.mux.HandleFunc("/debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		if s.admin == nil {
			writeErrorJSON(w, http.StatusNotFound, wire.Error{Code: wire.CodeNotFound,
				Message: "profiles need the server to run with --admin-token-file"})
			return
		}
		if !s.isAdmin(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="diskcache"`)
			writeErrorJSON(w, http.StatusUnauthorized, wire.Error{Code: wire.CodeUnauthorized,
				Message: "profiles need the operator's (admin) bearer token"})
			return
		}
		switch name := strings.TrimPrefix(r.URL.Path, "/debug/pprof/"); name {
		case "cmdline":
			pprof.Cmdline(w, r)
		case "profile":
			pprof.Profile(w, r)
		case "symbol":
			pprof.Symbol(w, r)
		case "trace":
			pprof.Trace(w, r)
		default:
			pprof.Index(w, r) // the index, and heap, allocs, goroutine, … by name
		}
	})
}
