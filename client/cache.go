package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// Cache is the key API of the server's cache or of one named cache.
type Cache struct {
	c      *Client
	prefix string // escaped path prefix: /v1 or /v1/caches/<name>
}

// Cache returns the named cache ("" is the server's own cache). Names may
// nest with '/'.
func (c *Client) Cache(name string) *Cache {
	if name == "" {
		return &Cache{c: c, prefix: "/v1"}
	}
	return &Cache{c: c, prefix: "/v1/caches/" + wire.EscapePath(name)}
}

// Item is a value with its metadata.
type Item struct {
	Key   kv.Key
	Value kv.Value
	// ExpireTime is the absolute expiry in epoch seconds, 0 if none.
	ExpireTime float64
	// Tag is the zero Key when the item has none.
	Tag kv.Key
}

// Stream is a value being read from the server; close it.
type Stream struct {
	io.ReadCloser
	Item // Value.Data is nil
	// Size is the value's length in bytes.
	Size int64
}

func (cc *Cache) keyPath(k kv.Key, suffix string) (string, url.Values) {
	seg, q := keySegment(k)
	return cc.prefix + "/keys/" + seg + suffix, q
}

// keySegment writes a key as one escaped path segment plus the query
// parameters (?kt=, ?ke=) that say how to read it.
func keySegment(k kv.Key) (string, url.Values) {
	raw, kind := wire.FormatKey(k)
	q := url.Values{}
	if kind == "" {
		// The zero Key is no key: a kind the server refuses (400 bad_key),
		// where an empty ?kt= would read as the empty text key.
		kind = "none"
	}
	if kind != "text" {
		q.Set(wire.ParamKeyType, kind)
	}
	seg, enc := wire.EncodeKeySegment(raw)
	if enc != "" {
		q.Set(wire.ParamKeyEncoding, enc)
	}
	return seg, q
}

func setQuery(q url.Values, opts kv.SetOptions) {
	if opts.Expire.IsSet() {
		q.Set(wire.ParamExpire, strconv.FormatFloat(opts.Expire.Seconds(), 'f', -1, 64))
	}
	if !opts.Tag.IsNone() {
		raw, kind := wire.FormatKey(opts.Tag)
		q.Set(wire.ParamTag, raw)
		if kind != "text" {
			q.Set(wire.ParamTagType, kind)
		}
	}
}

// valueRequest puts a value (or opts.Body, streamed) into a request.
func valueRequest(req *request, v kv.Value, opts kv.SetOptions) {
	t := v.Type
	if t == kv.ValueNone {
		t = kv.ValueBytes
	}
	req.header = http.Header{wire.HeaderValueType: {t.String()}}
	if opts.Body != nil {
		req.stream, req.length = opts.Body, -1
		if s, ok := opts.Body.(interface{ Len() int }); ok {
			req.length = int64(s.Len())
		}
		return
	}
	switch v.Type {
	case kv.ValueInt, kv.ValueFloat:
		req.body = []byte(wire.FormatNumber(v))
	default:
		req.body = v.Data
		if req.body == nil {
			req.body = []byte{}
		}
	}
}

// itemFromResponse reads the metadata headers of a single-item answer.
func itemFromResponse(resp *http.Response, key kv.Key) (Item, error) {
	it := Item{Key: key}
	h := resp.Header
	t, err := kv.ParseValueType(h.Get(wire.HeaderValueType))
	if err != nil {
		return it, fmt.Errorf("client: answer has %w", err)
	}
	it.Value.Type = t
	if e := h.Get(wire.HeaderExpireTime); e != "" {
		if it.ExpireTime, err = strconv.ParseFloat(e, 64); err != nil {
			return it, fmt.Errorf("client: bad %s %q", wire.HeaderExpireTime, e)
		}
	}
	if tag := h.Get(wire.HeaderTag); tag != "" || h.Get(wire.HeaderTagType) != "" {
		raw, err := wire.UnescapeHeader(tag)
		if err != nil {
			return it, fmt.Errorf("client: bad %s: %w", wire.HeaderTag, err)
		}
		if it.Tag, err = wire.ParseTag(raw, h.Get(wire.HeaderTagType)); err != nil {
			return it, fmt.Errorf("client: bad tag: %w", err)
		}
	}
	if k := h.Get(wire.HeaderKey); k != "" || h.Get(wire.HeaderKeyType) != "" {
		raw, err := wire.UnescapeHeader(k)
		if err != nil {
			return it, fmt.Errorf("client: bad %s: %w", wire.HeaderKey, err)
		}
		if it.Key, err = wire.ParseKey(raw, h.Get(wire.HeaderKeyType)); err != nil {
			return it, fmt.Errorf("client: bad key: %w", err)
		}
	}
	return it, nil
}

