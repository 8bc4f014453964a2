package cacheserver

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// indexRoutes serves python-diskcache's Index (an ordered mapping) for
// every named index of the FanoutCache (stored in index/<name>).
func (s *Server) indexRoutes() {
	const p = "/v1/indexes/{name}"
	s.route("GET "+p, s.handleIndexLen)
	s.route("DELETE "+p, s.handleDrop("index"))
	// An index's items are a cache's items in insertion order: the key
	// handlers of caches serve them, on the cache that holds the index.
	s.storeRoute("GET "+p+"/keys/{key}", s.indexStore, s.handleGet)
	s.storeRoute("HEAD "+p+"/keys/{key}", s.indexStore, s.handleHead)
	s.storeRoute("PUT "+p+"/keys/{key}", s.indexStore, s.handleSet)
	s.storeRoute("DELETE "+p+"/keys/{key}", s.indexStore, s.handleDelete)
	s.route("POST "+p+"/keys/{key}/setdefault", s.handleIndexSetDefault)
	s.storeRoute("POST "+p+"/keys/{key}/pop", s.indexStore, s.handlePop)
	s.route("POST "+p+"/popitem", s.handleIndexPopItem)
	s.queueRoutes(p, s.index, "index")
	s.route("GET "+p+"/items", s.handleIndexItems)
}

// queueRoutes serves python-diskcache's queue operations of a Cache (push,
// pull, peekitem; for caches also peek) on the cache that resolve finds:
// a named cache's, or the one that holds an index.
func (s *Server) queueRoutes(p string, resolve cacheResolver, what string) {
	s.route("GET "+p+"/peekitem", s.handlePeekItem(resolve, what))
	s.route("POST "+p+"/push", s.handlePush(resolve))
	s.route("POST "+p+"/pull", s.handlePull(resolve, what, false))
	if what == "cache" {
		s.route("GET "+p+"/peek", s.handlePull(resolve, what, true))
	}
}

// cacheResolver finds the engine cache a request on a named collection
// addresses.
type cacheResolver func(r *http.Request) (*engine.Cache, error)

// index resolves {name} to the cache that holds the index.
func (s *Server) index(r *http.Request) (*engine.Cache, error) {
	open := s.cache.Index
	if findsNothingToDo(r) {
		open = s.cache.IndexIfExists // a read or a take creates no index
	}
	x, err := open(r.Context(), r.PathValue("name"))
	if errors.Is(err, kv.ErrInvalidName) {
		return nil, badRequest(wire.CodeBadName, "%v", err)
	}
	if err != nil {
		return nil, err
	}
	return x.Cache(), nil
}

// indexKey resolves {name} and {key}.
func (s *Server) indexKey(r *http.Request) (*engine.Cache, kv.Key, error) {
	c, err := s.index(r)
	if err != nil {
		return nil, kv.Key{}, err
	}
	key, err := s.pathKey(r)
	return c, key, err
}

func (s *Server) handleIndexLen(w http.ResponseWriter, r *http.Request) error {
	c, err := s.index(r)
	if err != nil {
		return err
	}
	n, err := c.Len(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int64{"len": n})
	return nil
}

// handleIndexSetDefault stores the body under key unless key has an item,
// and answers the value now stored there (python's setdefault).
func (s *Server) handleIndexSetDefault(w http.ResponseWriter, r *http.Request) error {
	c, key, err := s.indexKey(r)
	if err != nil {
		return err
	}
	v, opts, err := s.readValue(w, r, c, kv.SetOptions{})
	if err != nil {
		return err
	}
	// Add is atomic; the value is then read back. Should the item vanish
	// in between (another client popped it), the default goes in again,
	// as python's setdefault retries.
	for attempt := 0; ; attempt++ {
		if attempt == 0 || opts.Body == nil {
			if _, err := c.Add(r.Context(), key, v, opts); err != nil {
				return bodyError(err)
			}
		}
		it, ok, err := c.Get(r.Context(), key, engine.GetOptions{Stream: true})
		if err != nil {
			return err
		}
		if ok {
			writeItem(w, r, it, false)
			return nil
		}
		if opts.Body != nil || attempt >= 10 {
			// A streamed default cannot be stored twice.
			return &apiError{status: http.StatusServiceUnavailable, code: wire.CodeUnavailable,
				msg: "the item was removed by another client while setdefault ran; try again"}
		}
	}
}

