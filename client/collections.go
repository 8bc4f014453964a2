package client

import (
	"context"
	"iter"
	"net/http"
	"net/url"
	"strconv"
)

// CollectionInfo is one named cache, deque or index of Collections.
type CollectionInfo struct {
	Kind  string `json:"kind"` // "cache", "deque" or "index"
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"` // what its files take on the server's disk
}

// CollectionsPage is one page of Collections.
type CollectionsPage struct {
	Collections []CollectionInfo `json:"collections"`
	// Next is the after of the next page; empty on the last one.
	Next string `json:"next"`
}

// CollectionsPage returns up to limit (0: the server's default, 1000) of
// the named caches, deques and indexes that exist, ordered by kind then
// name, from after (a page's Next; "" at the start) on: those of kind
// ("cache", "deque" or "index"; "" for all) whose name starts with prefix.
// A sharded cache lists every shard's.
func (c *Client) CollectionsPage(ctx context.Context, kind, prefix, after string, limit int) (CollectionsPage, error) {
	q := url.Values{}
	for k, v := range map[string]string{"kind": kind, "prefix": prefix, "after": after} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var page CollectionsPage
	_, err := c.doJSON(ctx, request{method: http.MethodGet, path: "/v1/collections", query: q, idempotent: true}, &page)
	return page, err
}

// Collections yields every named cache, deque and index of kind ("" for
// all) whose name starts with prefix, reading pages of pageSize (0: the
// server's default): what to look through to Drop or Clear the ones no
// longer used.
func (c *Client) Collections(ctx context.Context, kind, prefix string, pageSize int) iter.Seq2[CollectionInfo, error] {
	return func(yield func(CollectionInfo, error) bool) {
		after := ""
		for {
			page, err := c.CollectionsPage(ctx, kind, prefix, after, pageSize)
			if err != nil {
				yield(CollectionInfo{}, err)
				return
			}
			for _, ci := range page.Collections {
				if !yield(ci, nil) {
					return
				}
			}
			if page.Next == "" {
				return
			}
			after = page.Next
		}
	}
}
