package cacheserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// open sends r to shard i with the given body and returns its answer, whose
// body streams. This shard answers in-process, the others over HTTP; every
// sub-request is marked as forwarded and, with shardScope, as asking for
// the shard's own part of a cluster-wide operation.
func (s *Server) open(r *http.Request, a *topology.Announcement, i int, body io.Reader, length int64, shardScope bool) (*http.Response, error) {
	if i != s.cluster.self {
		return s.send(r, a, i, body, length, shardScope)
	}
	req := r.Clone(r.Context())
	req.Body = io.NopCloser(body)
	req.ContentLength = length
	req.Header.Set(wire.HeaderForwardedEpoch, strconv.FormatInt(a.Epoch, 10))
	if shardScope {
		req.Header.Set(wire.HeaderScope, "shard")
	}
	pr, pw := io.Pipe()
	pres := &pipeResponse{header: http.Header{}, w: pw, started: make(chan struct{})}
	go func() {
		defer func() {
			if p := recover(); p != nil {
				pw.CloseWithError(fmt.Errorf("shard %d: response aborted: %v", i, p))
			}
			pres.start(http.StatusOK)
			pw.Close()
		}()
		s.mux.ServeHTTP(pres, req)
	}()
	<-pres.started
	return &http.Response{StatusCode: pres.status, Header: pres.header, Body: pr}, nil
}

// pipeResponse is a ResponseWriter whose body is read from a pipe, for
// in-process sub-requests.
type pipeResponse struct {
	header  http.Header
	w       *io.PipeWriter
	status  int
	once    sync.Once
	started chan struct{}
}

func (p *pipeResponse) Header() http.Header { return p.header }

func (p *pipeResponse) start(status int) {
	p.once.Do(func() {
		p.status = status
		p.header = p.header.Clone() // the handler may not touch it once written
		close(p.started)
	})
}

func (p *pipeResponse) WriteHeader(status int) { p.start(status) }

func (p *pipeResponse) Write(b []byte) (int, error) {
	p.start(http.StatusOK)
	return p.w.Write(b)
}

func (p *pipeResponse) Flush() {}