// decodeValue fills it.Value from a body.
func decodeValue(it *Item, body []byte) error {
	switch it.Value.Type {
	case kv.ValueInt, kv.ValueFloat:
		n, err := wire.ParseNumber(string(body))
		if err != nil {
			return fmt.Errorf("client: %w", err)
		}
		if it.Value.Type == kv.ValueFloat && n.Type == kv.ValueInt {
			n = kv.Float(float64(n.Int))
		}
		it.Value = n
	default:
		it.Value.Data = body
	}
	return nil
}

// readItem reads a whole single-item answer.
func readItem(resp *http.Response, key kv.Key) (Item, error) {
	defer resp.Body.Close()
	it, err := itemFromResponse(resp, key)
	if err != nil {
		return it, err
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return it, fmt.Errorf("client: read value: %w", err)
	}
	return it, decodeValue(&it, body)
}

// Get returns the item under key; ok is false on a miss.
func (cc *Cache) Get(ctx context.Context, key kv.Key) (Item, bool, error) {
	p, q := cc.keyPath(key, "")
	resp, err := cc.c.do(ctx, request{method: http.MethodGet, path: p, query: q, idempotent: true})
	if errors.Is(err, ErrNotFound) {
		return Item{}, false, nil
	}
	if err != nil {
		return Item{}, false, err
	}
	it, err := readItem(resp, key)
	return it, err == nil, err
}

// Open streams the value under key instead of reading it whole.
func (cc *Cache) Open(ctx context.Context, key kv.Key) (*Stream, bool, error) {
	p, q := cc.keyPath(key, "")
	resp, err := cc.c.do(ctx, request{method: http.MethodGet, path: p, query: q, idempotent: true})
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	it, err := itemFromResponse(resp, key)
	if err != nil {
		resp.Body.Close()
		return nil, false, err
	}
	return &Stream{ReadCloser: resp.Body, Item: it, Size: resp.ContentLength}, true, nil
}

// Contains reports whether key has a live item.
func (cc *Cache) Contains(ctx context.Context, key kv.Key) (bool, error) {
	p, q := cc.keyPath(key, "")
	resp, err := cc.c.do(ctx, request{method: http.MethodHead, path: p, query: q, idempotent: true}, http.StatusNotFound)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	if resp.Header.Get(wire.HeaderNoRoute) != "" {
		// A HEAD answer has no body: the header tells a wrong base URL
		// from a key without an item.
		return false, &Error{Status: resp.StatusCode, Code: wire.CodeNotFound,
			Message: "no route for this HEAD on the server (a wrong base URL?)"}
	}
	return resp.StatusCode == http.StatusOK, nil
}

// Set stores value under key. With opts.Body set the value is streamed
// from it (value.Type still names its type).
func (cc *Cache) Set(ctx context.Context, key kv.Key, value kv.Value, opts kv.SetOptions) error {
	p, q := cc.keyPath(key, "")
	setQuery(q, opts)
	req := request{method: http.MethodPut, path: p, query: q, idempotent: true}
	valueRequest(&req, value, opts)
	_, err := cc.c.doJSON(ctx, req, nil)
	return err
}

// Add stores value only if key has no live item and reports whether it did.
func (cc *Cache) Add(ctx context.Context, key kv.Key, value kv.Value, opts kv.SetOptions) (bool, error) {
	p, q := cc.keyPath(key, "/add")
	setQuery(q, opts)
	req := request{method: http.MethodPost, path: p, query: q}
	valueRequest(&req, value, opts)
	var out struct{ Added bool }
	_, err := cc.c.doJSON(ctx, req, &out)
	return out.Added, err
}

