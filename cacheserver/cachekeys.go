package cacheserver

import (
	"encoding/base64"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// namedCacheRoutes serves what a named cache has beyond the key routes:
// python-diskcache Cache's queue operations and iteration.
func (s *Server) namedCacheRoutes() {
	const p = "/v1/caches/{name}"
	s.queueRoutes(p, s.namedEngineCache, "cache")
	s.route("GET "+p+"/keys", s.handleCacheKeys)
	s.route("GET /v1/keys", s.handleRootKeys)
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

// listParams are the parameters of a key listing: reverse, limit, and
// match (a Redis-style glob, as SQLite GLOB; "" for every key).
type listParams struct {
	reverse bool
	limit   int
	match   string
}

func (s *Server) listParams(r *http.Request) (listParams, error) {
	var p listParams
	var err error
	if p.reverse, err = boolParam(r, "reverse", false); err != nil {
		return p, err
	}
	limit, err := intParam(r, "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return p, err
	}
	p.limit = int(limit)
	match := r.URL.Query().Get("match")
	if !utf8.ValidString(match) || int64(len(match)) > s.cfg.MaxKeyBytes {
		return p, badRequest(wire.CodeBadRequest, "match must be UTF-8 text of at most %d bytes", s.cfg.MaxKeyBytes)
	}
	p.match = sqliteGlob(match)
	return p, nil
}

// sqliteGlob turns a Redis-style pattern (*, ?, [...], [^...], \ escaping
// the next character) into SQLite's GLOB, which has no escape character:
// an escaped *, ? or [ becomes a class of that one character.
func sqliteGlob(p string) string {
	var b strings.Builder
	inClass := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\\' && i+1 < len(p):
			i++
			if e := p[i]; !inClass && (e == '*' || e == '?' || e == '[') {
				b.WriteByte('[')
				b.WriteByte(e)
				b.WriteByte(']')
			} else {
				b.WriteByte(e)
			}
		case c == '[' && !inClass:
			inClass = true
			b.WriteByte(c)
		case c == ']' && inClass:
			inClass = false
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// writeKeys answers a page of keys as a record stream (keys only), with the
// cursor of the next page when there is one.
func writeKeys(w http.ResponseWriter, keys []kv.Key, next string) error {
	if next != "" {
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

// handleCacheKeys lists a page of a named cache's keys, with the cursor of
// the next page in Diskcache-Next-Cursor when more remain: python-diskcache's
// iteration of a Cache. order=insertion (the default) lists by insertion,
// expired keys included, the keys there when the listing started (iter and
// reversed; match keeps the text keys that match a glob); order=sorted
// lists in SQLite's sort order of the keys (iterkeys). reverse=true goes
// backwards.
func (s *Server) handleCacheKeys(w http.ResponseWriter, r *http.Request) error {
	c, err := s.namedEngineCache(r)
	if err != nil {
		return err
	}
	p, err := s.listParams(r)
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
		page, err := c.KeyPage(r.Context(), at, p.reverse, p.limit, p.match)
		if err != nil {
			return err
		}
		keys, more, next = page.Keys, page.More, formatCursor(page.Next)
	case "sorted":
		if p.match != "" {
			return badRequest(wire.CodeBadRequest, "match lists in insertion order only")
		}
		after, err := parseSortedCursor(cursor)
		if err != nil {
			return err
		}
		keys, more, err = c.SortedKeyPage(r.Context(), after, p.reverse, p.limit)
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			next = formatSortedCursor(keys[len(keys)-1])
		}
	default:
		return badRequest(wire.CodeBadRequest, "order %q is neither insertion nor sorted", order)
	}
	if !more {
		next = ""
	}
	return writeKeys(w, keys, next)
}

// rootCursor is where a listing of the server's cache stands: the epoch it
// started under and the shard it is on (0 and 0 for a server of no
// topology, or one asked for its own part), and the position in that
// shard's databases.
type rootCursor struct {
	epoch int64
	shard int
	at    engine.FanoutPosition
}

const rootCursorPrefix = "rk1."

func (c rootCursor) String() string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%s%d.%d.%d.%d.%d", rootCursorPrefix,
		c.epoch, c.shard, c.at.Step, c.at.After, c.at.Bound))
}

