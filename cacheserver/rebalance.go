package cacheserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// Moving data when the shard count changes (the operator announces a
// topology whose previous layout differs): every shard hands off what it
// holds but no longer owns (handoff), and the new owners answer for keys
// that may still sit at their previous owner (claimKey, claimCollection).

const (
	moveBatchItems = 100      // rows per receive request
	moveBatchBytes = 16 << 20 // value bytes per receive request (at least one row)
	pauseLease     = 30 * time.Second
)

// rebalancer is a shard's part of a move.
type rebalancer struct {
	s       *Server
	state   *moveState
	limiter *rate.Limiter // nil: no cap
	kick    chan struct{}
	gate    gate

	keyLocks  [256]sync.Mutex
	collLocks [64]sync.Mutex

	mu       sync.Mutex
	done     int64 // epoch whose handoff finished
	progress moveProgress
}

// moveProgress is this shard's handoff progress, in GET /v1/topology.
type moveProgress struct {
	Epoch            int64  `json:"epoch"`
	ItemsMoved       int64  `json:"items_moved"`
	BytesMoved       int64  `json:"bytes_moved"`
	ItemsRemaining   int64  `json:"items_remaining"`
	BytesRemaining   int64  `json:"bytes_remaining"`
	CollectionsMoved int64  `json:"collections_moved"`
	ItemsReceived    int64  `json:"items_received"`
	Passes           int64  `json:"passes"`
	Started          string `json:"started,omitempty"`
	Finished         string `json:"finished,omitempty"`
	LastError        string `json:"last_error,omitempty"`
	started          time.Time
}

