package cacheserver

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// The routes shards use to move data between them (admin token only).

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

// checkPeerEpoch refuses a move request from a shard on another epoch. A
// sender on a newer one is a shard the announcement reached first: this
// shard learns it from the sender (the request carries the admin token)
// or another shard, rather than fail a new owner's pull, which a read
// waits on, for as long as the operator's announcement takes to arrive.
func (s *Server) checkPeerEpoch(r *http.Request) (*topology.Announcement, error) {
	a := s.cluster.current()
	if a == nil {
		return nil, newRoutingError(http.StatusServiceUnavailable, wire.CodeNoTopology, nil, "shard %d has no topology yet", s.cluster.self)
	}
	fe := r.Header.Get(wire.HeaderForwardedEpoch)
	epoch, err := strconv.ParseInt(fe, 10, 64)
	if err != nil || epoch < 1 {
		return nil, badRequest(wire.CodeBadRequest, "%s %q is not an epoch: a move request carries its sender's", wire.HeaderForwardedEpoch, fe)
	}
	if epoch > a.Epoch {
		a = s.catchUp(r.Context(), epoch, r, true)
	}
	if fe != strconv.FormatInt(a.Epoch, 10) {
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
	mr := newMoveReader(&s.reb.readBufs, r.Body)
	defer mr.release()
	var n importCounts
	if name != "" {
		if topology.Owner([]byte(name), len(a.Shards)) != s.cluster.self {
			return &apiError{status: http.StatusConflict, code: wire.CodeNotOwner, msg: fmt.Sprintf("shard %d does not own collection %q at epoch %d", s.cluster.self, name, a.Epoch)}
		}
		id := kind + "/" + name
		mu := &s.reb.collLocks[stripe([]byte(id), len(s.reb.collLocks))]
		mu.Lock()
		defer mu.Unlock()
		present := s.reb.state.isPresent(id)
		var c *engine.Cache
		if !present { // here whole already (and maybe dropped since): nothing to open
			if engine.ValidateName(name) != nil {
				return badRequest(wire.CodeBadName, "bad collection name %q", name)
			}
			defer s.collLocks.shared(kind, name)()
			if c, err = s.collectionCache(ctx, kind, name); err != nil {
				return err
			}
		}
		var batch importBatch
		defer batch.discard() // what an error left staged
		for {
			row, body, err := mr.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return badRequest(wire.CodeBadRequest, "%v", err)
			}
			if present {
				n.skipped++
				continue
			}
			if err := batch.stage(c, row, body, nil); err != nil {
				return err
			}
			if batch.full() {
				if err := batch.importInto(ctx, &n, nil); err != nil {
					return err
				}
			}
		}
		if err := batch.importInto(ctx, &n, nil); err != nil {
			return err
		}
		if !present {
			if err := s.reb.state.markPresent(ctx, id); err != nil {
				return err
			}
		}
	} else {
		var batch importBatch
		defer batch.discard()
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
			if err := batch.stage(s.cache.DatabaseFor(row.Key), row, body, routing); err != nil {
				return err
			}
			if batch.full() {
				if err := s.importKeys(ctx, &batch, &n); err != nil {
					return err
				}
			}
		}
		if err := s.importKeys(ctx, &batch, &n); err != nil {
			return err
		}
	}
	s.received(n.imported, n.size)
	writeJSON(w, http.StatusOK, map[string]int64{"imported": n.imported, "skipped": n.skipped})
	return nil
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
		if kind != "cache" && kind != "deque" && kind != "index" {
			return badRequest(wire.CodeBadRequest, "kind %q: want cache, deque or index", kind)
		}
		w.Header().Set("Content-Type", wire.RecordsContentType)
		defer s.collLocks.shared(kind, name)()
		if _, err := os.Stat(filepath.Join(s.cfg.DataDir, kind, filepath.FromSlash(name), "cache.db")); err != nil {
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
		err := writeMoveRecord(w, row, func(r engine.Row) (io.ReadCloser, error) { return s.cache.DatabaseFor(key).OpenValue(r) })
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
		if err != nil || !(sec > 0 && sec <= 300) { // NaN fails both
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