func parseRootCursor(s string) (rootCursor, bool, error) {
	if s == "" {
		return rootCursor{}, false, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if rest, ok := strings.CutPrefix(string(b), rootCursorPrefix); err == nil && ok {
		if f := strings.Split(rest, "."); len(f) == 5 {
			var n [5]int64
			valid := true
			for i := range f {
				n[i], err = strconv.ParseInt(f[i], 10, 64)
				valid = valid && err == nil && n[i] >= 0 && (i == 0 || i >= 3 || n[i] <= math.MaxInt32)
			}
			if valid {
				return rootCursor{epoch: n[0], shard: int(n[1]), at: engine.FanoutPosition{Step: int(n[2]),
					PagePosition: engine.PagePosition{After: n[3], Bound: n[4]}}}, true, nil
			}
		}
	}
	return rootCursor{}, false, badRequest(wire.CodeBadRequest, "cursor %q is not a cursor this server gave out", s)
}

// listingShards is the order in which a listing of the server's cache
// visits the shards (by ordinal) and the base URL of each ordinal. Without
// a move: the layout's shards, 0 first (the last with reverse). During a
// move (an announcement with previous) it covers both layouts, a shard
// keeping its ordinal in both, and visits the shards keys leave before
// those they go to, so that a key there all along is met at least once
// while keys move (perhaps twice, as with Redis's SCAN): under jump
// consistent hash a grow moves keys only to the new shards (visited last,
// counting up) and a shrink only from the departing ones (visited first,
// counting down), whatever reverse says.
func listingShards(a *topology.Announcement, reverse bool) (order []int, urls []string) {
	urls = a.Shards
	descending := reverse
	if prev := a.Previous; prev != nil {
		if len(prev.Shards) > len(a.Shards) {
			urls = append(slices.Clip(a.Shards), prev.Shards[len(a.Shards):]...)
		}
		descending = len(prev.Shards) > len(a.Shards)
	}
	order = make([]int, len(urls))
	for i := range order {
		order[i] = i
		if descending {
			order[i] = len(urls) - 1 - i
		}
	}
	return order, urls
}

// listingRestart answers a listing page that cannot go on under the
// topology in force.
func listingRestart(format string, args ...any) error {
	return newRoutingError(http.StatusConflict, wire.CodeListingRestart, nil, format, args...)
}

// handleRootKeys lists a page of the server's cache's keys: its databases
// one after the other (python-diskcache's FanoutCache iteration), and on a
// cache of several shards the shards one after the other in the order of
// listingShards: a page of another shard is forwarded there. A request
// with Diskcache-Scope: shard lists this shard's keys only.
func (s *Server) handleRootKeys(w http.ResponseWriter, r *http.Request) error {
	p, err := s.listParams(r)
	if err != nil {
		return err
	}
	if order := r.URL.Query().Get("order"); order != "" && order != "insertion" {
		return badRequest(wire.CodeBadRequest, "the server's cache lists its keys in insertion order only (order=sorted is a named cache's iterkeys)")
	}
	cur, given, err := parseRootCursor(r.URL.Query().Get("cursor"))
	if err != nil {
		return err
	}
	var a *topology.Announcement
	var order []int
	if s.cluster.sharded() && r.Header.Get(wire.HeaderScope) != "shard" {
		if a = s.cluster.current(); a == nil {
			return newRoutingError(http.StatusServiceUnavailable, wire.CodeNoTopology, nil, "shard %d has no topology yet", s.cluster.self)
		}
		var urls []string
		order, urls = listingShards(a, p.reverse)
		switch {
		case !given:
			cur = rootCursor{epoch: a.Epoch, shard: order[0]}
		case cur.epoch != a.Epoch:
			return listingRestart("this listing started at topology epoch %d and the cache now routes by epoch %d: keys may have moved between shards; list again from the start", cur.epoch, a.Epoch)
		case cur.shard >= len(urls):
			return badRequest(wire.CodeBadRequest, "cursor names shard %d of %d", cur.shard, len(urls))
		}
		if cur.shard != s.cluster.self {
			if r.Header.Get(wire.HeaderForwardedEpoch) != "" {
				return badRequest(wire.CodeBadRequest, "a listing page for shard %d was forwarded to shard %d", cur.shard, s.cluster.self)
			}
			if !given {
				// The first page: the shard to start on gets the cursor
				// that names it, so that both agree where the run starts.
				q := r.URL.Query()
				q.Set("cursor", cur.String())
				r.URL.RawQuery = q.Encode()
			}
			// The departing shards of a shrink are in the listing too.
			visited := *a
			visited.Shards = urls
			handled, err := s.forward(w, r, nil, cur.shard, &visited)
			if err != nil || handled {
				return err
			}
			return listingRestart("the topology changed while listing; list again from the start")
		}
	}
	if cur.at.Step >= s.cache.DatabaseCount() {
		return badRequest(wire.CodeBadRequest, "cursor %q is not a cursor this server gave out", r.URL.Query().Get("cursor"))
	}
	page, err := s.cache.KeyPage(r.Context(), cur.at, p.reverse, p.limit, p.match)
	if err != nil {
		return err
	}
	keys, more := page.Keys, page.More
	next := rootCursor{epoch: cur.epoch, shard: cur.shard, at: page.Next}
	if !more && a != nil {
		if i := slices.Index(order, cur.shard); i+1 < len(order) {
			next, more = rootCursor{epoch: cur.epoch, shard: order[i+1]}, true
		}
	}
	if !more {
		return writeKeys(w, keys, "")
	}
	return writeKeys(w, keys, next.String())
}
