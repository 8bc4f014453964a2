package cacheserver

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// discardUnowned removes what this shard holds but does not own under a,
// when nothing will ever hand it to its owner: once, when a shard that held
// data before it had any topology first gets one (the pods of a
// multi-shard cache of an older release each kept the keys a round-robin
// Service happened to send them), and when a layout is adopted without a
// move. Kept, such a row would be unreachable until a later move made this
// shard its owner again, and then be served in place of what was written
// or deleted meanwhile.
func (s *Server) discardUnowned(ctx context.Context, self int, a *topology.Announcement, why string) error {
	n := len(a.Shards)
	var items, collections int64
	var batch []kv.Key
	flush := func() error {
		for _, k := range batch {
			ok, err := s.cache.Delete(ctx, k)
			if err != nil {
				return err
			}
			if ok {
				items++
			}
		}
		batch = batch[:0]
		return nil
	}
	for k, err := range s.cache.Keys(ctx, false) {
		if err != nil {
			return fmt.Errorf("discard: list keys: %w", err)
		}
		if topology.Owner(wire.Routing(k), n) != self {
			batch = append(batch, k)
		}
	}
	if err := flush(); err != nil {
		return fmt.Errorf("discard: %w", err)
	}
	for _, kind := range []string{"cache", "deque", "index"} {
		names, err := collectionNames(filepath.Join(s.cfg.DataDir, kind))
		if err != nil {
			return fmt.Errorf("discard: list %s collections: %w", kind, err)
		}
		for _, name := range names {
			if topology.Owner([]byte(name), n) == self {
				continue
			}
			removed, err := s.dropCollection(ctx, kind, name)
			if err != nil {
				return fmt.Errorf("discard: drop %s %q: %w", kind, name, err)
			}
			items += removed
			collections++
		}
	}
	s.metrics.discarded.Add(float64(items))
	s.log.Info("discarded what this shard does not own ("+why+")",
		slog.Int64("items", items), slog.Int64("collections", collections), slog.Int64("epoch", a.Epoch), slog.Int("shards", n))
	return nil
}

// collectionNames lists the sub-collections below dir: every directory
// holding a cache.db, named by its path relative to dir with "/".
func collectionNames(dir string) ([]string, error) {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) && p == dir {
				return filepath.SkipDir
			}
			return err
		}
		if d.IsDir() || d.Name() != "cache.db" {
			return nil
		}
		rel, err := filepath.Rel(dir, filepath.Dir(p))
		if err != nil || rel == "." {
			return err
		}
		names = append(names, filepath.ToSlash(rel))
		return nil
	})
	return names, err
}
