package cacheserver

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path/filepath"
	"syscall"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
)

// handleUsage answers this shard's own figures (never forwarded, merged or
// counted as a served request), for the operator's autoscaler and people.
func (s *Server) handleUsage(w http.ResponseWriter, r *http.Request) error {
	disk, err := s.diskBytes()
	if err != nil {
		return err
	}
	vol, err := s.cache.Volume(r.Context())
	if err != nil {
		return err
	}
	counts := s.cache.Counters()
	shard := -1
	if s.cluster.sharded() {
		shard = s.cluster.self
	}
	writeJSON(w, http.StatusOK, wire.Usage{
		Started:        s.started.UTC().Format(time.RFC3339Nano),
		Shard:          shard,
		ServedRequests: s.metrics.servedTotal.Load(),
		EvictedItems:   counts.Evicted,
		ExpiredItems:   counts.Expired,
		DiskBytes:      disk,
		VolumeBytes:    vol,
		SizeLimit:      storeSettings(s.cache).SizeLimit,
	})
	return nil
}

// diskBytes is the space allocated to the files of the data directory,
// counted as the disk-use bound of docs/crd.md counts it, less the
// reserve (space held back for a full disk, not data). Files that vanish
// while it walks (a cull, a checkpoint) are skipped.
func (s *Server) diskBytes() (int64, error) {
	reserve := filepath.Join(s.cfg.DataDir, reserveFileName)
	var total int64
	err := filepath.WalkDir(s.cfg.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || path == reserve {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("disk use of %s: %w", s.cfg.DataDir, err)
	}
	return total, nil
}
