package cacheserver

import (
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// namedCacheRoutes serves what a named cache has beyond the key routes:
// python-diskcache Cache's queue operations and iteration.
func (s *Server) namedCacheRoutes() {
	const p = "/v1/caches/{name}"
	s.queueRoutes(p, s.namedEngineCache, "cache")
	s.route("GET "+p+"/keys", s.handleCacheKeys)
}

// namedEngineCache is the named cache of /v1/caches/{name}/….
func (s *Server) namedEngineCache(r *http.Request) (*engine.Cache, error) {
	st, err := s.namedCache(r)
	if err != nil {
		return nil, err
	}
	return st.(*engine.Cache), nil
}

// sortedCursorPrefix marks the cursors of a listing in sort order: the last
// key listed, "ks1.<kt>.<key as FormatKey writes it>".
const sortedCursorPrefix = "ks1."

func formatSortedCursor(k kv.Key) string {
	raw, kind := wire.FormatKey(k)
	return base64.RawURLEncoding.EncodeToString([]byte(sortedCursorPrefix + kind + "." + raw))
}

func parseSortedCursor(s string) (*kv.Key, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		if rest, ok := strings.CutPrefix(string(b), sortedCursorPrefix); ok {
			if kind, raw, ok := strings.Cut(rest, "."); ok {
				if k, err := wire.ParseKey(raw, kind); err == nil {
					return &k, nil
				}
			}
		}
	}
	return nil, badRequest(wire.CodeBadRequest, "cursor %q is not a cursor this server gave out for order=sorted", s)
}

// handleCacheKeys lists a page of a named cache's keys as a record stream
// (keys only), with the cursor of the next page in Diskcache-Next-Cursor
// when more remain: python-diskcache's iteration of a Cache. order=insertion
// (the default) lists by insertion, expired keys included, the keys there
// when the listing started (iter and reversed); order=sorted lists in
// SQLite's sort order of the keys (iterkeys). reverse=true goes backwards.
func (s *Server) handleCacheKeys(w http.ResponseWriter, r *http.Request) error {
	c, err := s.namedEngineCache(r)
	if err != nil {
		return err
	}
	reverse, err := boolParam(r, "reverse", false)
	if err != nil {
		return err
	}
	limit, err := intParam(r, "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return err
	}
	cursor := r.URL.Query().Get("cursor")
	var keys []kv.Key
	var more bool
	var next string
	switch order := r.URL.Query().Get("order"); order {
	case "", "insertion":
		at, err := parseCursor(cursor)
		if err != nil {
			return err
		}
		var pos engine.PagePosition
		keys, pos, more, err = c.KeyPage(r.Context(), at, reverse, int(limit))
		if err != nil {
			return err
		}
		next = formatCursor(pos)
	case "sorted":
		after, err := parseSortedCursor(cursor)
		if err != nil {
			return err
		}
		keys, more, err = c.SortedKeyPage(r.Context(), after, reverse, int(limit))
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			next = formatSortedCursor(keys[len(keys)-1])
		}
	default:
		return badRequest(wire.CodeBadRequest, "order %q is neither insertion nor sorted", order)
	}
	if more {
		w.Header().Set(wire.HeaderNextCursor, next)
	}
	w.Header().Set("Content-Type", wire.RecordsContentType)
	rw := wire.NewRecordWriter(w)
	for _, k := range keys {
		kj := wire.KeyToJSON(k)
		if err := rw.Write(wire.Record{Key: kj.Key, Kind: kj.Kind}, nil); err != nil {
			return err
		}
	}
	return nil
}