// shardAnswer is one shard's answer to a cluster-wide operation.
type shardAnswer struct {
	Shard  int             `json:"shard"`
	Status int             `json:"status"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

func (a shardAnswer) ok() bool { return a.Status >= 200 && a.Status < 300 }

// callAll sends r with body to every shard in parallel and collects the
// (small, JSON) answers.
func (s *Server) callAll(r *http.Request, a *topology.Announcement, body []byte) []shardAnswer {
	out := make([]shardAnswer, len(a.Shards))
	parallel(len(a.Shards), func(i int) { out[i] = s.call(r, a, i, body, true) })
	return out
}

// parallel runs fn(0) … fn(n-1) at once and waits for them all.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}

func (s *Server) call(r *http.Request, a *topology.Announcement, i int, body []byte, shardScope bool) shardAnswer {
	ans := shardAnswer{Shard: i}
	resp, err := s.open(r, a, i, bytes.NewReader(body), int64(len(body)), shardScope)
	if err != nil {
		var re *routingError
		ans.Status, ans.Error = http.StatusServiceUnavailable, err.Error()
		if errors.As(err, &re) {
			ans.Status = re.status
		}
		return ans
	}
	defer resp.Body.Close()
	ans.Status = resp.StatusCode
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		ans.Status, ans.Error = http.StatusBadGateway, err.Error()
		return ans
	}
	if json.Valid(b) {
		ans.Result = b
	} else {
		ans.Error = strings.TrimSpace(string(b))
	}
	return ans
}

// summed are the fields of cluster-wide answers that add up over shards;
// every other field is the answering shard's own (settings are the same on
// every shard).
var summed = map[string]bool{"removed": true, "hits": true, "misses": true, "count": true, "volume": true}

// broadcast runs a cluster-wide operation on every shard and merges the
// answers: counts add up, warnings are concatenated and name their shard.
// With detail (stats, info) the answer also lists each shard's own.
func (s *Server) broadcast(w http.ResponseWriter, r *http.Request, a *topology.Announcement, detail bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFanOutBody))
	if err != nil {
		return jsonBodyError(err, maxFanOutBody)
	}
	if a.Previous != nil {
		// During a move, data sits at the current and the previous owners:
		// ask both. A deletion runs with the moves paused, so no item is
		// in flight (at neither place) and none comes back after it.
		a = unionLayout(a)
		if isDeletion(r.URL.Path) {
			s.pauseMoves(r.Context(), a)
			defer s.resumeMoves(a)
		}
	}
	sub := r
	if r.Method == http.MethodHead {
		// The merge needs the shards' bodies; net/http (or the frame
		// writer) drops the merged one.
		sub = r.Clone(r.Context())
		sub.Method = http.MethodGet
	}
	answers := s.callAll(sub, a, body)
	if status, ok := sameFailure(answers); ok {
		// The request itself is wrong (every shard refused it alike).
		return passOn(w, status, answers[0])
	}
	var failed []int
	for _, ans := range answers {
		if !ans.ok() {
			failed = append(failed, ans.Shard)
		}
	}
	if len(failed) > 0 {
		return newRoutingError(http.StatusBadGateway, wire.CodePartialFailure, map[string]any{"shards": answers},
			"shards %v of %d failed; the others' answers are listed", failed, len(answers))
	}
	if r.URL.Path == "/v1/collections" {
		// Every shard checked the same query: its limit is valid.
		limit, _ := intParam(r, "limit", defaultCollectionsLimit, 1, maxCollectionsLimit)
		page, err := mergeCollectionPages(answers, int(limit))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, page)
		return nil
	}
	merged, err := mergeAnswers(answers, s.cluster.self)
	if err != nil {
		return err
	}
	if detail {
		merged["shards"] = answers
	}
	writeJSON(w, http.StatusOK, merged)
	return nil
}

// sameFailure reports whether every shard answered the same 4xx status.
func sameFailure(answers []shardAnswer) (int, bool) {
	st := answers[0].Status
	if st < 400 || st >= 500 {
		return 0, false
	}
	for _, a := range answers[1:] {
		if a.Status != st {
			return 0, false
		}
	}
	return st, true
}

func passOn(w http.ResponseWriter, status int, ans shardAnswer) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err := w.Write(ans.Result)
	return err
}

func mergeAnswers(answers []shardAnswer, self int) (map[string]any, error) {
	var merged map[string]any
	sums := map[string]json.Number{}
	var warnings []any
	for _, ans := range answers {
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(ans.Result))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("shard %d answered %s: %w", ans.Shard, ans.Result, err)
		}
		if merged == nil || ans.Shard == self {
			merged = m
		}
		for k, v := range m {
			if n, ok := v.(json.Number); ok && summed[k] {
				sums[k] = addNumbers(sums[k], n)
			}
		}
		if ws, ok := m["warnings"].([]any); ok {
			for _, wv := range ws {
				warnings = append(warnings, map[string]any{"shard": ans.Shard, "warning": wv})
			}
		}
	}
	for k, v := range sums {
		merged[k] = v
	}
	if _, ok := merged["warnings"]; ok {
		if warnings == nil {
			warnings = []any{}
		}
		merged["warnings"] = warnings
	}
	return merged, nil
}

func addNumbers(a, b json.Number) json.Number {
	if a == "" {
		return b
	}
	ai, aerr := a.Int64()
	bi, berr := b.Int64()
	if aerr == nil && berr == nil {
		return json.Number(strconv.FormatInt(ai+bi, 10))
	}
	af, _ := a.Float64()
	bf, _ := b.Float64()
	return json.Number(strconv.FormatFloat(af+bf, 'g', -1, 64))
}

// groupByOwner splits keys by owner, keeping each key's position.
func groupByOwner(keys []kv.Key, n int) map[int][]int {
	groups := map[int][]int{}
	for i, k := range keys {
		o := topology.Owner(wire.Routing(k), n)
		groups[o] = append(groups[o], i)
	}
	return groups
}

func keysBody(keys []kv.Key, idx []int) []byte {
	body := BatchKeys{Keys: make([]wire.EncodeKeyJSON, len(idx))}
	for j, i := range idx {
		body.Keys[j] = wire.KeyToJSON(keys[i])
	}
	b, _ := json.Marshal(body)
	return b
}

// sendBatchParts sends each owner of keys its part of a batch get or
// delete, in parallel.
func (s *Server) sendBatchParts(r *http.Request, a *topology.Announcement, keys []kv.Key) (map[int][]int, []int, map[int]*http.Response, map[int]error) {
	groups := groupByOwner(keys, len(a.Shards))
	owners := make([]int, 0, len(groups))
	for o := range groups {
		owners = append(owners, o)
	}
	sort.Ints(owners)
	resps := make(map[int]*http.Response, len(owners))
	errs := make(map[int]error)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, o := range owners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := keysBody(keys, groups[o])
			resp, err := s.open(r, a, o, bytes.NewReader(b), int64(len(b)), true)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[o] = err
			} else {
				resps[o] = resp
			}
		}()
	}
	wg.Wait()
	return groups, owners, resps, errs
}

// adoptNewerFrom adopts the topology of a part answered 409 wrong_epoch,
// if it is newer; true when this shard now routes by another epoch. The
// bodies of the 409s it read stay readable.
func (s *Server) adoptNewerFrom(resps map[int]*http.Response, a *topology.Announcement) bool {
	for _, resp := range resps {
		if resp.StatusCode != http.StatusConflict {
			continue
		}
		t, ok := readWrongEpoch(resp)
		resp.Body = io.NopCloser(bytes.NewReader(t.raw))
		if ok && t.Epoch > a.Epoch {
			_, _ = s.cluster.adopt(t.Announcement) // a conflict: another request adopted it
		}
	}
	cur := s.cluster.current()
	return cur != nil && cur.Epoch != a.Epoch
}

func closeAll(resps map[int]*http.Response) {
	for _, resp := range resps {
		resp.Body.Close()
	}
}

// batchBroadcast splits a batch request of the cache by owner, sends each
// owner its part in parallel, and answers in request order.
func (s *Server) batchBroadcast(w http.ResponseWriter, r *http.Request, a *topology.Announcement) error {
	if strings.HasSuffix(r.URL.Path, "/set") {
		return s.batchSetBroadcast(w, r, a)
	}
	keys, err := s.batchKeys(w, r)
	if err != nil {
		return err
	}
	groups, owners, resps, errs := s.sendBatchParts(r, a, keys)
	if s.adoptNewerFrom(resps, a) {
		// A part went to a shard on a newer epoch (this one lagged):
		// split again by it, once.
		closeAll(resps)
		a = s.cluster.current()
		groups, owners, resps, errs = s.sendBatchParts(r, a, keys)
	}
	defer closeAll(resps)
	failed := map[int]shardAnswer{}
	for _, o := range owners {
		if ans, ok := failedPart(o, errs[o], resps[o]); !ok {
			failed[o] = ans
		}
	}
	if len(owners) > 0 && len(failed) == len(owners) {
		// No owner answered: the first one's error is the answer, which
		// a client retries as it would for a key it asked the owner for.
		o := owners[0]
		if err := errs[o]; err != nil {
			return err
		}
		resp := resps[o]
		if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout {
			// The owner is up but could not answer for now (a previous
			// owner it pulls from is down, its database stayed busy).
			copyHeaders(w.Header(), resp.Header)
			w.WriteHeader(resp.StatusCode)
			if body := failed[o].Result; body != nil {
				_, _ = w.Write(body)
			} else {
				_, _ = io.WriteString(w, failed[o].Error)
			}
			return nil
		}
		return newRoutingError(http.StatusBadGateway, wire.CodePartialFailure, map[string]any{"shards": []shardAnswer{failed[o]}},
			"shard %d answered its part of the batch with %d", o, resp.StatusCode)
	}
	if strings.HasSuffix(r.URL.Path, "/delete") {
		return mergeBatchDelete(w, keys, groups, resps, failed)
	}
	return mergeBatchGet(w, keys, groups, resps, failed)
}

// failedPart says whether an owner answered its part of a batch get or
// delete (200), and otherwise what it answered, its body read.
func failedPart(o int, err error, resp *http.Response) (shardAnswer, bool) {
	ans := shardAnswer{Shard: o, Status: http.StatusServiceUnavailable}
	if err != nil {
		var re *routingError
		if errors.As(err, &re) {
			ans.Status = re.status
			ans.Result, _ = json.Marshal(re.body)
		} else {
			ans.Error = err.Error()
		}
		return ans, false
	}
	if resp.StatusCode == http.StatusOK {
		return ans, true
	}
	ans.Status = resp.StatusCode
	ans.Result, _ = io.ReadAll(io.LimitReader(resp.Body, maxFanOutBody))
	if !json.Valid(ans.Result) {
		ans.Error, ans.Result = strings.TrimSpace(string(ans.Result)), nil
	}
	return ans, false
}

// partFailure is the error code and message of a key whose owner failed
// its part of a batch.
func partFailure(a shardAnswer) (code, msg string) {
	f := shardFailed(a, []BatchSetFailed{{}})[0]
	return f.Error, f.Message
}

// mergeBatchDelete answers what the owners deleted, in request order. When
// some owners failed their part (and others did theirs: those keys are
// deleted), the answer is 502 partial_failure with the same deleted and
// count, and failed: each key of the failed parts, with its owner's error.
func mergeBatchDelete(w http.ResponseWriter, keys []kv.Key, groups map[int][]int, resps map[int]*http.Response, failed map[int]shardAnswer) error {
	deleted := make([]bool, len(keys))
	count := 0
	for o, resp := range resps {
		if _, ok := failed[o]; ok {
			continue
		}
		var part struct {
			Deleted []bool `json:"deleted"`
			Count   int    `json:"count"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&part); err != nil || len(part.Deleted) != len(groups[o]) {
			return fmt.Errorf("shard %d: batch delete answer: %v", o, err)
		}
		for j, i := range groups[o] {
			deleted[i] = part.Deleted[j]
		}
		count += part.Count
	}
	if len(failed) == 0 {
		writeJSON(w, http.StatusOK, map[string]any{"deleted": deleted, "count": count})
		return nil
	}
	var recs []BatchSetFailed
	answers := make([]shardAnswer, 0, len(failed))
	for _, o := range slices.Sorted(maps.Keys(failed)) {
		code, msg := partFailure(failed[o])
		for _, i := range groups[o] {
			kj := wire.KeyToJSON(keys[i])
			recs = append(recs, BatchSetFailed{Index: i, Key: kj.Key, Kind: kj.Kind, Error: code, Message: msg})
		}
		answers = append(answers, failed[o])
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Index < recs[j].Index })
	return newRoutingError(http.StatusBadGateway, wire.CodePartialFailure,
		map[string]any{"shards": answers, "deleted": deleted, "count": count, "failed": recs},
		"%s of the batch; %d keys were deleted, %d not known to be", partsFailed(len(failed)), count, len(recs))
}

