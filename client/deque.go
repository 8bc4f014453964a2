package client

import (
	"bytes"
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

// ErrIndexOutOfRange matches the error of a deque index outside the deque
// (python's IndexError).
var ErrIndexOutOfRange error = sentinel(wire.CodeIndexOutOfRange)

// Deque is a named python-diskcache Deque on the server
// (/v1/deques/{name}). Every call is atomic on the server.
type Deque struct {
	c    *Client
	path string // escaped: /v1/deques/<name>
}

// Deque returns the deque called name; names may nest with '/'.
func (c *Client) Deque(name string) *Deque {
	return &Deque{c: c, path: "/v1/deques/" + wire.EscapePath(name)}
}

// PushOption modifies Append, AppendLeft, Extend and ExtendLeft.
type PushOption func(url.Values)

// Maxlen bounds the deque for this call, as python's Deque(maxlen=n): once
// the values are added, items are dropped from the other end until at most
// n remain, in the same transaction. n = 0 leaves the deque empty.
func Maxlen(n int) PushOption {
	return func(q url.Values) { q.Set("maxlen", strconv.Itoa(n)) }
}

func pushQuery(side string, opts []PushOption) url.Values {
	q := url.Values{"side": {side}}
	for _, o := range opts {
		o(q)
	}
	return q
}

type lenAnswer struct {
	Len int64 `json:"len"`
}

// Len returns the number of items.
func (d *Deque) Len(ctx context.Context) (int64, error) {
	var out lenAnswer
	_, err := d.c.doJSON(ctx, request{method: http.MethodGet, path: d.path, idempotent: true}, &out)
	return out.Len, err
}

// Clear removes every item and returns how many there were. The server
// removes the deque's files too: a deque cleared takes no space until used again.
func (d *Deque) Clear(ctx context.Context) (int64, error) {
	var out removal
	_, err := d.c.doJSON(ctx, request{method: http.MethodDelete, path: d.path, idempotent: true}, &out)
	return out.Removed, err
}

func (d *Deque) push(ctx context.Context, side string, v kv.Value, opts []PushOption) (int64, error) {
	req := request{method: http.MethodPost, path: d.path + "/push", query: pushQuery(side, opts)}
	valueRequest(&req, v, kv.SetOptions{})
	var out lenAnswer
	_, err := d.c.doJSON(ctx, req, &out)
	return out.Len, err
}

// Append adds v at the back and returns the length after.
func (d *Deque) Append(ctx context.Context, v kv.Value, opts ...PushOption) (int64, error) {
	return d.push(ctx, "back", v, opts)
}

// AppendLeft adds v at the front and returns the length after.
func (d *Deque) AppendLeft(ctx context.Context, v kv.Value, opts ...PushOption) (int64, error) {
	return d.push(ctx, "front", v, opts)
}

func (d *Deque) extend(ctx context.Context, side string, values []kv.Value, opts []PushOption) (int64, error) {
	var buf bytes.Buffer
	rw := wire.NewRecordWriter(&buf)
	for _, v := range values {
		if err := rw.Write(valueRecord(v)); err != nil {
			return 0, err
		}
	}
	req := request{method: http.MethodPost, path: d.path + "/items", query: pushQuery(side, opts), body: buf.Bytes(),
		header: http.Header{"Content-Type": {wire.RecordsContentType}}}
	var out lenAnswer
	_, err := d.c.doJSON(ctx, req, &out)
	return out.Len, err
}

// valueRecord is a record carrying only a value.
func valueRecord(v kv.Value) (wire.Record, []byte) {
	t := v.Type
	if t == kv.ValueNone {
		t = kv.ValueBytes
	}
	data := v.Data
	if t == kv.ValueInt || t == kv.ValueFloat {
		data = []byte(wire.FormatNumber(v))
	}
	return wire.Record{Type: t.String()}, data
}

// Extend appends values at the back, in order, atomically, and returns the
// length after.
func (d *Deque) Extend(ctx context.Context, values []kv.Value, opts ...PushOption) (int64, error) {
	return d.extend(ctx, "back", values, opts)
}

// ExtendLeft adds values at the front one after the other (so they end up
// reversed), atomically, and returns the length after.
func (d *Deque) ExtendLeft(ctx context.Context, values []kv.Value, opts ...PushOption) (int64, error) {
	return d.extend(ctx, "front", values, opts)
}

func (d *Deque) take(ctx context.Context, method, op, side string) (kv.Value, error) {
	resp, err := d.c.do(ctx, request{method: method, path: d.path + op, query: url.Values{"side": {side}},
		idempotent: method == http.MethodGet})
	if err != nil {
		return kv.Value{}, err
	}
	it, err := readItem(resp, kv.Key{})
	return it.Value, err
}

// Pop removes and returns the back item; ErrEmpty when there is none.
func (d *Deque) Pop(ctx context.Context) (kv.Value, error) {
	return d.take(ctx, http.MethodPost, "/pop", "back")
}

// PopLeft removes and returns the front item; ErrEmpty when there is none.
func (d *Deque) PopLeft(ctx context.Context) (kv.Value, error) {
	return d.take(ctx, http.MethodPost, "/pop", "front")
}

// Peek returns the back item; ErrEmpty when there is none.
func (d *Deque) Peek(ctx context.Context) (kv.Value, error) {
	return d.take(ctx, http.MethodGet, "/peek", "back")
}

// PeekLeft returns the front item; ErrEmpty when there is none.
func (d *Deque) PeekLeft(ctx context.Context) (kv.Value, error) {
	return d.take(ctx, http.MethodGet, "/peek", "front")
}

// DequeItem is an item of a deque listing.
type DequeItem struct {
	// Index is the item's position, 0 at the front.
	Index int64
	Value kv.Value
}

// DequePage is one page of a deque listing.
type DequePage struct {
	Items []DequeItem
	// Total is the deque's length when the page was read.
	Total int64
}

// Page returns up to limit items (0: the server's default, 1000) from
// position offset on, front to back, or back to front with reverse (offset
// then counts from the back).
func (d *Deque) Page(ctx context.Context, reverse bool, offset int64, limit int) (DequePage, error) {
	q := url.Values{"reverse": {strconv.FormatBool(reverse)}, "offset": {strconv.FormatInt(offset, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	resp, err := d.c.do(ctx, request{method: http.MethodGet, path: d.path + "/items", query: q, idempotent: true})
	if err != nil {
		return DequePage{}, err
	}
	defer resp.Body.Close()
	var page DequePage
	if page.Total, err = strconv.ParseInt(resp.Header.Get(wire.HeaderTotal), 10, 64); err != nil {
		return page, fmt.Errorf("client: deque listing without a valid %s header", wire.HeaderTotal)
	}
	rr := wire.NewRecordReader(resp.Body)
	for {
		rec, r, err := rr.Next()
		if errors.Is(err, io.EOF) {
			return page, nil
		}
		if err != nil {
			return page, fmt.Errorf("client: deque listing: %w", err)
		}
		it, err := ItemFromRecord(rec, r)
		if err != nil {
			return page, err
		}
		if rec.Index == nil {
			return page, fmt.Errorf("client: deque listing record without an index")
		}
		page.Items = append(page.Items, DequeItem{Index: *rec.Index, Value: it.Value})
	}
}

// Items yields every item, front to back (back to front with reverse),
// reading pages of pageSize (0: the server's default). Like python's
// iteration it is not a snapshot: items added or removed meanwhile may
// shift what later pages hold.
func (d *Deque) Items(ctx context.Context, reverse bool, pageSize int) iter.Seq2[DequeItem, error] {
	return func(yield func(DequeItem, error) bool) {
		var offset int64
		for {
			page, err := d.Page(ctx, reverse, offset, pageSize)
			if err != nil {
				yield(DequeItem{}, err)
				return
			}
			for _, it := range page.Items {
				if !yield(it, nil) {
					return
				}
			}
			offset += int64(len(page.Items))
			if len(page.Items) == 0 || offset >= page.Total {
				return
			}
		}
	}
}

func (d *Deque) itemPath(i int) string { return d.path + "/items/" + strconv.Itoa(i) }

// At returns the item at index i (negative counts from the back);
// ErrIndexOutOfRange outside the deque.
func (d *Deque) At(ctx context.Context, i int) (kv.Value, error) {
	resp, err := d.c.do(ctx, request{method: http.MethodGet, path: d.itemPath(i), idempotent: true})
	if err != nil {
		return kv.Value{}, err
	}
	it, err := readItem(resp, kv.Key{})
	return it.Value, err
}

// SetAt replaces the item at index i (see At).
func (d *Deque) SetAt(ctx context.Context, i int, v kv.Value) error {
	req := request{method: http.MethodPut, path: d.itemPath(i), idempotent: true}
	valueRequest(&req, v, kv.SetOptions{})
	_, err := d.c.doJSON(ctx, req, nil)
	return err
}

// DeleteAt removes the item at index i (see At).
func (d *Deque) DeleteAt(ctx context.Context, i int) error {
	_, err := d.c.doJSON(ctx, request{method: http.MethodDelete, path: d.itemPath(i)}, nil)
	return err
}

// Rotate rotates steps to the right (back items move to the front), or to
// the left when steps is negative.
func (d *Deque) Rotate(ctx context.Context, steps int) error {
	_, err := d.c.doJSON(ctx, request{method: http.MethodPost, path: d.path + "/rotate",
		query: url.Values{"steps": {strconv.Itoa(steps)}}}, nil)
	return err
}

// Reverse reverses the deque in place.
func (d *Deque) Reverse(ctx context.Context) error {
	_, err := d.c.doJSON(ctx, request{method: http.MethodPost, path: d.path + "/reverse"}, nil)
	return err
}

// Remove removes the first item equal to v (python's equality: Int(1)
// equals Float(1.0)) and reports whether there was one.
func (d *Deque) Remove(ctx context.Context, v kv.Value) (bool, error) {
	req := request{method: http.MethodPost, path: d.path + "/remove"}
	valueRequest(&req, v, kv.SetOptions{})
	var out struct {
		Removed bool `json:"removed"`
	}
	_, err := d.c.doJSON(ctx, req, &out)
	return out.Removed, err
}

// Count returns the number of items equal to v (see Remove).
func (d *Deque) Count(ctx context.Context, v kv.Value) (int64, error) {
	req := request{method: http.MethodPost, path: d.path + "/count", idempotent: true}
	valueRequest(&req, v, kv.SetOptions{})
	var out struct {
		Count int64 `json:"count"`
	}
	_, err := d.c.doJSON(ctx, req, &out)
	return out.Count, err
}
