package cacheserver

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// maxBatchKeys bounds the keys of one batch request.
const maxBatchKeys = 10000

// BatchKeys is the JSON body of batch get and delete.
type BatchKeys struct {
	Keys []wire.EncodeKeyJSON `json:"keys"`
}

// maxBatchKeysBody bounds the JSON of a batch get or delete. 10,000 keys
// of the largest size would be over 800 MB, which no client needs in one
// request and a shard should not hold: longer key lists go in several.
const maxBatchKeysBody = 64 << 20

// batchKeyJSON is one entry of a batch's "keys" as a request is read: the
// pointer tells a missing "key" (an entry null or {}) from the empty key.
type batchKeyJSON struct {
	Key  *string `json:"key"`
	Kind string  `json:"kt"`
}

// batchKeys reads a batch get's or delete's {"keys": [...]}. It decodes the
// list one entry at a time and stops at the 10,001st, so that what it holds
// is bounded by the keys it accepts, not by the body (a body of millions of
// tiny entries took a gigabyte decoded whole).
func (s *Server) batchKeys(w http.ResponseWriter, r *http.Request) ([]kv.Key, error) {
	limit := min(maxBatchKeys*(s.cfg.MaxKeyBytes*4/3+64), maxBatchKeysBody)
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	var keys []kv.Key
	bad := func(err error) error { return jsonBodyError(err, limit) }
	if err := expectDelim(dec, '{'); err != nil {
		return nil, bad(err)
	}
	for dec.More() {
		name, err := dec.Token()
		if err != nil {
			return nil, bad(err)
		}
		if name != "keys" {
			return nil, badRequest(wire.CodeBadRequest, "request body is not the expected JSON: unknown field %q", name)
		}
		if tok, err := dec.Token(); err != nil {
			return nil, bad(err)
		} else if tok == nil {
			continue // "keys": null, as the whole decode read it
		} else if tok != json.Delim('[') {
			return nil, badRequest(wire.CodeBadRequest, "request body is not the expected JSON: \"keys\" is not a list")
		}
		for dec.More() {
			if len(keys) == maxBatchKeys {
				return nil, badRequest(wire.CodeBadRequest, "more than %d keys in one batch; the limit is %d", maxBatchKeys, maxBatchKeys)
			}
			var j *batchKeyJSON
			if err := dec.Decode(&j); err != nil {
				return nil, bad(err)
			}
			i := len(keys)
			if j == nil || j.Key == nil {
				return nil, badRequest(wire.CodeBadKey, "keys[%d] has no \"key\"", i)
			}
			k, err := wire.KeyFromJSON(wire.EncodeKeyJSON{Key: *j.Key, Kind: j.Kind})
			if err != nil {
				return nil, badRequest(wire.CodeBadKey, "keys[%d]: %v", i, err)
			}
			if raw, _ := wire.FormatKey(k); int64(len(raw)) > s.cfg.MaxKeyBytes {
				return nil, badRequest(wire.CodeKeyTooLarge, "keys[%d] is %d bytes; the limit is %d", i, len(raw), s.cfg.MaxKeyBytes)
			}
			keys = append(keys, k)
		}
		if err := expectDelim(dec, ']'); err != nil {
			return nil, bad(err)
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, bad(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, badRequest(wire.CodeBadRequest, "request body has data after the JSON value")
	}
	if keys == nil {
		keys = []kv.Key{}
	}
	return keys, nil
}

// expectDelim reads the next token, which must be d.
func expectDelim(dec *json.Decoder, d json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != d {
		return fmt.Errorf("expected %v, found %v", d, tok)
	}
	return nil
}

// itemRecord is the record header of an item in a response.
func itemRecord(it engine.Item) wire.Record {
	kj := wire.KeyToJSON(it.Key)
	rec := wire.Record{Key: kj.Key, Kind: kj.Kind, Type: it.Value.Type.String()}
	if it.ExpireTime != 0 {
		exp := it.ExpireTime
		rec.ExpireTime = &exp
	}
	if !it.Tag.IsNone() {
		tj := wire.KeyToJSON(it.Tag)
		rec.Tag, rec.TagKind = &tj.Key, tj.Kind
	}
	return rec
}

// writeItemRecord writes an item as a record, streaming file-backed values.
func writeItemRecord(rw *wire.RecordWriter, rec wire.Record, it engine.Item) error {
	defer it.Close()
	if it.Body != nil {
		rec.Len = it.Size
		return rw.WriteFrom(rec, it.Body)
	}
	switch it.Value.Type {
	case kv.ValueInt, kv.ValueFloat:
		return rw.Write(rec, []byte(wire.FormatNumber(it.Value)))
	}
	return rw.Write(rec, it.Value.Data)
}

// handleBatchGet answers a record per requested key, in request order;
// missing keys have "found": false.
func (s *Server) handleBatchGet(w http.ResponseWriter, r *http.Request) error {
	st, err := s.store(r)
	if err != nil {
		return err
	}
	keys, err := s.batchKeys(w, r)
	if err != nil {
		return err
	}
	// Every key is claimed (pulled from its previous owner during a move)
	// before the first record goes out: a pull that fails is then a clean
	// error answer, not a stream cut short, which a client takes for a
	// shard that went away.
	for _, k := range keys {
		if _, err := s.claimBatchKey(r, k, accessRead); err != nil {
			return err
		}
	}
	w.Header().Set("Content-Type", wire.RecordsContentType)
	rw := wire.NewRecordWriter(w)
	for _, k := range keys {
		it, ok, err := st.Get(r.Context(), k, engine.GetOptions{Stream: true})
		if err != nil {
			return err
		}
		s.metrics.lookup(ok)
		if !ok {
			kj := wire.KeyToJSON(k)
			found := false
			if err := rw.Write(wire.Record{Key: kj.Key, Kind: kj.Kind, Found: &found}, nil); err != nil {
				return err
			}
			continue
		}
		it.Key = k
		if err := writeItemRecord(rw, itemRecord(it), it); err != nil {
			return err
		}
	}
	return nil
}

// BatchSetResult is the body answering batch set.
type BatchSetResult struct {
	Stored int              `json:"stored"`
	Failed []BatchSetFailed `json:"failed"`
}

// BatchSetFailed names a record batch set did not store and why.
type BatchSetFailed struct {
	Index   int    `json:"index"`
	Key     string `json:"key"`
	Kind    string `json:"kt,omitempty"`
	Error   string `json:"error"`
	Message string `json:"message"`
}

// handleBatchSet stores every record of the body. A record that cannot be
// stored (bad type, bad number, timeout) is reported in "failed" and the
// others are still stored; a malformed stream is a 400 and stops there
// (records before it are stored and counted).
func (s *Server) handleBatchSet(w http.ResponseWriter, r *http.Request) error {
	st, err := s.store(r)
	if err != nil {
		return err
	}
	threshold := st.Settings().DiskMinFileSize
	rr := wire.NewRecordReader(r.Body)
	res := BatchSetResult{Failed: []BatchSetFailed{}}
	for i := 0; ; i++ {
		rec, body, err := rr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return badRequest(wire.CodeBadRequest, "record %d: %v (%d records stored before it)", i, err, res.Stored)
		}
		if i >= maxBatchKeys {
			return badRequest(wire.CodeBadRequest, "more than %d records in one batch (%d records stored before it)", maxBatchKeys, res.Stored)
		}
		fail := func(err error) {
			_, code, msg := s.classify(err)
			res.Failed = append(res.Failed, BatchSetFailed{Index: i, Key: rec.Key, Kind: rec.Kind, Error: code, Message: msg})
		}
		key, value, opts, err := s.recordToSet(rec, body, threshold)
		if err != nil {
			fail(err)
			continue
		}
		stored, err := s.claimBatchKey(r, key, accessWrite)
		if err != nil {
			return err
		}
		if err := st.Set(r.Context(), key, value, opts); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return badRequest(wire.CodeBadRequest, "record %d: value shorter than its len (%d records stored before it)", i, res.Stored)
			}
			var ae *apiError
			if errors.As(unwrapBodyError(err), &ae) || errors.Is(err, kv.ErrTimeout) || isClientError(err) {
				fail(unwrapBodyError(err))
				continue
			}
			return err
		}
		if stored != nil {
			stored(r.Context())
		}
		res.Stored++
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func isClientError(err error) bool {
	for _, e := range []error{kv.ErrInvalidKey, kv.ErrInvalidValue, kv.ErrTooLarge, kv.ErrFull} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// recordToSet turns a batch set record into Set arguments. Values of at
// least disk_min_file_size bytes stream from the request into a file.
func (s *Server) recordToSet(rec wire.Record, body io.Reader, threshold int64) (kv.Key, kv.Value, kv.SetOptions, error) {
	var opts kv.SetOptions
	if !rec.Keyed {
		return kv.Key{}, kv.Value{}, opts, badRequest(wire.CodeBadKey, "the record has no \"key\"")
	}
	key, err := wire.KeyFromJSON(wire.EncodeKeyJSON{Key: rec.Key, Kind: rec.Kind})
	if err != nil {
		return key, kv.Value{}, opts, badRequest(wire.CodeBadKey, "%v", err)
	}
	if raw, _ := wire.FormatKey(key); int64(len(raw)) > s.cfg.MaxKeyBytes {
		return key, kv.Value{}, opts, badRequest(wire.CodeKeyTooLarge, "key is %d bytes; the limit is %d", len(raw), s.cfg.MaxKeyBytes)
	}
	if rec.Len > s.cfg.MaxValueBytes {
		return key, kv.Value{}, opts, &http.MaxBytesError{Limit: s.cfg.MaxValueBytes}
	}
	vt := kv.ValueBytes
	if rec.Type != "" {
		if vt, err = kv.ParseValueType(rec.Type); err != nil {
			return key, kv.Value{}, opts, badRequest(wire.CodeBadValue, "unknown value type %q", rec.Type)
		}
	}
	if rec.Expire != nil {
		opts.Expire = kv.ExpireAfterSeconds(*rec.Expire)
	}
	if rec.Tag != nil {
		tag := *rec.Tag
		if rec.TagKind == "bytes" {
			b, err := base64.StdEncoding.DecodeString(tag)
			if err != nil {
				return key, kv.Value{}, opts, badRequest(wire.CodeBadRequest, "bytes tag is not base64")
			}
			tag = string(b)
		}
		if opts.Tag, err = parseStoredTag(tag, rec.TagKind); err != nil {
			return key, kv.Value{}, opts, err
		}
	}
	switch {
	case vt == kv.ValueInt || vt == kv.ValueFloat:
		if rec.Len > maxNumberBytes {
			return key, kv.Value{}, opts, badRequest(wire.CodeBadValue, "%s value of %d bytes", vt, rec.Len)
		}
		b, err := io.ReadAll(body)
		if err != nil {
			return key, kv.Value{}, opts, err
		}
		v, err := parseNumberOfType(string(b), vt)
		return key, v, opts, err
	case rec.Len < threshold:
		b, err := io.ReadAll(body)
		if err != nil {
			return key, kv.Value{}, opts, fmt.Errorf("read record value: %w", err)
		}
		return key, kv.Value{Type: vt, Data: b}, opts, nil
	}
	opts.Body = body
	return key, kv.Value{Type: vt}, opts, nil
}

// handleBatchDelete deletes every key; "deleted" says, per key in request
// order, whether it had a live item.
func (s *Server) handleBatchDelete(w http.ResponseWriter, r *http.Request) error {
	st, err := s.store(r)
	if err != nil {
		return err
	}
	keys, err := s.batchKeys(w, r)
	if err != nil {
		return err
	}
	deleted := make([]bool, len(keys))
	count := 0
	for i, k := range keys {
		if _, err := s.claimBatchKey(r, k, accessRMW); err != nil {
			return err
		}
		ok, err := st.Delete(r.Context(), k)
		if err != nil {
			return err
		}
		deleted[i] = ok
		if ok {
			count++
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": deleted, "count": count})
	return nil
}
