package cacheserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// Listing bounds of GET /v1/deques/{name}/items and /v1/indexes/{name}/items.
const (
	defaultListLimit = 1000
	maxListLimit     = 10000
)

// dequeRoutes serves python-diskcache's Deque for every named deque of the
// FanoutCache (stored in deque/<name>).
func (s *Server) dequeRoutes() {
	const p = "/v1/deques/{name}"
	s.route("GET "+p, s.handleDequeLen)
	s.route("DELETE "+p, s.handleDrop("deque"))
	s.route("POST "+p+"/push", s.handleDequePush)
	s.route("POST "+p+"/pop", s.handleDequeTake(true))
	s.route("GET "+p+"/peek", s.handleDequeTake(false))
	s.route("GET "+p+"/items", s.handleDequeItems)
	s.route("POST "+p+"/items", s.handleDequeExtend)
	s.route("GET "+p+"/items/{index}", s.handleDequeAt)
	s.route("PUT "+p+"/items/{index}", s.handleDequeSetAt)
	s.route("DELETE "+p+"/items/{index}", s.handleDequeDeleteAt)
	s.route("POST "+p+"/rotate", s.handleDequeRotate)
	s.route("POST "+p+"/reverse", s.handleDequeReverse)
	s.route("POST "+p+"/remove", s.handleDequeRemove)
	s.route("POST "+p+"/count", s.handleDequeCount)
}

// deque resolves {name}. The server never gives a deque a maxlen of its
// own: python-diskcache does not store it, so each push says it.
func (s *Server) deque(r *http.Request) (*engine.Deque, error) {
	open := func(ctx context.Context, name string) (*engine.Deque, error) { return s.cache.Deque(ctx, name, 0) }
	if findsNothingToDo(r) {
		open = s.cache.DequeIfExists // a read or a pop creates no deque
	}
	d, err := open(r.Context(), r.PathValue("name"))
	if errors.Is(err, kv.ErrInvalidName) {
		return nil, badRequest(wire.CodeBadName, "%v", err)
	}
	return d, err
}

// intParam reads an integer query parameter within [lo, hi]; def when absent.
func intParam(r *http.Request, name string, def, lo, hi int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, badRequest(wire.CodeBadRequest, "%s=%q is not an integer", name, v)
	}
	if n < lo || n > hi {
		return 0, badRequest(wire.CodeBadRequest, "%s=%d is out of range [%d, %d]", name, n, lo, hi)
	}
	return n, nil
}

// boolParam reads a boolean query parameter; def when absent.
func boolParam(r *http.Request, name string, def bool) (bool, error) {
	v := r.URL.Query().Get(name)
	b, err := parseBool(v, def)
	if err != nil {
		return false, badRequest(wire.CodeBadRequest, "%s=%q is not a boolean (1, t, true, yes, on; 0, f, false, no, off)", name, v)
	}
	return b, nil
}

// sideParam reads ?side=back|front; def when absent.
func sideParam(r *http.Request, def engine.Side) (engine.Side, error) {
	v := r.URL.Query().Get("side")
	if v == "" {
		return def, nil
	}
	side, err := engine.ParseSide(v)
	if err != nil {
		return 0, badRequest(wire.CodeBadRequest, "side=%q: want back or front", v)
	}
	return side, nil
}

// maxlenParam reads ?maxlen=N (N ≥ 0; 0 keeps the deque empty, as
// python's maxlen=0); -1, the deque's own unbounded maxlen, when absent.
func maxlenParam(r *http.Request) (int, error) {
	n, err := intParam(r, "maxlen", -1, 0, math.MaxInt32)
	return int(n), err
}

// outOfRange turns the engine's IndexError into a 404.
func outOfRange(err error) error {
	if errors.Is(err, kv.ErrIndexOutOfRange) {
		return notFound(wire.CodeIndexOutOfRange, "%v", err)
	}
	return err
}