// Replace stores value only if key has a live item (Redis's SET XX) and
// reports whether it did.
func (cc *Cache) Replace(ctx context.Context, key kv.Key, value kv.Value, opts kv.SetOptions) (bool, error) {
	p, q := cc.keyPath(key, "/replace")
	setQuery(q, opts)
	// Repeatable: a second replace of a live item stores the same again.
	req := request{method: http.MethodPost, path: p, query: q, idempotent: true}
	valueRequest(&req, value, opts)
	var out struct{ Replaced bool }
	_, err := cc.c.doJSON(ctx, req, &out)
	return out.Replaced, err
}

// Touch sets a live item's expiry and reports whether key was live.
func (cc *Cache) Touch(ctx context.Context, key kv.Key, expire kv.Expiry) (bool, error) {
	p, q := cc.keyPath(key, "/touch")
	setQuery(q, kv.SetOptions{Expire: expire})
	var out struct{ Touched bool }
	_, err := cc.c.doJSON(ctx, request{method: http.MethodPost, path: p, query: q, idempotent: true}, &out)
	return out.Touched, err
}

// Delete removes key and reports whether it had a live item.
func (cc *Cache) Delete(ctx context.Context, key kv.Key) (bool, error) {
	p, q := cc.keyPath(key, "")
	var out struct{ Deleted bool }
	_, err := cc.c.doJSON(ctx, request{method: http.MethodDelete, path: p, query: q, idempotent: true}, &out)
	return out.Deleted, err
}

// Pop removes and returns the item under key.
func (cc *Cache) Pop(ctx context.Context, key kv.Key) (Item, bool, error) {
	p, q := cc.keyPath(key, "/pop")
	resp, err := cc.c.do(ctx, request{method: http.MethodPost, path: p, query: q})
	if errors.Is(err, ErrNotFound) {
		return Item{}, false, nil
	}
	if err != nil {
		return Item{}, false, err
	}
	it, err := readItem(resp, key)
	return it, err == nil, err
}

// Incr adds delta to the number under key atomically on the server. A
// missing key starts at def; a def of type ValueNone makes a missing key
// an error matching ErrNotFound.
func (cc *Cache) Incr(ctx context.Context, key kv.Key, delta, def kv.Value) (kv.Value, error) {
	return cc.incr(ctx, "/incr", key, delta, def)
}

// Decr subtracts delta; see Incr.
func (cc *Cache) Decr(ctx context.Context, key kv.Key, delta, def kv.Value) (kv.Value, error) {
	return cc.incr(ctx, "/decr", key, delta, def)
}

func (cc *Cache) incr(ctx context.Context, op string, key kv.Key, delta, def kv.Value) (kv.Value, error) {
	if !isNumber(delta) || !isNumber(def) && def.Type != kv.ValueNone {
		return kv.Value{}, fmt.Errorf("client: %s of %v: delta (%s) and default (%s) must be int or float values (default may be none)",
			strings.TrimPrefix(op, "/"), key, delta.Type, def.Type)
	}
	p, q := cc.keyPath(key, op)
	q.Set("delta", wire.FormatNumber(delta))
	if def.Type == kv.ValueNone {
		q.Set("default", "none")
	} else {
		q.Set("default", wire.FormatNumber(def))
	}
	resp, err := cc.c.do(ctx, request{method: http.MethodPost, path: p, query: q})
	if err != nil {
		return kv.Value{}, err
	}
	it, err := readItem(resp, key)
	return it.Value, err
}

// Result is one answer of GetMany.
type Result struct {
	Item
	Found bool
	// Err is why the key has no answer: its shard failed its part of the
	// batch (Found is false). It matches the sentinels (ErrShardUnavailable,
	// ErrShardTimeout, ...) as the Error of a call to that shard would.
	Err error
}

