package cacheserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// Moving data when the shard count changes (the operator announces a
// topology whose previous layout differs): every shard hands off what it
// holds but no longer owns (handoff), and the new owners answer for keys
// that may still sit at their previous owner (claimKey, claimCollection).

const (
	moveBatchItems = 500      // rows per receive request
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
	readBufs  sync.Pool // of move streams' readers

	mu       sync.Mutex
	done     int64 // epoch whose handoff finished
	progress moveProgress
}

// moveProgress is this shard's handoff progress, in GET /v1/topology.
type moveProgress struct {
	topology.Progress
	started time.Time
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
func (rb *rebalancer) status(a *topology.Announcement) (bool, topology.Progress) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	busy := a != nil && a.Previous != nil && rb.done != a.Epoch
	return busy, rb.progress.Progress
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
	for i := 0; i < s.cache.DatabaseCount(); i++ {
		for after := int64(0); ; {
			rows, err := s.cache.Database(i).Rows(ctx, after, 500)
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
			now := time.Now()
			*p = moveProgress{Progress: topology.Progress{Epoch: a.Epoch, Started: now.UTC().Format(time.RFC3339Nano)}, started: now}
		}
		p.ItemsRemaining, p.BytesRemaining = items, size
		p.Passes++
	})
	var handled int64
	for i := 0; i < s.cache.DatabaseCount(); i++ {
		for after := int64(0); ; {
			if cur := s.cluster.current(); cur.Epoch != a.Epoch {
				return handled, nil
			}
			last, n, more, err := rb.sendPage(ctx, a, s.cache.Database(i), after, owned)
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
	var expired []engine.Row
	for _, r := range rows {
		routing := wire.Routing(r.Key)
		if owned(routing) {
			continue
		}
		if r.Expired(now) { // expired items are not moved
			expired = append(expired, r)
			continue
		}
		o := topology.Owner(routing, len(a.Shards))
		byOwner[o] = append(byOwner[o], r)
	}
	if len(expired) > 0 {
		done, err := c.DeleteRows(ctx, expired)
		if err != nil {
			return last, handled, more, err
		}
		for _, ok := range done {
			if ok {
				handled++
			}
		}
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
			// The acknowledged rows go in one transaction, each only if it
			// is still the item sent (a write since then keeps it).
			done, err := c.DeleteRows(ctx, sent)
			if err != nil {
				return last, handled, more, err
			}
			var items, size int64
			for i, ok := range done {
				if ok {
					items, size = items+1, size+sent[i].Bytes()
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
	// Dropped rather than cleared: a shard that no longer owns it keeps no
	// empty database of it.
	removed, err := rb.s.dropCollection(ctx, kind, name)
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
		// Buffered: the transport sends every write of a request body as
		// a chunk of its own, two per row without it.
		bw := bufio.NewWriterSize(&limitedWriter{ctx: ctx, w: pw, l: rb.limiter}, 64<<10)
		sent, werr = write(bw)
		if werr == nil {
			werr = bw.Flush()
		}
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

// beforeAdopt drops the data of a shard that comes back after missing a
// change of the shard count: it last knew another layout than the one the
// new announcement replaces, or it was leaving then. What it holds is older
// than what the others wrote since and must never be sent over it.
func (s *Server) beforeAdopt(old *topology.Announcement, a topology.Announcement) error {
	self := s.cfg.ShardIndex // also called while the cluster is being loaded
	if old == nil || a.Epoch <= old.Epoch || self >= len(a.Shards) {
		return nil
	}
	if a.Previous == nil && !slices.Equal(a.Shards, old.Shards) {
		// A new layout announced without a move (an operator that does
		// not rebalance): nothing was handed off anywhere, so what this
		// shard holds and still owns is as current as anything; keep it.
		// What it no longer owns goes: no move will hand it over.
		return s.discardUnowned(context.Background(), self, &a, "a new layout without a move")
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
			n, err := s.dropCollection(ctx, kind, name)
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