func newRebalancer(s *Server) (*rebalancer, error) {
	rb := &rebalancer{s: s, kick: make(chan struct{}, 1)}
	rb.gate.cond = sync.NewCond(&rb.gate.mu)
	if r := s.cfg.RebalanceRate; r > 0 {
		rb.limiter = rate.NewLimiter(rate.Limit(r), int(min(r, 1<<20)))
	}
	if !s.cluster.sharded() {
		return rb, nil // a standalone server never moves data
	}
	st, err := openMoveState(s.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	rb.state = st
	return rb, rb.state.forEpoch(context.Background(), moveEpoch(s.cluster.current()))
}

// moveEpoch names the move an announcement starts (0: none).
func moveEpoch(a *topology.Announcement) int64 {
	if a == nil || a.Previous == nil {
		return 0
	}
	return a.Epoch
}

// adopted follows a new announcement: the move state of another move is
// dropped and the handoff loop looks again.
func (rb *rebalancer) adopted(a *topology.Announcement) {
	if err := rb.state.forEpoch(context.Background(), moveEpoch(a)); err != nil {
		rb.s.log.Error("move state", slog.Any("error", err))
	}
	select {
	case rb.kick <- struct{}{}:
	default:
	}
}

// status is what GET /v1/topology reports: whether this shard still has
// data to hand off, and its progress.
func (rb *rebalancer) status(a *topology.Announcement) (bool, map[string]any) {
	rb.mu.Lock()
	p := rb.progress
	busy := a != nil && a.Previous != nil && rb.done != a.Epoch
	rb.mu.Unlock()
	out := map[string]any{}
	if p.Epoch == 0 {
		return busy, out
	}
	b, _ := json.Marshal(p)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // counts stay integers
	_ = dec.Decode(&out)
	return busy, out
}

func (rb *rebalancer) update(fn func(p *moveProgress)) {
	rb.mu.Lock()
	fn(&rb.progress)
	rb.mu.Unlock()
}

// run is the handoff loop: while a move is in force it passes over
// everything this shard holds and sends what it does not own to the owner,
// until a pass finds nothing left. It starts with the server, so a
// restarted shard resumes a move.
func (rb *rebalancer) run(ctx context.Context) {
	retry := time.Duration(0)
	for {
		a := rb.s.cluster.current()
		var wait <-chan time.Time
		switch {
		case a == nil || a.Previous == nil:
		case rb.isDone(a.Epoch):
		default:
			rb.s.cluster.drainOlder(a.Epoch)
			moved, err := rb.pass(ctx, a)
			if ctx.Err() != nil {
				return
			}
			if cur := rb.s.cluster.current(); cur.Epoch != a.Epoch {
				continue
			}
			if err != nil {
				rb.s.log.Warn("rebalance: handoff pass failed; retrying", slog.Int64("epoch", a.Epoch), slog.Any("error", err))
				rb.update(func(p *moveProgress) { p.LastError = err.Error() })
				retry = min(max(2*retry, 100*time.Millisecond), 5*time.Second)
				wait = time.After(retry)
				break
			}
			retry = 0
			if moved > 0 {
				continue // look again: nothing may be left behind
			}
			rb.finish(a.Epoch)
		}
		select {
		case <-ctx.Done():
			return
		case <-rb.kick:
		case <-wait:
		}
	}
}

func (rb *rebalancer) isDone(epoch int64) bool {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.done == epoch
}

func (rb *rebalancer) finish(epoch int64) {
	rb.mu.Lock()
	rb.done = epoch
	p := &rb.progress
	p.Finished, p.LastError = time.Now().UTC().Format(time.RFC3339Nano), ""
	p.ItemsRemaining, p.BytesRemaining = 0, 0
	d := time.Since(p.started)
	rb.mu.Unlock()
	rb.s.metrics.rebalanceDuration.Set(d.Seconds())
	rb.s.log.Info("rebalance: this shard has handed off everything it does not own", slog.Int64("epoch", epoch),
		slog.Int64("items", p.ItemsMoved), slog.Int64("bytes", p.BytesMoved), slog.Duration("took", d))
}

// collectionKinds are the sub-collection directories: cache/, deque/, index/.
var collectionKinds = []string{"cache", "deque", "index"}

// pass counts what this shard holds without owning it, then sends it. It
// returns how many items it moved or dropped (expired).
func (rb *rebalancer) pass(ctx context.Context, a *topology.Announcement) (int64, error) {
	s := rb.s
	if s.admin == nil {
		return 0, errors.New("no --admin-token-file: shards authenticate to each other with the admin token")
	}
	n := len(a.Shards)
	owned := func(routing []byte) bool { return topology.Owner(routing, n) == s.cluster.self }
	now := float64(time.Now().UnixNano()) / 1e9
	// Count first, for progress.
	var items, size int64
	for i := 0; i < s.cache.ShardCount(); i++ {
		for after := int64(0); ; {
			rows, err := s.cache.Shard(i).Rows(ctx, after, 500)
			if err != nil {
				return 0, err
			}
			for _, r := range rows {
				if !r.Expired(now) && !owned(wire.Routing(r.Key)) {
					items, size = items+1, size+r.Bytes()
				}
			}
			if len(rows) < 500 {
				break
			}
			after = rows[len(rows)-1].Rowid()
		}
	}
	colls := map[string][]string{}
	for _, kind := range collectionKinds {
		names, err := collectionNames(filepath.Join(s.cfg.DataDir, kind))
		if err != nil {
			return 0, err
		}
		for _, name := range names {
			if owned([]byte(name)) {
				continue
			}
			c, err := s.collectionCache(ctx, kind, name)
			if err != nil {
				return 0, err
			}
			if l, err := c.Len(ctx); err == nil && l > 0 {
				colls[kind] = append(colls[kind], name)
				items += l
			}
		}
	}
	rb.update(func(p *moveProgress) {
		if p.Epoch != a.Epoch {
			*p = moveProgress{Epoch: a.Epoch, started: time.Now(), Started: time.Now().UTC().Format(time.RFC3339Nano)}
		}
		p.ItemsRemaining, p.BytesRemaining = items, size
		p.Passes++
	})
	var handled int64
	for i := 0; i < s.cache.ShardCount(); i++ {
		for after := int64(0); ; {
			if cur := s.cluster.current(); cur.Epoch != a.Epoch {
				return handled, nil
			}
			last, n, more, err := rb.sendPage(ctx, a, s.cache.Shard(i), after, owned)
			handled += n
			if err != nil {
				return handled, err
			}
			if !more {
				break
			}
			after = last
		}
	}
	for _, kind := range collectionKinds {
		for _, name := range colls[kind] {
			n, err := rb.sendCollection(ctx, a, kind, name)
			handled += n
			if err != nil {
				return handled, err
			}
		}
	}
	return handled, nil
}

// sendPage reads one page of rows after rowid after and sends those this
// shard does not own to their owners, then deletes what they acknowledged.
// The whole page runs inside the gate, so a paused shard has no batch in
// flight and sends nothing a cluster-wide deletion removed.
func (rb *rebalancer) sendPage(ctx context.Context, a *topology.Announcement, c *engine.Cache, after int64, owned func([]byte) bool) (last int64, handled int64, more bool, err error) {
	if err := rb.gate.enter(ctx); err != nil {
		return after, 0, false, err
	}
	defer rb.gate.exit()
	rows, err := c.Rows(ctx, after, moveBatchItems)
	if err != nil {
		return after, 0, false, err
	}
	if len(rows) == 0 {
		return after, 0, false, nil
	}
	last, more = rows[len(rows)-1].Rowid(), len(rows) == moveBatchItems
	now := float64(time.Now().UnixNano()) / 1e9
	byOwner := map[int][]engine.Row{}
	for _, r := range rows {
		routing := wire.Routing(r.Key)
		if owned(routing) {
			continue
		}
		if r.Expired(now) { // expired items are not moved
			if ok, err := c.DeleteRow(ctx, r); err != nil {
				return last, handled, more, err
			} else if ok {
				handled++
			}
			continue
		}
		o := topology.Owner(routing, len(a.Shards))
		byOwner[o] = append(byOwner[o], r)
	}
	for o, group := range byOwner {
		for len(group) > 0 {
			j, bytes := 0, int64(0)
			for j < len(group) && (j == 0 || bytes+group[j].Bytes() <= moveBatchBytes) {
				bytes += group[j].Bytes()
				j++
			}
			part := group[:j]
			group = group[j:]
			sent, err := rb.send(ctx, a, o, "", "", func(w io.Writer) ([]engine.Row, error) {
				var sent []engine.Row
				for _, r := range part {
					err := writeMoveRecord(w, r, func(r engine.Row) (io.ReadCloser, error) { return c.OpenValue(r) })
					if errors.Is(err, errGone) {
						continue
					}
					if err != nil {
						return sent, err
					}
					sent = append(sent, r)
				}
				return sent, nil
			})
			if err != nil {
				return last, handled, more, err
			}
			var items, size int64
			for _, r := range sent {
				if ok, err := c.DeleteRow(ctx, r); err != nil {
					return last, handled, more, err
				} else if ok {
					items, size = items+1, size+r.Bytes()
				}
			}
			handled += items
			rb.moved(items, size)
		}
	}
	return last, handled, more, nil
}

func (rb *rebalancer) moved(items, size int64) {
	rb.update(func(p *moveProgress) {
		p.ItemsMoved += items
		p.BytesMoved += size
		p.ItemsRemaining = max(p.ItemsRemaining-items, 0)
		p.BytesRemaining = max(p.BytesRemaining-size, 0)
	})
	rb.s.metrics.rebalanceItems.WithLabelValues("sent").Add(float64(items))
	rb.s.metrics.rebalanceBytes.WithLabelValues("sent").Add(float64(size))
}

// sendCollection sends a whole named collection to its owner and clears it
// here once the owner acknowledged it.
func (rb *rebalancer) sendCollection(ctx context.Context, a *topology.Announcement, kind, name string) (int64, error) {
	if err := rb.gate.enter(ctx); err != nil {
		return 0, err
	}
	defer rb.gate.exit()
	c, err := rb.s.collectionCache(ctx, kind, name)
	if err != nil {
		return 0, err
	}
	o := topology.Owner([]byte(name), len(a.Shards))
	var size int64
	sent, err := rb.send(ctx, a, o, kind, name, func(w io.Writer) ([]engine.Row, error) {
		var sent []engine.Row
		return sent, exportAll(ctx, c, w, func(r engine.Row) { sent = append(sent, r); size += r.Bytes() })
	})
	if err != nil {
		return 0, err
	}
	removed, err := c.Clear(ctx)
	if err != nil {
		return 0, err
	}
	rb.moved(int64(len(sent)), size)
	rb.update(func(p *moveProgress) { p.CollectionsMoved++ })
	return max(removed, 1), nil
}

// exportAll writes every live row of c to w.
func exportAll(ctx context.Context, c *engine.Cache, w io.Writer, each func(engine.Row)) error {
	now := float64(time.Now().UnixNano()) / 1e9
	for after := int64(0); ; {
		rows, err := c.Rows(ctx, after, moveBatchItems)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if r.Expired(now) {
				continue
			}
			err := writeMoveRecord(w, r, func(r engine.Row) (io.ReadCloser, error) { return c.OpenValue(r) })
			if errors.Is(err, errGone) {
				continue
			}
			if err != nil {
				return err
			}
			if each != nil {
				each(r)
			}
		}
		if len(rows) < moveBatchItems {
			return nil
		}
		after = rows[len(rows)-1].Rowid()
	}
}