// GetMany returns an answer per key, in order. When some shards of a
// sharded cache are away, the others' keys are still answered: their
// Results are filled in, the keys of the shards away have Err set, and
// the error matches ErrPartialFailure.
func (cc *Cache) GetMany(ctx context.Context, keys []kv.Key) ([]Result, error) {
	body, err := keysBody(keys)
	if err != nil {
		return nil, err
	}
	resp, err := cc.c.do(ctx, request{method: http.MethodPost, path: cc.prefix + "/batch/get", body: body,
		header: http.Header{"Content-Type": {"application/json"}}, idempotent: true})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	rr := wire.NewRecordReader(resp.Body)
	out := make([]Result, 0, len(keys))
	failed := 0
	for {
		rec, r, err := rr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("client: batch get: %w", err)
		}
		it, err := ItemFromRecord(rec, r)
		if err != nil {
			return nil, err
		}
		res := Result{Item: it, Found: rec.Found == nil || *rec.Found}
		if rec.Error != "" {
			res.Err = &Error{Status: http.StatusBadGateway, Code: rec.Error, Message: rec.Message}
			failed++
		}
		out = append(out, res)
	}
	if len(out) != len(keys) {
		return nil, fmt.Errorf("client: batch get answered %d records for %d keys", len(out), len(keys))
	}
	if failed > 0 {
		return out, &Error{Status: http.StatusBadGateway, Code: wire.CodePartialFailure,
			Message: fmt.Sprintf("%d of %d keys have no answer: their shards failed their part of the batch (Result.Err)", failed, len(keys))}
	}
	return out, nil
}

// ItemFromRecord decodes a record of a record stream.
func ItemFromRecord(rec wire.Record, value io.Reader) (Item, error) {
	var it Item
	var err error
	if it.Key, err = wire.KeyFromJSON(wire.EncodeKeyJSON{Key: rec.Key, Kind: rec.Kind}); err != nil {
		return it, fmt.Errorf("client: record key: %w", err)
	}
	if rec.ExpireTime != nil {
		it.ExpireTime = *rec.ExpireTime
	}
	if rec.Tag != nil {
		if it.Tag, err = wire.KeyFromJSON(wire.EncodeKeyJSON{Key: *rec.Tag, Kind: rec.TagKind}); err != nil {
			return it, fmt.Errorf("client: record tag: %w", err)
		}
	}
	if rec.Type == "" {
		return it, nil
	}
	if it.Value.Type, err = kv.ParseValueType(rec.Type); err != nil {
		return it, fmt.Errorf("client: record: %w", err)
	}
	b, err := io.ReadAll(value)
	if err != nil {
		return it, fmt.Errorf("client: record value: %w", err)
	}
	return it, decodeValue(&it, b)
}

func keysBody(keys []kv.Key) ([]byte, error) {
	body := struct {
		Keys []wire.EncodeKeyJSON `json:"keys"`
	}{Keys: make([]wire.EncodeKeyJSON, len(keys))}
	for i, k := range keys {
		if k.IsNone() {
			return nil, errNoKey(i)
		}
		body.Keys[i] = wire.KeyToJSON(k)
	}
	return json.Marshal(body)
}

// errNoKey refuses the zero Key of a batch, which would read as the
// empty text key.
func errNoKey(i int) error {
	return fmt.Errorf("client: key %d of the batch: %w", i, kv.ErrInvalidKey)
}

// SetItem is one item of SetMany.
type SetItem struct {
	Key   kv.Key
	Value kv.Value
	Opts  kv.SetOptions // Body is not supported here
}

// SetManyResult says what SetMany stored.
type SetManyResult struct {
	Stored int `json:"stored"`
	Failed []struct {
		Index   int    `json:"index"`
		Error   string `json:"error"`
		Message string `json:"message"`
	} `json:"failed"`
}

