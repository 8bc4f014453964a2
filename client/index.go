package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// Index is a named python-diskcache Index on the server
// (/v1/indexes/{name}): a mapping that iterates in insertion order.
type Index struct {
	c    *Client
	path string // escaped: /v1/indexes/<name>
	keys *Cache // the key routes, which are those of a cache
}

// Index returns the index called name; names may nest with '/'.
func (c *Client) Index(name string) *Index {
	p := "/v1/indexes/" + wire.EscapePath(name)
	return &Index{c: c, path: p, keys: &Cache{c: c, prefix: p}}
}

// Len returns the number of items.
func (x *Index) Len(ctx context.Context) (int64, error) {
	var out lenAnswer
	_, err := x.c.doJSON(ctx, request{method: http.MethodGet, path: x.path, idempotent: true}, &out)
	return out.Len, err
}

// Clear removes every item and returns how many there were. The server
// removes the index's files too: a index cleared takes no space until used again.
func (x *Index) Clear(ctx context.Context) (int64, error) {
	var out removal
	_, err := x.c.doJSON(ctx, request{method: http.MethodDelete, path: x.path, idempotent: true}, &out)
	return out.Removed, err
}

// Get returns the item under key; ok is false when there is none.
func (x *Index) Get(ctx context.Context, key kv.Key) (Item, bool, error) {
	return x.keys.Get(ctx, key)
}

// Contains reports whether key is in the index.
func (x *Index) Contains(ctx context.Context, key kv.Key) (bool, error) {
	return x.keys.Contains(ctx, key)
}

// Set stores value under key: at the end for a new key, in its place for
// an existing one.
func (x *Index) Set(ctx context.Context, key kv.Key, value kv.Value) error {
	return x.keys.Set(ctx, key, value, kv.SetOptions{})
}

// Delete removes key and reports whether it was there.
func (x *Index) Delete(ctx context.Context, key kv.Key) (bool, error) {
	return x.keys.Delete(ctx, key)
}

// SetDefault returns the value under key, storing def there first when the
// key is missing.
func (x *Index) SetDefault(ctx context.Context, key kv.Key, def kv.Value) (kv.Value, error) {
	p, q := x.keys.keyPath(key, "/setdefault")
	req := request{method: http.MethodPost, path: p, query: q, idempotent: true}
	valueRequest(&req, def, kv.SetOptions{})
	resp, err := x.c.do(ctx, req)
	if err != nil {
		return kv.Value{}, err
	}
	it, err := readItem(resp, key)
	return it.Value, err
}

// Pop removes key and returns its item; ok is false when it was missing.
func (x *Index) Pop(ctx context.Context, key kv.Key) (Item, bool, error) {
	return x.keys.Pop(ctx, key)
}

// itemWithKey calls a route that answers an item with its key in headers.
func (x *Index) itemWithKey(ctx context.Context, method, op string, q url.Values) (Item, error) {
	return queue{x.c, x.path}.itemWithKey(ctx, method, op, q)
}

// queue is python-diskcache's queue operations of the cache at path (an
// index's, or a named cache's).
type queue struct {
	c    *Client
	path string
}

func (qu queue) itemWithKey(ctx context.Context, method, op string, q url.Values) (Item, error) {
	resp, err := qu.c.do(ctx, request{method: method, path: qu.path + op, query: q, idempotent: method == http.MethodGet})
	if err != nil {
		return Item{}, err
	}
	return readItem(resp, kv.Key{})
}

func queueQuery(prefix string, side Side) url.Values {
	q := url.Values{}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	if side != "" {
		q.Set("side", string(side))
	}
	return q
}

func (qu queue) push(ctx context.Context, value kv.Value, prefix string, side Side, opts kv.SetOptions) (kv.Key, error) {
	q := queueQuery(prefix, side)
	setQuery(q, opts)
	req := request{method: http.MethodPost, path: qu.path + "/push", query: q}
	valueRequest(&req, value, opts)
	var out struct {
		Key  string `json:"key"`
		Kind string `json:"kt"`
	}
	if _, err := qu.c.doJSON(ctx, req, &out); err != nil {
		return kv.Key{}, err
	}
	k, err := wire.ParseKey(out.Key, out.Kind)
	if err != nil {
		return kv.Key{}, fmt.Errorf("client: push answered a bad key: %w", err)
	}
	return k, nil
}