// send streams rows (written by write) to shard o's receive route and
// returns the rows written once o acknowledged them all.
func (rb *rebalancer) send(ctx context.Context, a *topology.Announcement, o int, kind, name string, write func(io.Writer) ([]engine.Row, error)) ([]engine.Row, error) {
	s := rb.s
	q := url.Values{}
	if name != "" {
		q.Set("kind", kind)
		q.Set("name", name)
	}
	u := a.Shards[o] + "/v1/rebalance/receive"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	pr, pw := io.Pipe()
	var sent []engine.Row
	var werr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		sent, werr = write(&limitedWriter{ctx: ctx, w: pw, l: rb.limiter})
		pw.CloseWithError(werr)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, pr)
	if err != nil {
		pr.CloseWithError(err)
		<-done
		return nil, err
	}
	s.peerHeaders(req, a)
	resp, err := s.peers.client.Do(req)
	pr.CloseWithError(errors.New("request ended"))
	<-done
	if err != nil {
		return nil, fmt.Errorf("send to shard %d (%s): %w", o, a.Shards[o], err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxFanOutBody))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("shard %d (%s) refused the batch: %s %s", o, a.Shards[o], resp.Status, body)
	}
	if werr != nil {
		return nil, werr
	}
	return sent, nil
}

// peerHeaders marks a request between shards: the admin token (every pod
// has it mounted), the epoch and the sender.
func (s *Server) peerHeaders(req *http.Request, a *topology.Announcement) {
	req.Header.Set("Authorization", "Bearer "+s.admin.token())
	req.Header.Set(wire.HeaderForwardedEpoch, strconv.FormatInt(a.Epoch, 10))
	if self := s.cluster.self; self >= 0 && self < len(a.Shards) {
		req.Header.Set(wire.HeaderForwardedBy, a.Shards[self])
	}
}

