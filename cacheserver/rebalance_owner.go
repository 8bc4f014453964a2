package cacheserver

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// The new owner's rules while a move is in force: what it must pull from
// the previous owner before it answers, and what it refuses to import.

// stripe picks one of n locks for a key or collection (striped locks: a
// bounded set shared by hashing, instead of a lock per key).
func stripe(b []byte, n int) int {
	h := fnv.New32a()
	h.Write(b)
	return int(h.Sum32() % uint32(n))
}

// previousOwner returns the URL of the shard that owned routing under the
// previous layout, and whether that is another shard than this one (which
// owns it now).
func (s *Server) previousOwner(a *topology.Announcement, routing []byte) (string, bool) {
	if a == nil || a.Previous == nil || s.cluster.self >= len(a.Shards) {
		return "", false
	}
	if topology.Owner(routing, len(a.Shards)) != s.cluster.self {
		return "", false
	}
	p := a.Previous.Shards[topology.Owner(routing, len(a.Previous.Shards))]
	return p, p != a.Shards[s.cluster.self]
}

// keyAccess is what an operation does to a key, for claimKey.
type keyAccess int

const (
	accessRead  keyAccess = iota // get, head: the previous owner's copy counts
	accessWrite                  // set: the result does not depend on the old item
	accessRMW                    // add, incr, decr, pop, touch, delete, recipes: read then write
)

// claimKey runs before an operation on a key of the server's cache at its
// owner while a move is in force and the key's previous owner is another
// shard. Unless this shard settled the key already, it first pulls the item
// from the previous owner; a write then records the key as touched (an
// incoming copy is then refused).
//
// A set pulls too, although its result does not depend on the old item: a
// read that runs between the record of the write and the write itself
// reads only here, and must find the old item, not nothing. A set whose
// pull fails goes on without it (it must not fail for want of an item it
// overwrites); only reads alongside it may then miss. Such a set is
// recorded as touched only once it has stored its item: the caller runs
// the returned function then. Recorded before, a set that then failed
// (a bad value, a body cut short, the process killed) left the key with
// no item here and refused the previous owner's copy, the last write
// acknowledged, when the move handed it over. Until the record the stored
// row itself keeps older copies out (an import skips a key with a row).
func (s *Server) claimKey(ctx context.Context, key kv.Key, access keyAccess) (stored func(context.Context), err error) {
	a := s.cluster.current()
	routing := wire.Routing(key)
	prev, other := s.previousOwner(a, routing)
	if !other {
		return nil, nil
	}
	st := s.reb.state
	if st.isTouched(routing) || (access == accessRead && st.isSettled(routing)) {
		return nil, nil
	}
	// The gate first, then the key: a pull waiting out a pause must not
	// hold the lock an incoming batch (which a pause waits for) needs.
	if err := s.reb.gate.enter(ctx); err != nil {
		return nil, err
	}
	defer s.reb.gate.exit()
	mu := &s.reb.keyLocks[stripe(routing, len(s.reb.keyLocks))]
	mu.Lock()
	defer mu.Unlock()
	if !st.isSettled(routing) {
		err := s.pullKey(ctx, a, prev, key, routing)
		switch {
		case err == nil:
			st.settle(routing)
		case access != accessWrite:
			return nil, err
		default:
			return func(ctx context.Context) {
				// Stored: recorded even if its client has gone meanwhile.
				if err := st.touch(context.WithoutCancel(ctx), routing); err != nil {
					s.log.WarnContext(ctx, "a write stored while its key's previous owner could not be asked was not recorded; its row keeps the previous owner's copy out", slog.Any("error", err))
				}
			}, nil
		}
	}
	if access == accessRead {
		return nil, nil
	}
	return nil, st.touch(ctx, routing)
}

// pullKey imports key from its previous owner if it is not here (inside
// the gate, with the key's lock held).
func (s *Server) pullKey(ctx context.Context, a *topology.Announcement, prev string, key kv.Key, routing []byte) error {
	if _, ok, err := s.cache.ExportRow(ctx, key); err != nil || ok {
		return err
	}
	kj := wire.KeyToJSON(key)
	q := url.Values{"key": {kj.Key}}
	if kj.Kind != "" {
		q.Set("kt", kj.Kind)
	}
	return s.pullFrom(ctx, a, prev, q, func(row engine.Row, body io.Reader) error {
		if s.reb.state.isTouched(routing) {
			return nil
		}
		ok, err := s.cache.ImportRow(ctx, row, body)
		if ok {
			s.received(1, row.Bytes())
		}
		return err
	})
}

