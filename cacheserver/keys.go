package cacheserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// pathKey reads the {key} path segment and its kind (?kt=).
func (s *Server) pathKey(r *http.Request) (kv.Key, error) {
	q := query(r)
	raw, err := wire.DecodeKeySegment(r.PathValue("key"), q.Get(wire.ParamKeyEncoding))
	if err != nil {
		return kv.Key{}, badRequest(wire.CodeBadKey, "%v", err)
	}
	if int64(len(raw)) > s.cfg.MaxKeyBytes {
		return kv.Key{}, badRequest(wire.CodeKeyTooLarge, "key is %d bytes; the limit is %d", len(raw), s.cfg.MaxKeyBytes)
	}
	k, err := wire.ParseKey(raw, q.Get(wire.ParamKeyType))
	if err != nil {
		return kv.Key{}, badRequest(wire.CodeBadKey, "%v", err)
	}
	return k, nil
}

// query parses the request's query string; most key requests have none,
// and then nothing is allocated (Get on the nil Values answers "").
func query(r *http.Request) url.Values {
	if r.URL.RawQuery == "" {
		return nil
	}
	return r.URL.Query()
}

// storeKey resolves the store and the {key} of a key route.
func (s *Server) storeKey(r *http.Request) (Store, kv.Key, error) {
	st, err := s.store(r)
	if err != nil {
		return nil, kv.Key{}, err
	}
	key, err := s.pathKey(r)
	return st, key, err
}

// setOptions reads ?expire= and ?tag=&tt=.
func setOptions(r *http.Request) (kv.SetOptions, error) {
	q := query(r)
	exp, err := wire.ParseExpire(q.Get(wire.ParamExpire))
	if err != nil {
		return kv.SetOptions{}, badRequest(wire.CodeBadRequest, "%v", err)
	}
	opts := kv.SetOptions{Expire: exp}
	if q.Has(wire.ParamTag) {
		if opts.Tag, err = parseStoredTag(q.Get(wire.ParamTag), q.Get(wire.ParamTagType)); err != nil {
			return kv.SetOptions{}, err
		}
	}
	return opts, nil
}

// parseStoredTag reads a tag to store with an item: at most
// wire.MaxTagBytes. (Evict takes tags of any length, so tags stored before
// the limit can still be evicted.)
func parseStoredTag(raw, kind string) (kv.Key, error) {
	if len(raw) > wire.MaxTagBytes {
		return kv.Key{}, &apiError{status: http.StatusBadRequest, code: wire.CodeTagTooLarge,
			msg: fmt.Sprintf("tag is %d bytes; the limit is %d", len(raw), wire.MaxTagBytes)}
	}
	tag, err := wire.ParseTag(raw, kind)
	if err != nil {
		return kv.Key{}, badRequest(wire.CodeBadRequest, "tag: %v", err)
	}
	return tag, nil
}

// valueType reads the Diskcache-Value-Type header (default bytes).
func valueType(h http.Header) (kv.ValueType, error) {
	t := h.Get(wire.HeaderValueType)
	if t == "" {
		return kv.ValueBytes, nil
	}
	vt, err := kv.ParseValueType(t)
	if err != nil {
		return 0, badRequest(wire.CodeBadValue, "unknown value type %q in %s (want bytes, text, int, float or pickle)", t, wire.HeaderValueType)
	}
	return vt, nil
}

// readValue reads the request body as a value. Bodies of at least
// disk_min_file_size bytes, or of unknown length, are not read here: the
// returned SetOptions.Body streams them into a value file.
func (s *Server) readValue(w http.ResponseWriter, r *http.Request, st Store, opts kv.SetOptions) (kv.Value, kv.SetOptions, error) {
	vt, err := valueType(r.Header)
	if err != nil {
		return kv.Value{}, opts, err
	}
	if r.ContentLength > s.cfg.MaxValueBytes {
		return kv.Value{}, opts, &http.MaxBytesError{Limit: s.cfg.MaxValueBytes}
	}
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxValueBytes)
	switch vt {
	case kv.ValueInt, kv.ValueFloat:
		b, err := io.ReadAll(io.LimitReader(body, maxNumberBytes+1))
		if err != nil {
			return kv.Value{}, opts, err
		}
		if len(b) > maxNumberBytes {
			return kv.Value{}, opts, badRequest(wire.CodeBadValue, "%s value longer than %d bytes", vt, maxNumberBytes)
		}
		n, err := parseNumberOfType(string(b), vt)
		return n, opts, err
	}
	threshold := st.Settings().DiskMinFileSize
	if r.ContentLength >= 0 && r.ContentLength < threshold {
		var b []byte
		if fb, ok := r.Body.(*frameBody); ok {
			b = fb.take() // already in memory, its own copy; its length checked above
		} else if b, err = io.ReadAll(body); err != nil {
			return kv.Value{}, opts, err
		}
		if vt == kv.ValueText && !utf8.Valid(b) {
			return kv.Value{}, opts, badRequest(wire.CodeBadValue, "text value is not valid UTF-8")
		}
		return kv.Value{Type: vt, Data: b}, opts, nil
	}
	opts.Body = body // the engine checks streamed text is UTF-8
	return kv.Value{Type: vt}, opts, nil
}