// limitedWriter caps the bytes per second written through it.
type limitedWriter struct {
	ctx context.Context
	w   io.Writer
	l   *rate.Limiter
}

func (lw *limitedWriter) Write(p []byte) (int, error) {
	if lw.l == nil {
		return lw.w.Write(p)
	}
	written := 0
	for len(p) > 0 {
		n := min(len(p), lw.l.Burst())
		if err := lw.l.WaitN(lw.ctx, n); err != nil {
			return written, err
		}
		m, err := lw.w.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// gate lets a cluster-wide deletion pause the moves: while paused, no batch
// is sent and no pull runs, and pause returns once those in flight ended.
// A pause is a lease: it ends by itself if resume never comes.
type gate struct {
	mu     sync.Mutex
	cond   *sync.Cond
	until  time.Time
	active int
}

func (g *gate) paused() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return time.Now().Before(g.until)
}

func (g *gate) enter(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for time.Now().Before(g.until) {
		if err := ctx.Err(); err != nil {
			return err
		}
		t := time.AfterFunc(time.Until(g.until), func() { g.mu.Lock(); g.cond.Broadcast(); g.mu.Unlock() })
		g.cond.Wait()
		t.Stop()
	}
	g.active++
	return nil
}

func (g *gate) exit() {
	g.mu.Lock()
	g.active--
	g.cond.Broadcast()
	g.mu.Unlock()
}

func (g *gate) pause(lease time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if u := time.Now().Add(lease); u.After(g.until) {
		g.until = u
	}
	for g.active > 0 {
		g.cond.Wait()
	}
}

func (g *gate) resume() {
	g.mu.Lock()
	g.until = time.Time{}
	g.cond.Broadcast()
	g.mu.Unlock()
}

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
// shard. A write records the key as touched first (an incoming copy is then
// refused); a read or read-modify-write first pulls the item from the
// previous owner unless this shard settled the key already.
func (s *Server) claimKey(ctx context.Context, key kv.Key, access keyAccess) error {
	a := s.cluster.current()
	routing := wire.Routing(key)
	prev, other := s.previousOwner(a, routing)
	if !other {
		return nil
	}
	st := s.reb.state
	if st.isTouched(routing) || (access == accessRead && st.isSettled(routing)) {
		return nil
	}
	if access != accessWrite {
		// The gate first, then the key: a pull waiting out a pause must not
		// hold the lock an incoming batch (which a pause waits for) needs.
		if err := s.reb.gate.enter(ctx); err != nil {
			return err
		}
		defer s.reb.gate.exit()
	}
	mu := &s.reb.keyLocks[stripe(routing, len(s.reb.keyLocks))]
	mu.Lock()
	defer mu.Unlock()
	if access != accessWrite && !st.isSettled(routing) {
		if err := s.pullKey(ctx, a, prev, key, routing); err != nil {
			return err
		}
		st.settle(routing)
	}
	if access == accessRead {
		return nil
	}
	return st.touch(ctx, routing)
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
			"the previous owner %s of this data is unavailable: %v", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxFanOutBody))
		return newRoutingError(http.StatusServiceUnavailable, wire.CodeShardUnavailable, map[string]any{"url": base},
			"the previous owner %s of this data answered %s: %s", base, resp.Status, b)
	}
	mr := newMoveReader(resp.Body)
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