// bodyError maps the errors of reading a streamed request body.
func bodyError(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return badRequest(wire.CodeBadRequest, "request body ended early: %v", err)
	}
	return unwrapBodyError(err)
}

func (s *Server) handleDequeLen(w http.ResponseWriter, r *http.Request) error {
	d, err := s.deque(r)
	if err != nil {
		return err
	}
	n, err := d.Len(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int64{"len": n})
	return nil
}

// dequeAddParams resolves the deque, ?side= (default back) and ?maxlen= of
// push and extend.
func (s *Server) dequeAddParams(r *http.Request) (*engine.Deque, engine.Side, int, error) {
	d, err := s.deque(r)
	if err != nil {
		return nil, 0, 0, err
	}
	side, err := sideParam(r, engine.Back)
	if err != nil {
		return nil, 0, 0, err
	}
	maxlen, err := maxlenParam(r)
	return d, side, maxlen, err
}

// handleDequePush is append (side=back, the default) and appendleft, with
// the trimming of ?maxlen= in the same transaction.
func (s *Server) handleDequePush(w http.ResponseWriter, r *http.Request) error {
	d, side, maxlen, err := s.dequeAddParams(r)
	if err != nil {
		return err
	}
	v, opts, err := s.readValue(w, r, d.Cache(), kv.SetOptions{})
	if err != nil {
		return err
	}
	one := func(yield func(engine.DequeValue, error) bool) {
		yield(engine.DequeValue{Value: v, Body: opts.Body}, nil)
	}
	n, err := d.PushAll(r.Context(), side, maxlen, one)
	if err != nil {
		return bodyError(err)
	}
	writeJSON(w, http.StatusOK, map[string]int64{"len": n})
	return nil
}

// handleDequeTake serves pop (remove) and peek at ?side= (default back, as
// python's pop; front is popleft and peekleft).
func (s *Server) handleDequeTake(remove bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		d, err := s.deque(r)
		if err != nil {
			return err
		}
		side, err := sideParam(r, engine.Back)
		if err != nil {
			return err
		}
		q, opts := engine.QueueOptions{Side: side}, engine.GetOptions{Stream: true}
		var it engine.Item
		var ok bool
		if remove {
			it, ok, err = d.Cache().Pull(r.Context(), q, opts)
		} else {
			it, ok, err = d.Cache().Peek(r.Context(), q, opts)
		}
		if err != nil {
			return err
		}
		if !ok {
			return notFound(wire.CodeEmpty, "deque %q is empty", r.PathValue("name"))
		}
		writeItem(w, r, it, false)
		return nil
	}
}

// handleDequeItems lists the items as a record stream, each with its
// position ("index", 0 at the front) and the deque's internal key.
func (s *Server) handleDequeItems(w http.ResponseWriter, r *http.Request) error {
	d, err := s.deque(r)
	if err != nil {
		return err
	}
	reverse, err := boolParam(r, "reverse", false)
	if err != nil {
		return err
	}
	offset, err := intParam(r, "offset", 0, 0, math.MaxInt64)
	if err != nil {
		return err
	}
	limit, err := intParam(r, "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return err
	}
	total, err := d.Len(r.Context())
	if err != nil {
		return err
	}
	w.Header().Set(wire.HeaderTotal, strconv.FormatInt(total, 10))
	w.Header().Set("Content-Type", wire.RecordsContentType)
	rw := wire.NewRecordWriter(w)
	pos := offset
	for it, err := range d.Scan(r.Context(), reverse, offset) {
		if err != nil {
			return err
		}
		index := pos
		if reverse {
			index = total - 1 - pos
		}
		rec := itemRecord(it)
		rec.Index = &index
		if err := writeItemRecord(rw, rec, it); err != nil {
			return err
		}
		if pos++; pos-offset >= limit {
			break
		}
	}
	return nil
}