// SetMany stores many items in one request; items that could not be stored
// are listed in the result (by index) rather than failing the call. When
// some shards of a sharded cache are away, the others' items are stored:
// the error matches ErrPartialFailure and the result still says what was
// stored and which items were not.
func (cc *Cache) SetMany(ctx context.Context, items []SetItem) (SetManyResult, error) {
	var buf bytes.Buffer
	rw := wire.NewRecordWriter(&buf)
	for i, it := range items {
		if it.Opts.Body != nil {
			return SetManyResult{}, fmt.Errorf("client: SetMany item %d: Opts.Body is not supported (use Set to stream a value)", i)
		}
		if it.Key.IsNone() {
			return SetManyResult{}, errNoKey(i)
		}
		kj := wire.KeyToJSON(it.Key)
		t := it.Value.Type
		if t == kv.ValueNone {
			t = kv.ValueBytes
		}
		rec := wire.Record{Key: kj.Key, Kind: kj.Kind, Type: t.String()}
		if it.Opts.Expire.IsSet() {
			s := it.Opts.Expire.Seconds()
			rec.Expire = &s
		}
		if !it.Opts.Tag.IsNone() {
			tj := wire.KeyToJSON(it.Opts.Tag)
			rec.Tag, rec.TagKind = &tj.Key, tj.Kind
		}
		data := it.Value.Data
		if t == kv.ValueInt || t == kv.ValueFloat {
			data = []byte(wire.FormatNumber(it.Value))
		}
		if err := rw.Write(rec, data); err != nil {
			return SetManyResult{}, err
		}
	}
	var out SetManyResult
	_, err := cc.c.doJSON(ctx, request{method: http.MethodPost, path: cc.prefix + "/batch/set", body: buf.Bytes(),
		header: http.Header{"Content-Type": {wire.RecordsContentType}}, idempotent: true}, &out)
	var e *Error
	if errors.As(err, &e) && e.Code == wire.CodePartialFailure {
		_ = json.Unmarshal(e.Body, &out) // its stored and failed
	}
	return out, err
}

// DeleteMany deletes keys and says, per key, whether it had a live item.
// When some shards of a sharded cache are away, the others' keys are
// deleted: the error matches ErrPartialFailure, the result still says
// which keys were deleted, and Error.Body lists those not known to be
// (failed).
func (cc *Cache) DeleteMany(ctx context.Context, keys []kv.Key) ([]bool, error) {
	body, err := keysBody(keys)
	if err != nil {
		return nil, err
	}
	var out struct{ Deleted []bool }
	_, err = cc.c.doJSON(ctx, request{method: http.MethodPost, path: cc.prefix + "/batch/delete", body: body,
		header: http.Header{"Content-Type": {"application/json"}}, idempotent: true}, &out)
	var e *Error
	if errors.As(err, &e) && e.Code == wire.CodePartialFailure {
		_ = json.Unmarshal(e.Body, &out) // the other shards' deletions
	}
	return out.Deleted, err
}

// removal is the answer of the bulk removals.
type removal struct {
	Removed int64 `json:"removed"`
}

// remove runs a bulk removal. When some shards failed theirs (502
// partial_failure), the count is what the others removed, with the error.
func (cc *Cache) remove(ctx context.Context, op string, q url.Values) (int64, error) {
	var out removal
	_, err := cc.c.doJSON(ctx, request{method: http.MethodPost, path: cc.prefix + op, query: q, idempotent: true}, &out)
	var e *Error
	if errors.As(err, &e) && e.Code == wire.CodePartialFailure {
		var body struct {
			Shards []struct {
				Status int
				Result removal
			}
		}
		_ = json.Unmarshal(e.Body, &body)
		for _, sh := range body.Shards {
			if sh.Status >= 200 && sh.Status < 300 {
				out.Removed += sh.Result.Removed
			}
		}
	}
	return out.Removed, err
}

// Evict removes every item tagged tag.
func (cc *Cache) Evict(ctx context.Context, tag kv.Key) (int64, error) {
	q := url.Values{}
	setQuery(q, kv.SetOptions{Tag: tag})
	return cc.remove(ctx, "/evict", q)
}

// Expire removes expired items.
func (cc *Cache) Expire(ctx context.Context) (int64, error) { return cc.remove(ctx, "/expire", nil) }

// Cull removes expired items, then items by eviction policy until under
// the size limit.
func (cc *Cache) Cull(ctx context.Context) (int64, error) { return cc.remove(ctx, "/cull", nil) }

// Clear removes every item.
func (cc *Cache) Clear(ctx context.Context) (int64, error) { return cc.remove(ctx, "/clear", nil) }

// Drop removes a named cache: its items, its settings and its files (caches
// nested under its name stay), and returns how many items it held. The next
// call that uses it finds it empty, with a new cache's settings. The
// server's own cache (name "") cannot be dropped: Clear it.
func (cc *Cache) Drop(ctx context.Context) (int64, error) {
	if cc.prefix == "/v1" {
		return 0, errors.New("client: the server's own cache cannot be dropped; use Clear")
	}
	var out removal
	_, err := cc.c.doJSON(ctx, request{method: http.MethodDelete, path: cc.prefix, idempotent: true}, &out)
	return out.Removed, err
}