// requireAdmin refuses a peer route without the admin token.
func (s *Server) requireAdmin(r *http.Request) error {
	switch {
	case s.admin == nil:
		return &apiError{status: http.StatusForbidden, code: wire.CodeAdminDisabled, msg: "this server was started without --admin-token-file"}
	case !s.isAdmin(r):
		return &apiError{status: http.StatusForbidden, code: wire.CodeForbidden, msg: "this route is for the shards and the operator: it needs the admin token"}
	}
	return nil
}

// checkPeerEpoch refuses a move request from a shard on another epoch.
func (s *Server) checkPeerEpoch(r *http.Request) (*topology.Announcement, error) {
	a := s.cluster.current()
	if a == nil {
		return nil, newRoutingError(http.StatusServiceUnavailable, wire.CodeNoTopology, nil, "shard %d has no topology yet", s.cluster.self)
	}
	if fe := r.Header.Get(wire.HeaderForwardedEpoch); fe != strconv.FormatInt(a.Epoch, 10) {
		return nil, s.wrongEpoch("the sender moves data by epoch %s, this shard routes by %d", fe, a.Epoch)
	}
	return a, nil
}

// handleRebalanceReceive imports a batch of rows another shard hands off
// (or a whole collection). A row is imported only if its key was not
// touched here during the move and has no row here; otherwise it is
// skipped (the newer write or delete wins). Either way the sender may
// delete its copy once this answers 200.
func (s *Server) handleRebalanceReceive(w http.ResponseWriter, r *http.Request) error {
	if err := s.requireAdmin(r); err != nil {
		return err
	}
	a, err := s.checkPeerEpoch(r)
	if err != nil {
		return err
	}
	if s.reb.gate.paused() {
		return &apiError{status: http.StatusConflict, code: wire.CodeRebalancePaused, msg: "moves are paused for a cluster-wide deletion; send again later"}
	}
	ctx := r.Context()
	kind, name := r.URL.Query().Get("kind"), r.URL.Query().Get("name")
	mr := newMoveReader(r.Body)
	var imported, skipped, size int64
	if name != "" {
		if topology.Owner([]byte(name), len(a.Shards)) != s.cluster.self {
			return &apiError{status: http.StatusConflict, code: wire.CodeNotOwner, msg: fmt.Sprintf("shard %d does not own collection %q at epoch %d", s.cluster.self, name, a.Epoch)}
		}
		id := kind + "/" + name
		mu := &s.reb.collLocks[stripe([]byte(id), len(s.reb.collLocks))]
		mu.Lock()
		defer mu.Unlock()
		present := s.reb.state.isPresent(id)
		c, err := s.collectionCache(ctx, kind, name)
		if err != nil {
			return err
		}
		for {
			row, body, err := mr.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return badRequest(wire.CodeBadRequest, "%v", err)
			}
			if present {
				skipped++
				continue
			}
			ok, err := c.ImportRow(ctx, row, body)
			if err != nil {
				return err
			}
			if ok {
				imported, size = imported+1, size+row.Bytes()
			} else {
				skipped++
			}
		}
		if !present {
			if err := s.reb.state.markPresent(ctx, id); err != nil {
				return err
			}
		}
	} else {
		for {
			row, body, err := mr.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return badRequest(wire.CodeBadRequest, "%v", err)
			}
			routing := wire.Routing(row.Key)
			if topology.Owner(routing, len(a.Shards)) != s.cluster.self {
				return &apiError{status: http.StatusConflict, code: wire.CodeNotOwner, msg: fmt.Sprintf("shard %d does not own a key of this batch at epoch %d", s.cluster.self, a.Epoch)}
			}
			ok, err := s.importKey(ctx, row, body, routing)
			if err != nil {
				return err
			}
			if ok {
				imported, size = imported+1, size+row.Bytes()
			} else {
				skipped++
			}
		}
	}
	s.received(imported, size)
	writeJSON(w, http.StatusOK, map[string]int64{"imported": imported, "skipped": skipped})
	return nil
}