// handleIndexPopItem removes and answers the last item in insertion order
// (?last=false: the first), with its key in headers.
func (s *Server) handleIndexPopItem(w http.ResponseWriter, r *http.Request) error {
	c, err := s.index(r)
	if err != nil {
		return err
	}
	last, err := boolParam(r, "last", true)
	if err != nil {
		return err
	}
	var it engine.Item
	err = c.Transact(r.Context(), func(tx *engine.Tx) error {
		got, ok, err := tx.PeekItem(last, engine.GetOptions{Stream: true})
		if err != nil {
			return err
		}
		if !ok {
			return kv.ErrEmpty
		}
		it = got
		if _, err := tx.Delete(got.Key); err != nil {
			it = engine.Item{}
			_ = got.Close()
			return err
		}
		return nil
	})
	if err != nil {
		_ = it.Close()
		return emptyIndex(r, err)
	}
	writeItem(w, r, it, true)
	return nil
}

// emptyIndex words ErrEmpty for an index.
func emptyIndex(r *http.Request, err error) error { return emptyCollection(r, "index", err) }

// emptyCollection words ErrEmpty for the named collection of r.
func emptyCollection(r *http.Request, what string, err error) error {
	if errors.Is(err, kv.ErrEmpty) {
		return notFound(wire.CodeEmpty, "%s %q is empty", what, r.PathValue("name"))
	}
	return err
}

// handlePeekItem answers the last item in insertion order (?last=false:
// the first), with its key in headers, expired items removed on the way
// (python-diskcache's peekitem).
func (s *Server) handlePeekItem(resolve cacheResolver, what string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		c, err := resolve(r)
		if err != nil {
			return err
		}
		last, err := boolParam(r, "last", true)
		if err != nil {
			return err
		}
		it, err := c.PeekItem(r.Context(), last, engine.GetOptions{Stream: true})
		if err != nil {
			return emptyCollection(r, what, err)
		}
		writeItem(w, r, it, true)
		return nil
	}
}

// queueParams reads ?prefix= and ?side= of push and pull. A prefix whose
// keys ("<prefix>-" and 15 digits) would pass --max-key-bytes is refused:
// they could not be read by key.
func (s *Server) queueParams(r *http.Request, def engine.Side) (engine.QueueOptions, error) {
	side, err := sideParam(r, def)
	if err != nil {
		return engine.QueueOptions{}, err
	}
	prefix := r.URL.Query().Get("prefix")
	if !utf8.ValidString(prefix) {
		return engine.QueueOptions{}, badRequest(wire.CodeBadKey, "prefix %q is not valid UTF-8 text", prefix)
	}
	if prefix != "" && int64(len(prefix))+16 > s.cfg.MaxKeyBytes {
		return engine.QueueOptions{}, badRequest(wire.CodeKeyTooLarge, "a prefix of %d bytes makes keys of %d; the limit is %d", len(prefix), len(prefix)+16, s.cfg.MaxKeyBytes)
	}
	return engine.QueueOptions{Prefix: prefix, Side: side}, nil
}

// handlePush is python-diskcache's push: integer keys without a prefix,
// else "<prefix>-%015d" text keys; it answers the new key.
func (s *Server) handlePush(resolve cacheResolver) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		c, err := resolve(r)
		if err != nil {
			return err
		}
		q, err := s.queueParams(r, engine.Back)
		if err != nil {
			return err
		}
		opts, err := setOptions(r)
		if err != nil {
			return err
		}
		v, opts, err := s.readValue(w, r, c, opts)
		if err != nil {
			return err
		}
		key, err := c.Push(r.Context(), v, q, opts)
		if err != nil {
			return bodyError(err)
		}
		raw, kind := wire.FormatKey(key)
		writeJSON(w, http.StatusOK, map[string]string{"key": raw, "kt": kind})
		return nil
	}
}