// Check verifies (and with fix, repairs) the cache.
func (cc *Cache) Check(ctx context.Context, fix bool) ([]kv.Warning, error) {
	var out struct{ Warnings []kv.Warning }
	_, err := cc.c.doJSON(ctx, request{method: http.MethodPost, path: cc.prefix + "/check",
		query: url.Values{"fix": {strconv.FormatBool(fix)}}, idempotent: !fix}, &out)
	return out.Warnings, err
}

// Stats is python-diskcache's stats(enable, reset): the counts before any
// reset.
func (cc *Cache) Stats(ctx context.Context, enable, reset bool) (hits, misses int64, err error) {
	var out struct{ Hits, Misses int64 }
	_, err = cc.c.doJSON(ctx, request{method: http.MethodPost, path: cc.prefix + "/stats",
		query: url.Values{"enable": {strconv.FormatBool(enable)}, "reset": {strconv.FormatBool(reset)}}}, &out)
	return out.Hits, out.Misses, err
}

// Info is the answer of GET /v1/info.
type Info struct {
	Count    int64             `json:"count"`
	Volume   int64             `json:"volume"`
	Settings settings.Settings `json:"settings"`
}

// Info returns the item count, volume and settings.
func (cc *Cache) Info(ctx context.Context) (Info, error) {
	var out Info
	_, err := cc.c.doJSON(ctx, request{method: http.MethodGet, path: cc.prefix + "/info", idempotent: true}, &out)
	return out, err
}

// Settings returns every engine setting.
func (cc *Cache) Settings(ctx context.Context) (settings.Settings, error) {
	var out settings.Settings
	_, err := cc.c.doJSON(ctx, request{method: http.MethodGet, path: cc.prefix + "/settings", idempotent: true}, &out)
	return out, err
}

// UpdateSettings changes the live settings given in changes (see
// settings.Live) and returns all settings after.
func (cc *Cache) UpdateSettings(ctx context.Context, changes settings.Settings) (settings.Settings, error) {
	body, err := json.Marshal(changes)
	if err != nil {
		return settings.Settings{}, fmt.Errorf("client: %w", err)
	}
	var out settings.Settings
	_, err = cc.c.doJSON(ctx, request{method: http.MethodPatch, path: cc.prefix + "/settings", body: body,
		header: http.Header{"Content-Type": {"application/json"}}, idempotent: true}, &out)
	return out, err
}

// CreateTagIndex creates the tag index.
func (cc *Cache) CreateTagIndex(ctx context.Context) error {
	_, err := cc.c.doJSON(ctx, request{method: http.MethodPut, path: cc.prefix + "/tag-index", idempotent: true}, nil)
	return err
}

// DropTagIndex drops the tag index.
func (cc *Cache) DropTagIndex(ctx context.Context) error {
	_, err := cc.c.doJSON(ctx, request{method: http.MethodDelete, path: cc.prefix + "/tag-index", idempotent: true}, nil)
	return err
}

func isNumber(v kv.Value) bool { return v.Type == kv.ValueInt || v.Type == kv.ValueFloat }

// KeysOptions selects a key listing.
type KeysOptions struct {
	// Match keeps the text keys that match a Redis-style glob (*, ?,
	// [...], \ escaping); "" lists every key.
	Match string
	// Reverse lists backwards.
	Reverse bool
	// Sorted lists a named cache's keys in SQLite's sort order (python's
	// iterkeys) instead of insertion order; the server's cache has none.
	Sorted bool
	// Limit is how many keys a page looks at (0: the server's default).
	Limit int
}