// handleDequeExtend is extend (side=back, the default) and extendleft: the
// body is a record stream of values (keys are ignored), added in one
// transaction with the trimming of ?maxlen=. A bad record adds nothing.
func (s *Server) handleDequeExtend(w http.ResponseWriter, r *http.Request) error {
	d, side, maxlen, err := s.dequeAddParams(r)
	if err != nil {
		return err
	}
	threshold := d.Cache().Settings().DiskMinFileSize
	rr := wire.NewRecordReader(r.Body)
	values := func(yield func(engine.DequeValue, error) bool) {
		for i := 0; ; i++ {
			rec, body, err := rr.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				yield(engine.DequeValue{}, badRequest(wire.CodeBadRequest, "record %d: %v (nothing was added)", i, err))
				return
			}
			if i >= maxBatchKeys {
				yield(engine.DequeValue{}, badRequest(wire.CodeBadRequest, "more than %d records in one request (nothing was added)", maxBatchKeys))
				return
			}
			if rec.Expire != nil || rec.Tag != nil {
				// A deque's items have neither (python-diskcache's Deque).
				yield(engine.DequeValue{}, badRequest(wire.CodeBadRequest, "record %d: a deque item takes no expire or tag (nothing was added)", i))
				return
			}
			v, err := s.recordValue(rec, body, threshold)
			if err != nil {
				yield(engine.DequeValue{}, err)
				return
			}
			if !yield(v, nil) {
				return
			}
		}
	}
	n, err := d.PushAll(r.Context(), side, maxlen, values)
	if err != nil {
		return bodyError(err)
	}
	writeJSON(w, http.StatusOK, map[string]int64{"len": n})
	return nil
}

// recordValue reads the value of a record: small ones into memory, the
// others left to stream from the body into a value file.
func (s *Server) recordValue(rec wire.Record, body io.Reader, threshold int64) (engine.DequeValue, error) {
	if rec.Len > s.cfg.MaxValueBytes {
		return engine.DequeValue{}, &http.MaxBytesError{Limit: s.cfg.MaxValueBytes}
	}
	vt := kv.ValueBytes
	if rec.Type != "" {
		var err error
		if vt, err = kv.ParseValueType(rec.Type); err != nil {
			return engine.DequeValue{}, badRequest(wire.CodeBadValue, "unknown value type %q", rec.Type)
		}
	}
	switch {
	case vt == kv.ValueInt || vt == kv.ValueFloat:
		if rec.Len > 64 {
			return engine.DequeValue{}, badRequest(wire.CodeBadValue, "%s value of %d bytes", vt, rec.Len)
		}
		b, err := io.ReadAll(body)
		if err != nil {
			return engine.DequeValue{}, bodyError(err)
		}
		v, err := parseNumberOfType(string(b), vt)
		return engine.DequeValue{Value: v}, err
	case rec.Len < threshold:
		b, err := io.ReadAll(body)
		if err != nil {
			return engine.DequeValue{}, bodyError(err)
		}
		return engine.DequeValue{Value: kv.Value{Type: vt, Data: b}}, nil
	}
	return engine.DequeValue{Value: kv.Value{Type: vt}, Body: body}, nil
}

// indexParam reads the {index} path segment (negative counts from the back).
func indexParam(r *http.Request) (int, error) {
	v := r.PathValue("index")
	i, err := strconv.ParseInt(v, 10, 32)
	if errors.Is(err, strconv.ErrRange) {
		// An integer no deque reaches (python-diskcache: IndexError).
		return 0, outOfRange(fmt.Errorf("deque index %s: %w", v, kv.ErrIndexOutOfRange))
	}
	if err != nil {
		return 0, badRequest(wire.CodeBadRequest, "deque index %q is not an integer", v)
	}
	return int(i), nil
}