// pullFrom reads GET /v1/rebalance/export?q from the shard at base and
// hands each row to each.
func (s *Server) pullFrom(ctx context.Context, a *topology.Announcement, base string, q url.Values, each func(engine.Row, io.Reader) error) error {
	if s.admin == nil {
		return errors.New("no --admin-token-file: cannot read from the previous owner")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/rebalance/export?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	s.peerHeaders(req, a)
	resp, err := s.peers.client.Do(req)
	if err != nil {
		return newRoutingError(http.StatusServiceUnavailable, wire.CodeShardUnavailable, map[string]any{"url": base},
			"the previous owner %s of this data is unavailable: %v", base, withoutURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxFanOutBody))
		return newRoutingError(http.StatusServiceUnavailable, wire.CodeShardUnavailable, map[string]any{"url": base},
			"the previous owner %s of this data answered %s: %s", base, resp.Status, b)
	}
	mr := newMoveReader(&s.reb.readBufs, resp.Body)
	defer mr.release()
	for {
		row, body, err := mr.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading from the previous owner %s: %w", base, err)
		}
		if err := each(row, body); err != nil {
			return err
		}
	}
}

func (s *Server) received(items, size int64) {
	s.reb.update(func(p *moveProgress) { p.ItemsReceived += items })
	s.metrics.rebalanceItems.WithLabelValues("received").Add(float64(items))
	s.metrics.rebalanceBytes.WithLabelValues("received").Add(float64(size))
}

// collectionKind returns the sub-collection kind of a route pattern.
func collectionKind(pattern string) string {
	for prefix, kind := range map[string]string{" /v1/caches/{name}": "cache", " /v1/deques/{name}": "deque", " /v1/indexes/{name}": "index"} {
		if strings.Contains(pattern, prefix) {
			return kind
		}
	}
	return ""
}

// claimCollection runs before any operation on a named collection at its
// owner while a move is in force and its previous owner is another shard:
// the first one pulls the whole collection from there.
func (s *Server) claimCollection(ctx context.Context, kind, name string) error {
	a := s.cluster.current()
	prev, other := s.previousOwner(a, []byte(name))
	if !other || engine.ValidateName(name) != nil {
		return nil
	}
	id := kind + "/" + name
	st := s.reb.state
	if st.isPresent(id) {
		return nil
	}
	if err := s.reb.gate.enter(ctx); err != nil { // before the lock, as in claimKey
		return err
	}
	defer s.reb.gate.exit()
	mu := &s.reb.collLocks[stripe([]byte(id), len(s.reb.collLocks))]
	mu.Lock()
	defer mu.Unlock()
	if st.isPresent(id) {
		return nil
	}
	c, err := s.collectionCache(ctx, kind, name)
	if err != nil {
		return err
	}
	var items, size int64
	err = s.pullFrom(ctx, a, prev, url.Values{"kind": {kind}, "name": {name}}, func(row engine.Row, body io.Reader) error {
		ok, err := c.ImportRow(ctx, row, body)
		if ok {
			items, size = items+1, size+row.Bytes()
		}
		return err
	})
	if err != nil {
		return err
	}
	s.received(items, size)
	return st.markPresent(ctx, id)
}

// collectionCache opens the engine cache of a named collection.
func (s *Server) collectionCache(ctx context.Context, kind, name string) (*engine.Cache, error) {
	switch kind {
	case "cache":
		return s.cache.Cache(ctx, name)
	case "deque":
		d, err := s.cache.Deque(ctx, name, 0)
		if err != nil {
			return nil, err
		}
		return d.Cache(), nil
	case "index":
		x, err := s.cache.Index(ctx, name)
		if err != nil {
			return nil, err
		}
		return x.Cache(), nil
	}
	return nil, badRequest(wire.CodeBadRequest, "kind %q: want cache, deque or index", kind)
}

// Received rows are imported in batches, one transaction per fanout
// database each (a transaction per row would cost most of a move's CPU).
// A batch is bounded in rows (how long its key locks are held) and in
// value bytes kept in memory (value files are written as they arrive).
const (
	importBatchItems = 512
	importBatchBytes = 16 << 20
)

// importCounts are what a receive imported and skipped.
type importCounts struct{ imported, skipped, size int64 }

// importBatch is received rows staged for import: validated, value files
// written, not yet committed.
type importBatch struct {
	rows    []engine.StagedRow
	dbs     []*engine.Cache
	routing [][]byte // per row, for keys of the server's cache
	bytes   int64    // values held in memory
}

func (b *importBatch) stage(c *engine.Cache, row engine.Row, body io.Reader, routing []byte) error {
	sr, err := c.StageRow(row, body)
	if err != nil {
		return err
	}
	b.rows, b.dbs, b.routing = append(b.rows, sr), append(b.dbs, c), append(b.routing, routing)
	if row.Filename == "" {
		b.bytes += row.Bytes()
	}
	return nil
}