// PopItem removes and returns the last item in insertion order (the first
// when last is false); ErrEmpty when the index is empty.
func (x *Index) PopItem(ctx context.Context, last bool) (Item, error) {
	return x.itemWithKey(ctx, http.MethodPost, "/popitem", url.Values{"last": {strconv.FormatBool(last)}})
}

// PeekItem returns the last item in insertion order (the first when last
// is false) without removing it; ErrEmpty when the index is empty.
func (x *Index) PeekItem(ctx context.Context, last bool) (Item, error) {
	return x.itemWithKey(ctx, http.MethodGet, "/peekitem", url.Values{"last": {strconv.FormatBool(last)}})
}

// Side names an end of a queue: "back" or "front".
type Side string

// Queue ends for Push and Pull.
const (
	Back  Side = "back"
	Front Side = "front"
)

// Push adds value to the queue named prefix inside the index (integer keys
// when prefix is empty, else "<prefix>-%015d" text keys) at side (empty:
// back) and returns the new key, python's Index.push.
func (x *Index) Push(ctx context.Context, value kv.Value, prefix string, side Side) (kv.Key, error) {
	return queue{x.c, x.path}.push(ctx, value, prefix, side, kv.SetOptions{})
}

// Pull removes and returns the item at side (empty: front) of the queue
// named prefix, python's Index.pull; ErrEmpty when the queue is empty.
func (x *Index) Pull(ctx context.Context, prefix string, side Side) (Item, error) {
	return x.itemWithKey(ctx, http.MethodPost, "/pull", queueQuery(prefix, side))
}

// IndexPage is one page of an index listing.
type IndexPage struct {
	Items []Item
	// Next is the cursor of the next page; empty on the last one.
	Next string
}

// ItemsOptions select an index listing.
type ItemsOptions struct {
	// Reverse lists newest first.
	Reverse bool
	// Limit is the page size; 0 means the server's default (1000).
	Limit int
	// KeysOnly leaves values out (Item.Value is the zero Value).
	KeysOnly bool
}

// Page returns the page after cursor ("" for the first).
func (x *Index) Page(ctx context.Context, cursor string, opts ItemsOptions) (IndexPage, error) {
	q := url.Values{"reverse": {strconv.FormatBool(opts.Reverse)}, "values": {strconv.FormatBool(!opts.KeysOnly)}}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	resp, err := x.c.do(ctx, request{method: http.MethodGet, path: x.path + "/items", query: q, idempotent: true})
	if err != nil {
		return IndexPage{}, err
	}
	defer resp.Body.Close()
	page := IndexPage{Next: resp.Header.Get(wire.HeaderNextCursor)}
	rr := wire.NewRecordReader(resp.Body)
	for {
		rec, r, err := rr.Next()
		if errors.Is(err, io.EOF) {
			return page, nil
		}
		if err != nil {
			return page, fmt.Errorf("client: index listing: %w", err)
		}
		it, err := ItemFromRecord(rec, r)
		if err != nil {
			return page, err
		}
		page.Items = append(page.Items, it)
	}
}

// Items yields every item in insertion order (see ItemsOptions), page by
// page. Items added while it runs never make it skip or repeat an item
// that was there when it started, and are not listed: a forward run ends
// where the index ended at its first page, as python-diskcache's
// iteration.
func (x *Index) Items(ctx context.Context, opts ItemsOptions) iter.Seq2[Item, error] {
	return func(yield func(Item, error) bool) {
		cursor := ""
		for {
			page, err := x.Page(ctx, cursor, opts)
			if err != nil {
				yield(Item{}, err)
				return
			}
			for _, it := range page.Items {
				if !yield(it, nil) {
					return
				}
			}
			if page.Next == "" {
				return
			}
			cursor = page.Next
		}
	}
}