// mergeBatchGet writes one record per key in request order, reading each
// owner's stream in step (each is in its own request order), so values
// pass through without being held. A key whose owner failed its part is a
// record with found false and the owner's error (error, message), and
// the answer says how many there are (Diskcache-Failed-Keys): the other
// owners' values still reach the client.
func mergeBatchGet(w http.ResponseWriter, keys []kv.Key, groups map[int][]int, resps map[int]*http.Response, failed map[int]shardAnswer) error {
	owner := make([]int, len(keys))
	readers := map[int]*wire.RecordReader{}
	nFailed := 0
	for o, idx := range groups {
		for _, i := range idx {
			owner[i] = o
		}
		if _, ok := failed[o]; ok {
			nFailed += len(idx)
			continue
		}
		readers[o] = wire.NewRecordReader(resps[o].Body)
	}
	w.Header().Set("Content-Type", wire.RecordsContentType)
	if nFailed > 0 {
		w.Header().Set(wire.HeaderFailedKeys, strconv.Itoa(nFailed))
	}
	w.WriteHeader(http.StatusOK)
	rw := wire.NewRecordWriter(w)
	notFound := false
	for i := range keys {
		if ans, ok := failed[owner[i]]; ok {
			kj := wire.KeyToJSON(keys[i])
			code, msg := partFailure(ans)
			if err := rw.Write(wire.Record{Key: kj.Key, Kind: kj.Kind, Found: &notFound, Error: code, Message: msg}, nil); err != nil {
				panic(http.ErrAbortHandler)
			}
			continue
		}
		rec, body, err := readers[owner[i]].Next()
		if err != nil {
			panic(http.ErrAbortHandler) // the status is out; cut the response
		}
		if err := rw.WriteFrom(rec, body); err != nil {
			panic(http.ErrAbortHandler)
		}
	}
	return nil
}

