package cacheserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
)

// Bounds of GET /v1/collections.
const (
	defaultCollectionsLimit = 1000
	maxCollectionsLimit     = 10000
)

// collectionEntry is one named collection of GET /v1/collections.
type collectionEntry struct {
	Kind  string `json:"kind"`
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"` // what its files take on disk
}

// id orders the listing: kind, then name.
func (e collectionEntry) id() string { return e.Kind + "/" + e.Name }

// collectionsPage is the answer of GET /v1/collections.
type collectionsPage struct {
	Collections []collectionEntry `json:"collections"`
	// Next is the after= of the next page; empty on the last one.
	Next string `json:"next,omitempty"`
}

// handleCollections lists the named caches, deques and indexes this shard
// holds (a sharded cache merges every shard's: see broadcast), ordered by
// kind then name: those of ?kind= (cache, deque or index; all when absent)
// whose name starts with ?prefix=, after the ?after= of the previous page,
// at most ?limit= of them. It reads directories, not databases: listing
// opens no collection.
func (s *Server) handleCollections(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	kinds := collectionKinds
	if k := q.Get("kind"); k != "" {
		if !slices.Contains(collectionKinds, k) {
			return badRequest(wire.CodeBadRequest, "kind %q: want cache, deque or index", k)
		}
		kinds = []string{k}
	}
	limit, err := intParam(r, "limit", defaultCollectionsLimit, 1, maxCollectionsLimit)
	if err != nil {
		return err
	}
	prefix, after := q.Get("prefix"), q.Get("after")
	var page []collectionEntry
	for _, kind := range kinds {
		names, err := collectionNames(filepath.Join(s.cfg.DataDir, kind))
		if err != nil {
			return fmt.Errorf("list %s collections: %w", kind, err)
		}
		for _, name := range names {
			if e := (collectionEntry{Kind: kind, Name: name}); strings.HasPrefix(name, prefix) && e.id() > after {
				page = append(page, e)
			}
		}
	}
	out := pageOfCollections(page, int(limit))
	for i := range out.Collections {
		e := &out.Collections[i]
		if e.Bytes, err = collectionBytes(filepath.Join(s.cfg.DataDir, e.Kind, filepath.FromSlash(e.Name))); err != nil {
			return fmt.Errorf("size of %s %q: %w", e.Kind, e.Name, err)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// pageOfCollections sorts entries, merges those of one collection (held
// by two shards during a move) and keeps the first limit.
func pageOfCollections(entries []collectionEntry, limit int) collectionsPage {
	slices.SortFunc(entries, func(a, b collectionEntry) int { return strings.Compare(a.id(), b.id()) })
	merged := entries[:0]
	for _, e := range entries {
		if n := len(merged); n > 0 && merged[n-1].id() == e.id() {
			merged[n-1].Bytes += e.Bytes
			continue
		}
		merged = append(merged, e)
	}
	out := collectionsPage{Collections: merged}
	if len(merged) > limit {
		out.Collections = merged[:limit]
		out.Next = merged[limit-1].id()
	}
	if out.Collections == nil {
		out.Collections = []collectionEntry{}
	}
	return out
}

// mergeCollectionPages merges the shards' pages of GET /v1/collections:
// each holds a shard's first entries after the same point, so the first
// limit of them all are the cluster's.
func mergeCollectionPages(answers []shardAnswer, limit int) (collectionsPage, error) {
	var all []collectionEntry
	more := false
	for _, ans := range answers {
		var p collectionsPage
		if err := json.NewDecoder(bytes.NewReader(ans.Result)).Decode(&p); err != nil {
			return p, fmt.Errorf("shard %d answered %s: %w", ans.Shard, ans.Result, err)
		}
		all = append(all, p.Collections...)
		more = more || p.Next != ""
	}
	out := pageOfCollections(all, limit)
	if out.Next == "" && more && len(out.Collections) > 0 {
		out.Next = out.Collections[len(out.Collections)-1].id()
	}
	return out, nil
}

// collectionBytes is the space the files of the collection in dir take:
// its database and log, the value files being written, and its value
// directories (not the collections nested in it).
func collectionBytes(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if !e.IsDir() {
			total += fileBytes(p)
			continue
		}
		if !engine.IsValueDirName(e.Name()) {
			continue
		}
		err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // removed while we walk
				}
				return err
			}
			if !d.IsDir() {
				total += fileBytes(path)
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return total, nil
}

// fileBytes is a file's size, 0 when it is gone.
func fileBytes(path string) int64 {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