// maxNumberBytes bounds the body of an int or float value: enough for any
// float64 written out in full.
const maxNumberBytes = 400

func parseNumberOfType(s string, vt kv.ValueType) (kv.Value, error) {
	if vt == kv.ValueFloat {
		f, err := parseFloatNumber(s)
		if err != nil {
			return kv.Value{}, badRequest(wire.CodeBadValue, "%s value: %v", vt, err)
		}
		return kv.Float(f), nil
	}
	n, err := wire.ParseNumber(s)
	if err != nil {
		return kv.Value{}, badRequest(wire.CodeBadValue, "%s value: %v", vt, err)
	}
	if vt == kv.ValueInt && n.Type != kv.ValueInt {
		return kv.Value{}, badRequest(wire.CodeBadValue, "int value %q is not a 64-bit integer", s)
	}
	return n, nil
}

// parseFloatNumber reads a number as a float: an int, a float, or an
// integer too long for 64 bits (which ParseNumber refuses as an int: "1"
// and 20 zeros is a fine float).
func parseFloatNumber(s string) (float64, error) {
	n, err := wire.ParseNumber(s)
	switch {
	case errors.Is(err, kv.ErrOverflow):
		return strconv.ParseFloat(strings.TrimSpace(s), 64)
	case err != nil:
		return 0, err
	case n.Type == kv.ValueInt:
		return float64(n.Int), nil
	}
	return n.Float, nil
}

// writeItem answers with an item: the value as the body, its type, expiry
// and tag in headers. File-backed values are streamed from their file.
func writeItem(w http.ResponseWriter, r *http.Request, it engine.Item, withKey bool) {
	defer it.Close()
	h := w.Header()
	if t := int(it.Value.Type); t < len(typeHeaders) {
		h[wire.HeaderValueType] = typeHeaders[t].valueType
		h["Content-Type"] = typeHeaders[t].contentType
	} else {
		h.Set(wire.HeaderValueType, it.Value.Type.String())
		h.Set("Content-Type", contentType(it.Value.Type))
	}
	if it.ExpireTime != 0 {
		h.Set(wire.HeaderExpireTime, strconv.FormatFloat(it.ExpireTime, 'f', -1, 64))
	}
	if !it.Tag.IsNone() {
		raw, kind := wire.FormatKey(it.Tag)
		h.Set(wire.HeaderTag, wire.EscapeHeader(raw))
		h.Set(wire.HeaderTagType, kind)
	}
	if withKey {
		raw, kind := wire.FormatKey(it.Key)
		h.Set(wire.HeaderKey, wire.EscapeHeader(raw))
		h.Set(wire.HeaderKeyType, kind)
	}
	if it.Body != nil {
		h.Set("Content-Length", strconv.FormatInt(it.Size, 10))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = io.CopyN(w, it.Body, it.Size)
		}
		return
	}
	var body []byte
	switch it.Value.Type {
	case kv.ValueInt, kv.ValueFloat:
		body = []byte(wire.FormatNumber(it.Value))
	default:
		body = it.Value.Data
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// typeHeaders are the Diskcache-Value-Type and Content-Type header values
// of each value type, made once and put in answers' headers as they are:
// that spares two slices per answer. (Header values are never modified in
// place; Set replaces them, Add appends to a copy.)
var typeHeaders = func() (h [kv.ValuePickle + 1]struct{ valueType, contentType []string }) {
	for t := range h {
		h[t].valueType = []string{kv.ValueType(t).String()}
		h[t].contentType = []string{contentType(kv.ValueType(t))}
	}
	return h
}()

func contentType(t kv.ValueType) string {
	switch t {
	case kv.ValueText:
		return "text/plain; charset=utf-8"
	case kv.ValueInt, kv.ValueFloat:
		return "text/plain"
	case kv.ValuePickle:
		return "application/x-python-pickle"
	}
	return "application/octet-stream"
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) error {
	st, key, err := s.storeKey(r)
	if err != nil {
		return err
	}
	it, ok, err := st.Get(r.Context(), key, engine.GetOptions{Stream: true})
	if err != nil {
		return err
	}
	s.metrics.lookup(ok)
	if !ok {
		return notFound(wire.CodeNotFound, "key %s not found", key)
	}
	writeItem(w, r, it, false)
	return nil
}

func (s *Server) handleHead(w http.ResponseWriter, r *http.Request) error {
	st, key, err := s.storeKey(r)
	if err != nil {
		return err
	}
	ok, err := st.Contains(r.Context(), key)
	if err != nil {
		return err
	}
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) handleSet(w http.ResponseWriter, r *http.Request) error {
	st, key, err := s.storeKey(r)
	if err != nil {
		return err
	}
	opts, err := setOptions(r)
	if err != nil {
		return err
	}
	v, opts, err := s.readValue(w, r, st, opts)
	if err != nil {
		return err
	}
	if err := st.Set(r.Context(), key, v, opts); err != nil {
		return bodyError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleAdd(w http.ResponseWriter, r *http.Request) error {
	return s.conditionalSet(w, r, "added", Store.Add)
}

func (s *Server) handleReplace(w http.ResponseWriter, r *http.Request) error {
	return s.conditionalSet(w, r, "replaced", Store.Replace)
}

// conditionalSet serves a set that may not store (add, replace), answering
// {field: whether it stored}.
func (s *Server) conditionalSet(w http.ResponseWriter, r *http.Request, field string,
	set func(Store, context.Context, kv.Key, kv.Value, kv.SetOptions) (bool, error)) error {
	st, key, err := s.storeKey(r)
	if err != nil {
		return err
	}
	opts, err := setOptions(r)
	if err != nil {
		return err
	}
	v, opts, err := s.readValue(w, r, st, opts)
	if err != nil {
		return err
	}
	stored, err := set(st, r.Context(), key, v, opts)
	if err != nil {
		return bodyError(err)
	}
	writeJSON(w, http.StatusOK, map[string]bool{field: stored})
	return nil
}

func (s *Server) handleTouch(w http.ResponseWriter, r *http.Request) error {
	st, key, err := s.storeKey(r)
	if err != nil {
		return err
	}
	exp, err := wire.ParseExpire(r.URL.Query().Get(wire.ParamExpire))
	if err != nil {
		return badRequest(wire.CodeBadRequest, "%v", err)
	}
	ok, err := st.Touch(r.Context(), key, exp)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"touched": ok})
	return nil
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) error {
	st, key, err := s.storeKey(r)
	if err != nil {
		return err
	}
	ok, err := st.Delete(r.Context(), key)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"deleted": ok})
	return nil
}