// Keys yields the cache's keys a page per request (GET .../keys),
// expired ones not yet removed included: the server's cache database by
// database and, on several shards, shard by shard (any shard goes through
// all of them); a named cache in insertion or sorted order. Keys there all
// along are listed, those of a shard's database once, and as with Redis's
// SCAN a key that moves between shards meanwhile may come twice; keys set
// or removed meanwhile may be listed or not. A listing of the server's
// cache that outlives a change of topology starts again from the start by
// itself (its keys come again), up to maxListingRestarts times.
func (cc *Cache) Keys(ctx context.Context, opts KeysOptions) iter.Seq2[kv.Key, error] {
	return func(yield func(kv.Key, error) bool) {
		q := url.Values{"reverse": {strconv.FormatBool(opts.Reverse)}}
		if opts.Match != "" {
			q.Set("match", opts.Match)
		}
		if opts.Sorted {
			q.Set("order", "sorted")
		}
		if opts.Limit > 0 {
			q.Set("limit", strconv.Itoa(opts.Limit))
		}
		for restarts := 0; ; {
			keys, next, err := cc.keysPage(ctx, q)
			var e *Error
			if errors.As(err, &e) && e.Code == wire.CodeListingRestart && restarts < maxListingRestarts {
				restarts++
				q.Del("cursor")
				continue
			}
			if err != nil {
				yield(kv.Key{}, err)
				return
			}
			for _, k := range keys {
				if !yield(k, nil) {
					return
				}
			}
			if next == "" {
				return
			}
			q.Set("cursor", next)
		}
	}
}

// maxListingRestarts bounds how often one listing starts again: a change
// of shard count makes two topology changes (the move and its end).
const maxListingRestarts = 8

func (cc *Cache) keysPage(ctx context.Context, q url.Values) ([]kv.Key, string, error) {
	resp, err := cc.c.do(ctx, request{method: http.MethodGet, path: cc.prefix + "/keys", query: q, idempotent: true})
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	var keys []kv.Key
	rr := wire.NewRecordReader(resp.Body)
	for {
		rec, _, err := rr.Next()
		if errors.Is(err, io.EOF) {
			return keys, resp.Header.Get(wire.HeaderNextCursor), nil
		}
		if err != nil {
			return nil, "", fmt.Errorf("client: key listing: %w", err)
		}
		k, err := wire.KeyFromJSON(wire.EncodeKeyJSON{Key: rec.Key, Kind: rec.Kind})
		if err != nil {
			return nil, "", fmt.Errorf("client: key listing: %w", err)
		}
		keys = append(keys, k)
	}
}

// errNoQueues: the server's cache is python-diskcache's FanoutCache, which
// has no queues.
var errNoQueues = errors.New("client: the server's cache has no queues (python-diskcache's FanoutCache has none): use a named cache")

func (cc *Cache) queue() (queue, error) {
	if cc.prefix == "/v1" {
		return queue{}, errNoQueues
	}
	return queue{cc.c, cc.prefix}, nil
}

// Push adds value to the queue named prefix of a named cache (integer keys
// when prefix is empty, else "<prefix>-%015d" text keys) at side (empty:
// back), with opts' expiry and tag, and returns the new key:
// python-diskcache's Cache.push.
func (cc *Cache) Push(ctx context.Context, value kv.Value, prefix string, side Side, opts kv.SetOptions) (kv.Key, error) {
	qu, err := cc.queue()
	if err != nil {
		return kv.Key{}, err
	}
	return qu.push(ctx, value, prefix, side, opts)
}

// Pull removes and returns the item at side (empty: front) of the queue
// named prefix, expired items there removed on the way; ErrEmpty when it
// is empty: python-diskcache's Cache.pull.
func (cc *Cache) Pull(ctx context.Context, prefix string, side Side) (Item, error) {
	return cc.take(ctx, http.MethodPost, "/pull", queueQuery(prefix, side))
}

// Peek is Pull without removing the item: python-diskcache's Cache.peek.
func (cc *Cache) Peek(ctx context.Context, prefix string, side Side) (Item, error) {
	return cc.take(ctx, http.MethodGet, "/peek", queueQuery(prefix, side))
}

// PeekItem returns the last item in insertion order (the first when last
// is false); ErrEmpty when the cache is empty: python-diskcache's
// Cache.peekitem.
func (cc *Cache) PeekItem(ctx context.Context, last bool) (Item, error) {
	return cc.take(ctx, http.MethodGet, "/peekitem", url.Values{"last": {strconv.FormatBool(last)}})
}

func (cc *Cache) take(ctx context.Context, method, op string, q url.Values) (Item, error) {
	qu, err := cc.queue()
	if err != nil {
		return Item{}, err
	}
	return qu.itemWithKey(ctx, method, op, q)
}