func (b *importBatch) full() bool {
	return len(b.rows) >= importBatchItems || b.bytes >= importBatchBytes
}

func (b *importBatch) reset() {
	b.rows, b.dbs, b.routing, b.bytes = b.rows[:0], b.dbs[:0], b.routing[:0], 0
}

// discard drops the staged rows (their value files).
func (b *importBatch) discard() {
	for i, r := range b.rows {
		b.dbs[i].DiscardStaged(r)
	}
	b.reset()
}

// importInto imports the staged rows, one transaction per database, and
// empties the batch; skip (when not nil) drops rows before that. After an
// error nothing of the batch is left staged; what committed before it
// stays (the sender sends the batch again and finds it skipped).
func (b *importBatch) importInto(ctx context.Context, n *importCounts, skip func(i int) bool) error {
	var order []*engine.Cache
	groups := map[*engine.Cache][]int{}
	for i, c := range b.dbs {
		if skip != nil && skip(i) {
			c.DiscardStaged(b.rows[i])
			n.skipped++
			continue
		}
		if groups[c] == nil {
			order = append(order, c)
		}
		groups[c] = append(groups[c], i)
	}
	for gi, c := range order {
		idx := groups[c]
		rows := make([]engine.StagedRow, len(idx))
		for j, i := range idx {
			rows[j] = b.rows[i]
		}
		done, err := c.ImportRows(ctx, rows)
		if err != nil {
			for _, c := range order[gi+1:] {
				for _, i := range groups[c] {
					c.DiscardStaged(b.rows[i])
				}
			}
			b.reset()
			return err
		}
		for j, ok := range done {
			if ok {
				n.imported, n.size = n.imported+1, n.size+rows[j].Row.Bytes()
			} else {
				n.skipped++
			}
		}
	}
	b.reset()
	return nil
}

// importKeys imports a batch of keys of the server's cache that another
// shard hands off: under the locks of all their stripes (taken in
// ascending order, so batches and claimKey, which holds one, never wait on
// each other in a cycle), a key touched here during the move is skipped,
// and the others are imported unless they have a row here.
func (s *Server) importKeys(ctx context.Context, b *importBatch, n *importCounts) error {
	stripes := make([]int, 0, len(b.routing))
	for _, r := range b.routing {
		stripes = append(stripes, stripe(r, len(s.reb.keyLocks)))
	}
	slices.Sort(stripes)
	stripes = slices.Compact(stripes)
	for _, i := range stripes {
		s.reb.keyLocks[i].Lock()
	}
	defer func() {
		for _, i := range stripes {
			s.reb.keyLocks[i].Unlock()
		}
	}()
	return b.importInto(ctx, n, func(i int) bool { return s.reb.state.isTouched(b.routing[i]) })
}

// claim applies the new owner's rules before a request it serves itself
// while a move is in force. stored, when not nil, is to run once the
// request has stored what it writes (see claimKey).
func (s *Server) claim(r *http.Request, sc scope, pattern string) (stored func(context.Context), err error) {
	if a := s.cluster.current(); a == nil || a.Previous == nil {
		return nil, nil
	}
	method, path, _ := strings.Cut(pattern, " ")
	switch sc {
	case scopeName:
		if kind := collectionKind(pattern); kind != "" {
			return nil, s.claimCollection(r.Context(), kind, r.PathValue("name"))
		}
	case scopeKey:
		key, err := s.pathKey(r)
		if err != nil {
			return nil, nil // the handler answers the malformed key
		}
		access := accessRMW
		switch {
		case method == http.MethodGet || method == http.MethodHead:
			access = accessRead
		case path == "/v1/keys/{key}" && method == http.MethodPut:
			access = accessWrite // delete answers whether the item was there: it pulls
		}
		return s.claimKey(r.Context(), key, access)
	}
	return nil, nil
}

// claimBatchKey is claimKey for one key of a batch of the server's cache
// (named caches follow claimCollection).
func (s *Server) claimBatchKey(r *http.Request, key kv.Key, access keyAccess) (stored func(context.Context), err error) {
	if r.PathValue("name") != "" || !s.cluster.sharded() {
		return nil, nil
	}
	if r.Header.Get(wire.HeaderForwardedEpoch) != "" {
		// A batch part another shard sent holds only this shard's keys at
		// the epoch checked on arrival. One that does not (a newer epoch
		// since, or a client sending the header itself) is refused, as a
		// forwarded single key is: stored here, a key nobody reads would
		// come back as its owner's value after a later change of shards.
		if o, a := s.cluster.owner(wire.Routing(key)); a != nil && o != s.cluster.self {
			return nil, s.wrongEpoch("shard %d does not own every key of this batch at epoch %d", s.cluster.self, a.Epoch)
		}
	}
	return s.claimKey(r.Context(), key, access)
}