// batchRedoBytes bounds the values a batch set keeps in memory, while it
// streams them to their owners, to send them again if an owner refuses its
// part for a newer topology (a batch of larger values is not redone).
const batchRedoBytes = 1 << 20

// keptRecord is a record of a batch set kept to be sent again.
type keptRecord struct {
	rec   wire.Record
	value []byte
}

// batchSetBroadcast streams each record of a batch set to its owner's part
// as it is read, then adds up the parts' answers, with failed records
// numbered as in the request. A part an owner refused because this shard
// lags (409 wrong_epoch) is sent again, once, by the newer topology, when
// its records were kept (batchRedoBytes).
func (s *Server) batchSetBroadcast(w http.ResponseWriter, r *http.Request, a *topology.Announcement) error {
	type part struct {
		pw     *io.PipeWriter
		rw     *wire.RecordWriter
		index  []int            // request position of each record sent
		sent   []BatchSetFailed // and its key, to name it if the part fails
		done   chan struct{}
		answer shardAnswer
		cut    bool // its request ended before its records did
	}
	parts := map[int]*part{}
	start := func(o int) *part {
		pr, pw := io.Pipe()
		p := &part{pw: pw, rw: wire.NewRecordWriter(pw), done: make(chan struct{})}
		go func() {
			defer close(p.done)
			resp, err := s.open(r, a, o, pr, -1, true)
			if err != nil {
				p.answer = shardAnswer{Shard: o, Status: http.StatusServiceUnavailable, Error: err.Error()}
				pr.CloseWithError(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
			p.answer = shardAnswer{Shard: o, Status: resp.StatusCode, Result: b}
			pr.CloseWithError(errors.New("the shard answered before the end of its records"))
		}()
		parts[o] = p
		return p
	}
	finish := func() {
		for _, p := range parts {
			p.pw.Close()
			<-p.done
		}
	}
	rr := wire.NewRecordReader(r.Body)
	var readErr error
	var keyless []BatchSetFailed // records without a key, failed here
	kept := map[int]keptRecord{} // by request position; nil once over batchRedoBytes
	var keptBytes int64
	for i := 0; ; i++ {
		rec, body, err := rr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			readErr = badRequest(wire.CodeBadRequest, "record %d: %v", i, err)
			break
		}
		if i >= maxBatchKeys {
			readErr = badRequest(wire.CodeBadRequest, "more than %d records in one batch", maxBatchKeys)
			break
		}
		if !rec.Keyed {
			// Forwarded, it would be written with the empty key.
			keyless = append(keyless, BatchSetFailed{Index: i, Error: wire.CodeBadKey, Message: `the record has no "key"`})
			continue
		}
		k, err := wire.KeyFromJSON(wire.EncodeKeyJSON{Key: rec.Key, Kind: rec.Kind})
		o := 0
		if err == nil {
			o = topology.Owner(wire.Routing(k), len(a.Shards))
		} // else any shard reports the bad key as a failed record
		p := parts[o]
		if p == nil {
			p = start(o)
		}
		p.index = append(p.index, i)
		p.sent = append(p.sent, BatchSetFailed{Index: i, Key: rec.Key, Kind: rec.Kind})
		if kept != nil && rec.Len <= batchRedoBytes-keptBytes {
			value := make([]byte, rec.Len)
			if _, err := io.ReadFull(body, value); err != nil {
				readErr = badRequest(wire.CodeBadRequest, "record %d: %v", i, err)
				break
			}
			kept[i] = keptRecord{rec: rec, value: value}
			keptBytes += rec.Len
			if !p.cut && p.rw.Write(rec, value) != nil {
				p.cut = true // as below
			}
			continue
		}
		kept = nil
		if p.cut {
			continue // its shard failed: the 502 below says so
		}
		src := &readErrors{r: body}
		if err := p.rw.WriteFrom(rec, src); err != nil {
			if src.err != nil {
				// The request's own stream broke.
				readErr = badRequest(wire.CodeBadRequest, "record %d: %v", i, err)
				break
			}
			// The shard's part failed (unreachable, or it answered):
			// the other shards' records still go to them.
			p.cut = true
		}
	}
	finish()
	res := BatchSetResult{Failed: append([]BatchSetFailed{}, keyless...)}
	var failed []shardAnswer
	var redo []int // request positions of the records to send again
	answers := make([]shardAnswer, 0, len(parts))
	for _, p := range parts {
		answers = append(answers, p.answer)
	}
	if readErr == nil && s.adoptNewerAnswer(answers, a) && kept != nil {
		for o, p := range parts {
			if _, ok := wrongEpochOf(p.answer.Result); ok && p.answer.Status == http.StatusConflict {
				redo = append(redo, p.index...)
				delete(parts, o)
			}
		}
	}
	for _, p := range parts {
		var pr BatchSetResult
		if p.cut || !p.answer.ok() || json.Unmarshal(p.answer.Result, &pr) != nil {
			failed = append(failed, p.answer)
			// None of its records is known to be stored: the client may
			// write them again once the shard is back.
			res.Failed = append(res.Failed, shardFailed(p.answer, p.sent)...)
			continue
		}
		res.Stored += pr.Stored
		for _, f := range pr.Failed {
			if f.Index >= 0 && f.Index < len(p.index) {
				f.Index = p.index[f.Index]
			}
			res.Failed = append(res.Failed, f)
		}
	}
	if len(redo) > 0 {
		stored, refailed, answers := s.sendKeptRecords(r, s.cluster.current(), redo, kept)
		res.Stored += stored
		res.Failed = append(res.Failed, refailed...)
		failed = append(failed, answers...)
	}
	sort.Slice(res.Failed, func(i, j int) bool { return res.Failed[i].Index < res.Failed[j].Index })
	if readErr != nil {
		var ae *apiError
		if errors.As(readErr, &ae) {
			ae.msg = fmt.Sprintf("%s (%d records stored)", ae.msg, res.Stored)
		}
		return readErr
	}
	if len(failed) > 0 {
		return newRoutingError(http.StatusBadGateway, wire.CodePartialFailure,
			map[string]any{"shards": failed, "stored": res.Stored, "failed": res.Failed},
			"%s of the batch; %d records were stored", partsFailed(len(failed)), res.Stored)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// adoptNewerAnswer is adoptNewerFrom for answers already read.
func (s *Server) adoptNewerAnswer(answers []shardAnswer, a *topology.Announcement) bool {
	for _, ans := range answers {
		if t, ok := wrongEpochOf(ans.Result); ok && ans.Status == http.StatusConflict && t.Epoch > a.Epoch {
			_, _ = s.cluster.adopt(t.Announcement) // a conflict: another request adopted it
		}
	}
	cur := s.cluster.current()
	return cur != nil && cur.Epoch != a.Epoch
}

// sendKeptRecords sends the kept records at the request positions redo to
// their owners by a, in parallel, and adds up the answers as
// batchSetBroadcast does: what was stored, the records that failed
// (numbered as in the request), and the answers of owners that failed
// their part.
func (s *Server) sendKeptRecords(r *http.Request, a *topology.Announcement, redo []int, kept map[int]keptRecord) (stored int, failedRecs []BatchSetFailed, failedParts []shardAnswer) {
	groups := map[int][]int{}
	for _, i := range redo {
		o := 0 // a bad key: any shard reports it as a failed record
		if k, err := wire.KeyFromJSON(wire.EncodeKeyJSON{Key: kept[i].rec.Key, Kind: kept[i].rec.Kind}); err == nil {
			o = topology.Owner(wire.Routing(k), len(a.Shards))
		}
		groups[o] = append(groups[o], i)
	}
	owners := slices.Sorted(maps.Keys(groups))
	answers := make([]shardAnswer, len(owners))
	parallel(len(owners), func(j int) {
		var body bytes.Buffer
		rw := wire.NewRecordWriter(&body)
		for _, i := range groups[owners[j]] {
			_ = rw.Write(kept[i].rec, kept[i].value) // to memory
		}
		answers[j] = s.call(r, a, owners[j], body.Bytes(), true)
	})
	for j, ans := range answers {
		idx := groups[owners[j]]
		var pr BatchSetResult
		if !ans.ok() || json.Unmarshal(ans.Result, &pr) != nil {
			sent := make([]BatchSetFailed, len(idx))
			for n, i := range idx {
				sent[n] = BatchSetFailed{Index: i, Key: kept[i].rec.Key, Kind: kept[i].rec.Kind}
			}
			failedParts = append(failedParts, ans)
			failedRecs = append(failedRecs, shardFailed(ans, sent)...)
			continue
		}
		stored += pr.Stored
		for _, f := range pr.Failed {
			if f.Index >= 0 && f.Index < len(idx) {
				f.Index = idx[f.Index]
			}
			failedRecs = append(failedRecs, f)
		}
	}
	return stored, failedRecs, failedParts
}

// shardFailed lists the records of a shard's part that failed as a whole
// with the shard's error code.
func shardFailed(a shardAnswer, sent []BatchSetFailed) []BatchSetFailed {
	code, msg := wire.CodeShardUnavailable, a.Error
	var body struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if a.Error == "" && json.Unmarshal(a.Result, &body) == nil && body.Error != "" {
		code, msg = body.Error, body.Message
	}
	if msg == "" {
		msg = fmt.Sprintf("shard %d answered %d", a.Shard, a.Status)
	}
	msg = fmt.Sprintf("shard %d failed its part: %s", a.Shard, msg)
	out := make([]BatchSetFailed, len(sent))
	for j, f := range sent {
		f.Error, f.Message = code, msg
		out[j] = f
	}
	return out
}

// readErrors passes reads through and keeps the first error, io.EOF
// included (a copy of exactly a record's length never reads to the end of
// it): a copy that fails then tells a broken source from a broken
// destination.
type readErrors struct {
	r   io.Reader
	err error
}

func (e *readErrors) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}

// partsFailed says how many shards failed their part, in a message.
func partsFailed(n int) string {
	if n == 1 {
		return "1 shard failed its part"
	}
	return fmt.Sprintf("%d shards failed their part", n)
}
