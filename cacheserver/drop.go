package cacheserver

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// collectionLocks serialise dropping a named collection with the requests
// on it: a request holds its collection shared while its handler runs and
// a drop holds it alone, so a drop waits for the requests under way and a
// request that comes during a drop runs on the new, empty collection
// after it (never on a handle the drop closed).
type collectionLocks struct {
	mu sync.Mutex
	m  map[string]*collectionLock
}

type collectionLock struct {
	sync.RWMutex
	refs int // holders and waiters; the entry goes with the last
}

func (l *collectionLocks) get(id string) *collectionLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = make(map[string]*collectionLock)
	}
	e := l.m[id]
	if e == nil {
		e = &collectionLock{}
		l.m[id] = e
	}
	e.refs++
	return e
}

func (l *collectionLocks) put(id string, e *collectionLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.refs--; e.refs == 0 {
		delete(l.m, id)
	}
}

// shared holds the collection kind/name for a request; the returned
// function releases it.
func (l *collectionLocks) shared(kind, name string) func() {
	id := kind + "/" + name
	e := l.get(id)
	e.RLock()
	return func() { e.RUnlock(); l.put(id, e) }
}

// exclusive holds the collection kind/name for a drop.
func (l *collectionLocks) exclusive(kind, name string) func() {
	id := kind + "/" + name
	e := l.get(id)
	e.Lock()
	return func() { e.Unlock(); l.put(id, e) }
}

// dropCollection removes the named collection kind/name, its items and
// its files, and returns how many items it held (0 when there was none).
func (s *Server) dropCollection(ctx context.Context, kind, name string) (int64, error) {
	if err := engine.ValidateName(name); err != nil {
		return 0, badRequest(wire.CodeBadName, "%v", err)
	}
	defer s.collLocks.exclusive(kind, name)()
	var n int64
	var err error
	switch kind {
	case "cache":
		n, err = s.cache.DropCache(ctx, name)
	case "deque":
		n, err = s.cache.DropDeque(ctx, name)
	case "index":
		n, err = s.cache.DropIndex(ctx, name)
	default:
		return 0, badRequest(wire.CodeBadRequest, "kind %q: want cache, deque or index", kind)
	}
	if errors.Is(err, kv.ErrInvalidName) {
		return 0, badRequest(wire.CodeBadName, "%v", err)
	}
	return n, err
}

// handleDrop is DELETE /v1/caches/{name}, /v1/deques/{name} and
// /v1/indexes/{name}: the collection, its items and its files go; the
// next request that names it finds it empty.
func (s *Server) handleDrop(kind string) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		n, err := s.dropCollection(r.Context(), kind, r.PathValue("name"))
		return removed(w, n, err)
	}
}

// findsNothingToDo reports whether r, on a collection that does not exist,
// has nothing to do: it reads, takes (a pop, a pull, a delete), or changes
// what an empty collection does not have (a touch, an evict, expire, cull
// or clear, statistics turned off, a deque's rotate, reverse, remove,
// count, or item at an index). It then runs on an empty stand-in instead of
// creating the collection (so that a consumer polling a dropped deque, or a
// periodic expire, leaves it dropped). Any other write creates it.
func findsNothingToDo(r *http.Request) bool {
	if readOnly(r) {
		return true
	}
	method, path, _ := strings.Cut(r.Pattern, " ")
	switch method {
	case http.MethodDelete:
		return strings.HasSuffix(path, "/keys/{key}") || strings.HasSuffix(path, "/items/{index}")
	case http.MethodPut:
		return strings.HasSuffix(path, "/items/{index}")
	case http.MethodPost:
		if strings.HasSuffix(path, "/stats") {
			// Turning statistics off, or resetting counters that are 0,
			// changes nothing in a new cache; turning them on stores the
			// setting, and so creates it. A value that does not parse gets
			// its 400 from the stand-in.
			enable, err := parseBool(r.URL.Query().Get("enable"), true)
			return err != nil || !enable
		}
		for _, op := range []string{"/pop", "/popitem", "/pull", "/batch/delete", "/touch",
			"/evict", "/expire", "/cull", "/clear", "/rotate", "/reverse", "/remove", "/count"} {
			if strings.HasSuffix(path, op) {
				return true
			}
		}
	}
	return false
}