func (s *Server) importKey(ctx context.Context, row engine.Row, body io.Reader, routing []byte) (bool, error) {
	mu := &s.reb.keyLocks[stripe(routing, len(s.reb.keyLocks))]
	mu.Lock()
	defer mu.Unlock()
	if s.reb.state.isTouched(routing) {
		return false, nil
	}
	return s.cache.ImportRow(ctx, row, body)
}

// handleRebalanceExport answers a new owner's pull: the row of one key of
// the server's cache (?key=&kt=), or every row of a named collection
// (?kind=&name=), as a move stream; expired items are left out.
func (s *Server) handleRebalanceExport(w http.ResponseWriter, r *http.Request) error {
	if err := s.requireAdmin(r); err != nil {
		return err
	}
	if _, err := s.checkPeerEpoch(r); err != nil {
		return err
	}
	ctx := r.Context()
	q := r.URL.Query()
	if name := q.Get("name"); name != "" {
		kind := q.Get("kind")
		if engine.ValidateName(name) != nil {
			return badRequest(wire.CodeBadName, "bad collection name %q", name)
		}
		w.Header().Set("Content-Type", wire.RecordsContentType)
		if _, err := os.Stat(filepath.Join(s.cfg.DataDir, kind, filepath.FromSlash(name), "cache.db")); err != nil {
			if kind != "cache" && kind != "deque" && kind != "index" {
				return badRequest(wire.CodeBadRequest, "kind %q: want cache, deque or index", kind)
			}
			w.WriteHeader(http.StatusOK) // no such collection here: nothing to pull
			return nil
		}
		c, err := s.collectionCache(ctx, kind, name)
		if err != nil {
			return err
		}
		w.WriteHeader(http.StatusOK)
		return exportAll(ctx, c, w, nil)
	}
	key, err := wire.KeyFromJSON(wire.EncodeKeyJSON{Key: q.Get("key"), Kind: q.Get("kt")})
	if err != nil {
		return badRequest(wire.CodeBadKey, "%v", err)
	}
	row, ok, err := s.cache.ExportRow(ctx, key)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", wire.RecordsContentType)
	w.WriteHeader(http.StatusOK)
	if ok && !row.Expired(float64(time.Now().UnixNano())/1e9) {
		err := writeMoveRecord(w, row, func(r engine.Row) (io.ReadCloser, error) { return s.cache.ShardFor(key).OpenValue(r) })
		if err != nil && !errors.Is(err, errGone) {
			return err
		}
	}
	return nil
}

// handleRebalancePause stops this shard's moves for a cluster-wide
// deletion: it answers once the batch and the pulls in flight ended; until
// resume (or the lease ends) none start and incoming batches are refused.
func (s *Server) handleRebalancePause(w http.ResponseWriter, r *http.Request) error {
	if err := s.requireAdmin(r); err != nil {
		return err
	}
	lease := pauseLease
	if v := r.URL.Query().Get("lease"); v != "" {
		sec, err := strconv.ParseFloat(v, 64)
		if err != nil || sec <= 0 || sec > 300 {
			return badRequest(wire.CodeBadRequest, "lease %q: want seconds in (0, 300]", v)
		}
		lease = time.Duration(sec * float64(time.Second))
	}
	s.reb.gate.pause(lease)
	writeJSON(w, http.StatusOK, map[string]any{"paused": true, "lease": lease.Seconds()})
	return nil
}

// handleRebalanceResume ends a pause.
func (s *Server) handleRebalanceResume(w http.ResponseWriter, r *http.Request) error {
	if err := s.requireAdmin(r); err != nil {
		return err
	}
	s.reb.gate.resume()
	writeJSON(w, http.StatusOK, map[string]any{"paused": false})
	return nil
}