func (s *Server) handlePop(w http.ResponseWriter, r *http.Request) error {
	st, key, err := s.storeKey(r)
	if err != nil {
		return err
	}
	it, ok, err := st.Pop(r.Context(), key, engine.GetOptions{Stream: true})
	if err != nil {
		return err
	}
	if !ok {
		return notFound(wire.CodeNotFound, "key %s not found", key)
	}
	writeItem(w, r, it, false)
	return nil
}

// handleIncr serves incr and decr: ?delta= (default 1, int or float) and
// ?default= (default 0; "none" makes a missing key a 404).
func (s *Server) handleIncr(decr bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		st, key, err := s.storeKey(r)
		if err != nil {
			return err
		}
		q := r.URL.Query()
		delta, def := kv.Int(1), kv.Int(0)
		if d := q.Get("delta"); d != "" {
			if delta, err = parseIncrNumber("delta", d); err != nil {
				return err
			}
		}
		if d := q.Get("default"); d == "none" {
			def = kv.Value{}
		} else if d != "" {
			if def, err = parseIncrNumber("default", d); err != nil {
				return err
			}
		}
		var v kv.Value
		if decr {
			v, err = st.Decr(r.Context(), key, delta, def)
		} else {
			v, err = st.Incr(r.Context(), key, delta, def)
		}
		if err != nil {
			return err
		}
		writeItem(w, r, engine.Item{Key: key, Value: v}, false)
		return nil
	}
}

// parseIncrNumber reads incr's delta or default: an integer beyond 64 bits
// is the documented 409 overflow (python-diskcache cannot store it in a row
// either), not a float that would lose its low digits.
func parseIncrNumber(name, s string) (kv.Value, error) {
	n, err := wire.ParseNumber(s)
	switch {
	case errors.Is(err, kv.ErrOverflow):
		return kv.Value{}, fmt.Errorf("%s: %w", name, err)
	case err != nil:
		return kv.Value{}, badRequest(wire.CodeBadRequest, "%s: %v", name, err)
	}
	return n, nil
}

// unwrapBodyError surfaces the size-limit error of a request body that the
// engine wrapped while streaming it to a file.
func unwrapBodyError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return mbe
	}
	return err
}

// jsonBodyError is the answer to a JSON body that failed to be read or
// decoded: 413 past limit, the client's failure to send it (a malformed
// chunk, a stall: 400, 408) as classify tells it, 400 otherwise.
func jsonBodyError(err error, limit int64) error {
	var mbe *http.MaxBytesError
	var cbe *clientBodyError
	switch {
	case errors.As(err, &mbe):
		return &apiError{status: http.StatusRequestEntityTooLarge, code: wire.CodeValueTooLarge, msg: fmt.Sprintf("request body larger than %d bytes", limit)}
	case errors.As(err, &cbe):
		return err
	}
	return badRequest(wire.CodeBadRequest, "request body is not the expected JSON: %v", err)
}

// decodeJSON reads a JSON request body into v, bounded in size.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonBodyError(err, limit)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest(wire.CodeBadRequest, "request body has data after the JSON value")
	}
	return nil
}
