package cacheserver

import (
	"bytes"
	"encoding/binary"
	"net/http"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
)

// The frames transport's shortcut for the commonest request there is: a
// GET of one key of the server's own cache, with no query and no header,
// on a server that is not one shard of several, whose value (or absence)
// the engine holds in memory. It answers what the handler chain answers
// (the same head and body, the same metrics) without building a request,
// routing it, or making a context for it: what memory answers needs none
// of these. Anything else takes the chain (TestFramesShortcutMatchesHTTP
// compares both).

// hotGetRoute is the route (and metrics label) the shortcut answers for.
const hotGetRoute = "/v1/keys/{key}"

// hotGetRequest stands for the request of a shortcut answer where the
// chain's helpers want one (writeItem, writeError): a GET.
var hotGetRequest = &http.Request{Method: http.MethodGet}

// serveHotGet answers payload (a request frame) into fw if it is such a
// get; false, with nothing written or counted, when the chain must serve it.
func (s *Server) serveHotGet(fw *frameWriter, payload []byte, auth []string) bool {
	key, ok := hotGetKey(payload)
	if !ok || s.hotGet == nil || s.cluster.sharded() || int64(len(key)) > s.cfg.MaxKeyBytes {
		return false
	}
	if !s.acceptsAuthorization(first(auth)) {
		return false // the chain answers 401
	}
	k, err := wire.ParseKey(key, "")
	if err != nil {
		return false
	}
	start := time.Now()
	it, live, found := s.cache.GetFromMemory(k)
	if !found {
		return false
	}
	s.metrics.serve()
	s.metrics.lookup(live)
	status := http.StatusOK
	if live {
		writeItem(fw, hotGetRequest, it, false)
	} else {
		status = http.StatusNotFound
		s.writeError(fw, hotGetRequest, notFound(wire.CodeNotFound, "key %s not found", k))
	}
	s.hotGet.observe(status, time.Since(start))
	return true
}

// hotGetKey returns the key of a request frame that is "GET /v1/keys/{key}"
// with no query and no header or body, when the key's segment holds only
// characters that stand for themselves in a path (no escapes, no dot
// segment), so that it is the key as the chain would read it.
func hotGetKey(p []byte) (string, bool) {
	// u8 method | u32 target length | target | u8 header count (0)
	if len(p) < 1+4+1 || p[0] != 1 {
		return "", false
	}
	n := binary.BigEndian.Uint32(p[1:5])
	if uint64(n)+6 != uint64(len(p)) || p[len(p)-1] != 0 {
		return "", false
	}
	seg, ok := bytes.CutPrefix(p[5:5+n], []byte("/v1/keys/"))
	if !ok || len(seg) == 0 || string(seg) == "." || string(seg) == ".." {
		return "", false
	}
	for _, c := range seg {
		if !plainPathByte[c] {
			return "", false
		}
	}
	return string(seg), true
}

// plainPathByte: RFC 3986 pchar without the percent, which a path segment
// carries as itself.
var plainPathByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~!$&'()*+,;=:@" {
		t[c] = true
	}
	return t
}()

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// hotGetMetrics returns the metrics of the route the shortcut answers for.
func (s *Server) hotGetMetrics() *routeMetrics {
	return s.metrics.forRoute(hotGetRoute, http.MethodGet)
}