// claim applies the new owner's rules before a request it serves itself
// while a move is in force.
func (s *Server) claim(r *http.Request, sc scope, pattern string) error {
	if a := s.cluster.current(); a == nil || a.Previous == nil {
		return nil
	}
	method, path, _ := strings.Cut(pattern, " ")
	switch sc {
	case scopeName:
		if kind := collectionKind(pattern); kind != "" {
			return s.claimCollection(r.Context(), kind, r.PathValue("name"))
		}
	case scopeKey:
		key, err := s.pathKey(r)
		if err != nil {
			return nil // the handler answers the malformed key
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
	return nil
}

// beforeAdopt drops the data of a shard that comes back after missing a
// change of the shard count: it last knew another layout than the one the
// new announcement replaces, or it was leaving then. What it holds is older
// than what the others wrote since and must never be sent over it.
func (s *Server) beforeAdopt(old *topology.Announcement, a topology.Announcement) error {
	self := s.cfg.ShardIndex // also called while the cluster is being loaded
	if old == nil || a.Epoch <= old.Epoch || self >= len(a.Shards) {
		return nil
	}
	replaced := a.Shards
	if a.Previous != nil {
		replaced = a.Previous.Shards
	}
	if self < len(old.Shards) && slices.Equal(replaced, old.Shards) {
		return nil
	}
	ctx := context.Background()
	removed, err := s.cache.Clear(ctx)
	if err != nil {
		return fmt.Errorf("dropping stale data before taking part again: %w", err)
	}
	for _, kind := range collectionKinds {
		names, err := collectionNames(filepath.Join(s.cfg.DataDir, kind))
		if err != nil {
			return err
		}
		for _, name := range names {
			c, err := s.collectionCache(ctx, kind, name)
			if err != nil {
				return err
			}
			n, err := c.Clear(ctx)
			if err != nil {
				return err
			}
			removed += n
		}
	}
	s.metrics.staleDiscarded.Add(float64(removed))
	s.log.Warn("this shard missed a change of the shard count: its data is stale and was dropped before taking part again",
		slog.Int64("known_epoch", old.Epoch), slog.Int64("epoch", a.Epoch), slog.Int64("items", removed))
	return nil
}

// claimBatchKey is claimKey for one key of a batch of the server's cache
// (named caches follow claimCollection).
func (s *Server) claimBatchKey(r *http.Request, key kv.Key, access keyAccess) error {
	if r.PathValue("name") != "" || !s.cluster.sharded() {
		return nil
	}
	return s.claimKey(r.Context(), key, access)
}

// unionLayout returns a with the shards of the previous layout that left
// appended (StatefulSet ordinals keep their place: shards[i] is ordinal i).
func unionLayout(a *topology.Announcement) *topology.Announcement {
	u := *a
	u.Shards = slices.Clone(a.Shards)
	for _, p := range a.Previous.Shards {
		if !slices.Contains(u.Shards, p) {
			u.Shards = append(u.Shards, p)
		}
	}
	return &u
}

// isDeletion reports the cluster-wide operations that delete items.
func isDeletion(path string) bool {
	for _, op := range []string{"/clear", "/evict", "/expire", "/cull"} {
		if strings.HasSuffix(path, op) {
			return true
		}
	}
	return false
}

// pauseMoves pauses the moves on every shard of a and returns once each
// answered (a shard that cannot be reached moves nothing either, and the
// deletion will report it).
func (s *Server) pauseMoves(ctx context.Context, a *topology.Announcement) {
	s.eachPeer(ctx, a, "pause", func() { s.reb.gate.pause(pauseLease) })
}

func (s *Server) resumeMoves(a *topology.Announcement) {
	s.eachPeer(context.Background(), a, "resume", s.reb.gate.resume)
}

func (s *Server) eachPeer(ctx context.Context, a *topology.Announcement, op string, local func()) {
	var wg sync.WaitGroup
	for i, u := range a.Shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == s.cluster.self {
				local()
				return
			}
			if s.admin == nil {
				return
			}
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pauseLease)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, u+"/v1/rebalance/"+op, nil)
			if err != nil {
				return
			}
			s.peerHeaders(req, a)
			resp, err := s.peers.client.Do(req)
			if err != nil {
				s.log.Warn("rebalance: "+op+" a shard", slog.String("url", u), slog.Any("error", err))
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	wg.Wait()
}