// handlePull is python-diskcache's pull (default side front), or with
// peek its peek, which leaves the item in place.
func (s *Server) handlePull(resolve cacheResolver, what string, peek bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		c, err := resolve(r)
		if err != nil {
			return err
		}
		q, err := s.queueParams(r, engine.Front)
		if err != nil {
			return err
		}
		take := c.Pull
		if peek {
			take = c.Peek
		}
		it, ok, err := take(r.Context(), q, engine.GetOptions{Stream: true})
		if err != nil {
			return err
		}
		if !ok {
			return notFound(wire.CodeEmpty, "queue %q of %s %q is empty", q.Prefix, what, r.PathValue("name"))
		}
		writeItem(w, r, it, true)
		return nil
	}
}

// cursorPrefix marks index listing cursors, so that a cursor from elsewhere
// is rejected rather than misread. A cursor is "ix1.<after>.<bound>"
// (engine.PagePosition); one of an older server, "ix1.<after>", has no
// bound, which the next page sets.
const cursorPrefix = "ix1."

func formatCursor(at engine.PagePosition) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.FormatInt(at.After, 10) + "." + strconv.FormatInt(at.Bound, 10)))
}

func parseCursor(s string) (engine.PagePosition, error) {
	if s == "" {
		return engine.PagePosition{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		if rest, ok := strings.CutPrefix(string(b), cursorPrefix); ok {
			after, bound, hasBound := strings.Cut(rest, ".")
			a, err1 := strconv.ParseInt(after, 10, 64)
			var b int64
			var err2 error
			if hasBound {
				b, err2 = strconv.ParseInt(bound, 10, 64)
			}
			if err1 == nil && err2 == nil && a >= 0 && b >= 0 {
				return engine.PagePosition{After: a, Bound: b}, nil
			}
		}
	}
	return engine.PagePosition{}, badRequest(wire.CodeBadRequest, "cursor %q is not a cursor this server gave out", s)
}

// handleIndexItems lists a page of items in insertion order (reverse: the
// reverse) as a record stream, keys and (unless values=false) values, with
// the cursor of the next page in Diskcache-Next-Cursor when more remain.
// Cursors are positions in insertion order (rowids) with the end of the
// index when the listing started, so items added while a client pages
// through are never in the way of those that were there, and are not
// listed.
func (s *Server) handleIndexItems(w http.ResponseWriter, r *http.Request) error {
	c, err := s.index(r)
	if err != nil {
		return err
	}
	reverse, err := boolParam(r, "reverse", false)
	if err != nil {
		return err
	}
	values, err := boolParam(r, "values", true)
	if err != nil {
		return err
	}
	limit, err := intParam(r, "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return err
	}
	cursor, err := parseCursor(r.URL.Query().Get("cursor"))
	if err != nil {
		return err
	}
	entries, next, more, err := engine.NewIndex(c).Page(r.Context(), cursor, reverse, int(limit), values)
	if err != nil {
		return err
	}
	if more {
		w.Header().Set(wire.HeaderNextCursor, formatCursor(next))
	}
	w.Header().Set("Content-Type", wire.RecordsContentType)
	rw := wire.NewRecordWriter(w)
	for e, err := range entries {
		if err != nil {
			return err
		}
		if !values {
			kj := wire.KeyToJSON(e.Key)
			if err := rw.Write(wire.Record{Key: kj.Key, Kind: kj.Kind}, nil); err != nil {
				return err
			}
			continue
		}
		if err := writeItemRecord(rw, itemRecord(e.Item), e.Item); err != nil {
			return err
		}
	}
	return nil
}