func (s *Server) handleDequeAt(w http.ResponseWriter, r *http.Request) error {
	d, err := s.deque(r)
	if err != nil {
		return err
	}
	i, err := indexParam(r)
	if err != nil {
		return err
	}
	it, err := d.ItemAt(r.Context(), i, engine.GetOptions{Stream: true})
	if err != nil {
		return outOfRange(err)
	}
	writeItem(w, r, it, false)
	return nil
}

func (s *Server) handleDequeSetAt(w http.ResponseWriter, r *http.Request) error {
	d, err := s.deque(r)
	if err != nil {
		return err
	}
	i, err := indexParam(r)
	if err != nil {
		return err
	}
	v, opts, err := s.readValue(w, r, d.Cache(), kv.SetOptions{})
	if err != nil {
		return err
	}
	if err := d.SetAtWith(r.Context(), i, v, opts); err != nil {
		return outOfRange(bodyError(err))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleDequeDeleteAt(w http.ResponseWriter, r *http.Request) error {
	d, err := s.deque(r)
	if err != nil {
		return err
	}
	i, err := indexParam(r)
	if err != nil {
		return err
	}
	if err := d.DeleteAt(r.Context(), i); err != nil {
		return outOfRange(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleDequeRotate rotates ?steps= (default 1, python's) to the right;
// negative steps rotate left.
func (s *Server) handleDequeRotate(w http.ResponseWriter, r *http.Request) error {
	d, err := s.deque(r)
	if err != nil {
		return err
	}
	steps, err := intParam(r, "steps", 1, math.MinInt32, math.MaxInt32)
	if err != nil {
		return err
	}
	if err := d.Rotate(r.Context(), int(steps)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleDequeReverse(w http.ResponseWriter, r *http.Request) error {
	d, err := s.deque(r)
	if err != nil {
		return err
	}
	if err := d.Reverse(r.Context()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// maxCompareBytes bounds the value remove and count compare the items
// with, which is held in memory (--max-value-bytes, 1 TiB by default, let
// one request take the shard's memory).
const maxCompareBytes = 64 << 20

// wholeValue reads the request body as a value held in memory, for the
// comparisons of remove and count.
func (s *Server) wholeValue(w http.ResponseWriter, r *http.Request, d *engine.Deque) (kv.Value, error) {
	if r.ContentLength > maxCompareBytes {
		return kv.Value{}, compareTooLarge()
	}
	v, opts, err := s.readValue(w, r, d.Cache(), kv.SetOptions{})
	if err != nil || opts.Body == nil {
		return v, err
	}
	b, err := io.ReadAll(io.LimitReader(opts.Body, maxCompareBytes+1))
	if err != nil {
		return kv.Value{}, bodyError(err)
	}
	if len(b) > maxCompareBytes {
		return kv.Value{}, compareTooLarge()
	}
	v.Data = b
	if v.Type == kv.ValueText && !utf8.Valid(b) {
		return kv.Value{}, badRequest(wire.CodeBadValue, "text value is not valid UTF-8")
	}
	return v, nil
}

func compareTooLarge() error {
	return &apiError{status: http.StatusRequestEntityTooLarge, code: wire.CodeValueTooLarge,
		msg: fmt.Sprintf("remove and count compare values of up to %d bytes", maxCompareBytes)}
}

// handleDequeRemove removes the first item equal to the body (python's
// equality: 1 == 1.0) and says whether there was one.
func (s *Server) handleDequeRemove(w http.ResponseWriter, r *http.Request) error {
	d, err := s.deque(r)
	if err != nil {
		return err
	}
	v, err := s.wholeValue(w, r, d)
	if err != nil {
		return err
	}
	err = d.Remove(r.Context(), v)
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"removed": err == nil})
	return nil
}

func (s *Server) handleDequeCount(w http.ResponseWriter, r *http.Request) error {
	d, err := s.deque(r)
	if err != nil {
		return err
	}
	v, err := s.wholeValue(w, r, d)
	if err != nil {
		return err
	}
	n, err := d.Count(r.Context(), v)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int64{"count": n})
	return nil
}
