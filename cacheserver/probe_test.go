package cacheserver_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// The probe suite: FuzzOpenAPI sends requests generated from
// docs/api/openapi.yaml (every documented method and path, its path, query
// and header parameters, and bodies shaped by the documented schemas) with
// the data token to a real cacheserver process, now and then as a bad
// body, a body cut short, a client that stops sending, or without a token.
// After each request the server must still answer /healthz; now and then
// (and in the last seed) it checks that a ledger of items written through
// the normal API before the fuzzing is intact and that the server wrote
// nothing outside its data directory.
//
// The fuzzer keeps to its own namespace: every collection it names starts
// with "fz"; the ledger lives in the named cache and the index "ledger".
// Whatever the fuzzer does to its own items (clear, cull,
// delete) is legitimate; nothing it does may touch the ledger.

const (
	probeLedgerName = "ledger"
	probeLedgerKeys = 48
	probeFileValue  = 1 << 10 // --disk-min-file-size: many values go to files
	probeMaxValue   = 256 << 10
	probeMaxHeld    = 8  // slow connections held open at once
	probeCheckEvery = 25 // requests between full checks
	probeVerifySel  = 0xFFFF
)

// probeOp is one documented operation, resolved for generation.
type probeOp struct {
	method, path string
	params       []map[string]any // dereferenced parameters
	body         map[string]any   // content type -> schema (nil: no body)
	responses    map[string]bool  // documented status codes
}

func probeOperations(t testing.TB, sp *spec) []probeOp {
	ops := sp.operations(t)
	keys := make([]string, 0, len(ops))
	for k := range ops {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []probeOp
	for _, k := range keys {
		op := ops[k]
		po := probeOp{method: op.method, path: op.path, responses: map[string]bool{}}
		for _, p := range op.pathParams {
			pm, err := sp.deref(p)
			if err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			po.params = append(po.params, pm)
		}
		if rb, ok := op.op["requestBody"]; ok {
			rbm, err := sp.deref(rb)
			if err != nil {
				t.Fatalf("%s: requestBody: %v", k, err)
			}
			content, _ := rbm["content"].(map[string]any)
			po.body = map[string]any{}
			for ct, media := range content {
				mm, _ := media.(map[string]any)
				po.body[ct] = mm["schema"]
			}
		}
		for code := range op.op["responses"].(map[string]any) {
			po.responses[code] = true
		}
		out = append(out, po)
	}
	return out
}

// gen draws choices from the fuzzer's bytes; exhausted, it answers zeros,
// which pick the first (documented, valid) alternative everywhere.
type gen struct {
	data []byte
	sp   *spec
}

func (g *gen) byte() byte {
	if len(g.data) == 0 {
		return 0
	}
	b := g.data[0]
	g.data = g.data[1:]
	return b
}

func (g *gen) intn(n int) int {
	if n <= 1 {
		return 0
	}
	v := int(g.byte())
	if n > 256 {
		v = v<<8 | int(g.byte())
	}
	return v % n
}

// chance is true with probability about 1/n (never when exhausted).
func (g *gen) chance(n int) bool { return len(g.data) > 0 && g.intn(n) == n-1 }

func (g *gen) bytes(max int) []byte {
	n := g.intn(max + 1)
	if n > len(g.data) {
		// Stretch what is left: large values without large inputs.
		fill := g.data
		g.data = nil
		if len(fill) == 0 {
			fill = []byte{'v'}
		}
		return bytes.Repeat(fill, n/len(fill)+1)[:n]
	}
	b := g.data[:n]
	g.data = g.data[n:]
	return append([]byte(nil), b...)
}

func (g *gen) string(max int) string {
	if g.chance(8) {
		return string(g.bytes(max)) // anything, not even UTF-8
	}
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_"
	n := g.intn(max) + 1
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[g.intn(len(alphabet))]
	}
	return string(b)
}

func (g *gen) number(schema map[string]any, integer bool) any {
	lo, hasLo := schema["minimum"].(int)
	hi, hasHi := schema["maximum"].(int)
	switch {
	case g.chance(16):
		return []any{-1, 0, math.MaxInt64, math.MinInt64, 1e308, -0.5}[g.intn(6)]
	case hasLo && hasHi && hi >= lo:
		return lo + g.intn(hi-lo+1)
	case hasLo:
		return lo + g.intn(100)
	case integer:
		return g.intn(200) - 50
	default:
		return float64(g.intn(2000))/8 - 50
	}
}

// value draws a JSON value of the schema's shape.
func (g *gen) value(schema any, depth int) any {
	m, err := g.sp.deref(schema)
	if err != nil || depth > 5 {
		return nil
	}
	if g.chance(32) { // the wrong shape
		return []any{"x", 1, true, nil, []any{}, map[string]any{}}[g.intn(6)]
	}
	if c, ok := m["const"]; ok {
		return c
	}
	if e, ok := m["enum"].([]any); ok && len(e) > 0 {
		return e[g.intn(len(e))]
	}
	for _, k := range []string{"oneOf", "anyOf"} {
		if alts, ok := m[k].([]any); ok && len(alts) > 0 {
			return g.value(alts[g.intn(len(alts))], depth+1)
		}
	}
	if parts, ok := m["allOf"].([]any); ok {
		merged := map[string]any{}
		for _, p := range parts {
			if v, ok := g.value(p, depth+1).(map[string]any); ok {
				for k, x := range v {
					merged[k] = x
				}
			}
		}
		return merged
	}
	typ, _ := m["type"].(string)
	if ts, ok := m["type"].([]any); ok && len(ts) > 0 {
		typ, _ = ts[g.intn(len(ts))].(string)
	}
	if typ == "" && m["properties"] != nil {
		typ = "object"
	}
	switch typ {
	case "object":
		out := map[string]any{}
		required := map[string]bool{}
		for _, r := range asList(m["required"]) {
			required[fmt.Sprint(r)] = true
		}
		props, _ := m["properties"].(map[string]any)
		names := make([]string, 0, len(props))
		for n := range props {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if required[n] || g.intn(2) == 0 {
				out[n] = g.value(props[n], depth+1)
			}
		}
		return out
	case "array":
		n := g.intn(4)
		if n == 0 && len(g.data) == 0 {
			n = 1
		}
		out := make([]any, n)
		for i := range out {
			out[i] = g.value(m["items"], depth+1)
		}
		return out
	case "integer":
		return g.number(m, true)
	case "number":
		return g.number(m, false)
	case "boolean":
		return g.intn(2) == 1
	case "null":
		return nil
	default:
		return g.string(16)
	}
}

func asList(v any) []any { l, _ := v.([]any); return l }

// probeRequest is one generated request.
type probeRequest struct {
	method, target string
	header         http.Header
	body           []byte
	mode           probeMode
}

type probeMode int

const (
	modeNormal  probeMode = iota
	modeChunked           // Transfer-Encoding: chunked
	modeCut               // a Content-Length the client never reaches, then close
	modeHold              // headers and part of the body, then silence (kept open)
	modeNoToken           // no Authorization header
)

// probeName is a collection name in the fuzzer's namespace.
func (g *gen) probeName() string {
	switch g.intn(4) {
	case 0:
		return "fz"
	case 1:
		return "fz/a"
	case 2:
		return "fz b"
	default:
		return "fz-" + g.string(12)
	}
}

func (g *gen) request(op probeOp) probeRequest {
	q := url.Values{}
	header := http.Header{}
	pathVals := map[string]string{}
	var keyEnc string
	for _, p := range op.params {
		name, _ := p["name"].(string)
		in, _ := p["in"].(string)
		required, _ := p["required"].(bool)
		switch {
		case in == "path" && name == "name":
			pathVals[name] = url.PathEscape(g.probeName())
			continue
		case in == "path" && name == "key":
			seg, enc := wire.EncodeKeySegment(g.string(24))
			pathVals[name], keyEnc = seg, enc
			continue
		case in == "path":
			pathVals[name] = url.PathEscape(fmt.Sprint(g.value(p["schema"], 0)))
			continue
		case name == wire.ParamKeyEncoding:
			continue // follows the key (below)
		case !required && g.intn(2) == 0:
			continue
		}
		v := g.value(p["schema"], 0)
		s := ""
		switch v := v.(type) {
		case nil:
		case string:
			s = v
		case float64:
			s = strconv.FormatFloat(v, 'g', -1, 64)
		case []any, map[string]any:
			b, _ := json.Marshal(v)
			s = string(b)
		default:
			s = fmt.Sprint(v)
		}
		switch in {
		case "query":
			q.Set(name, s)
		case "header":
			if validHeaderValue(s) {
				header.Set(name, s)
			}
		}
	}
	if keyEnc != "" {
		q.Set(wire.ParamKeyEncoding, keyEnc)
	}
	path := templateParam.ReplaceAllStringFunc(op.path, func(m string) string {
		return pathVals[m[1:len(m)-1]]
	})
	target := path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	req := probeRequest{method: op.method, target: target, header: header}
	if op.body != nil {
		cts := make([]string, 0, len(op.body))
		for ct := range op.body {
			cts = append(cts, ct)
		}
		sort.Strings(cts)
		ct := cts[g.intn(len(cts))]
		header.Set("Content-Type", ct)
		switch {
		case g.chance(16): // a bad body of any kind
			req.body = g.bytes(512)
		case ct == "application/json":
			req.body, _ = json.Marshal(g.value(op.body[ct], 0))
		case ct == wire.RecordsContentType:
			req.body = g.records()
		default:
			req.body = g.bytes(4 * probeFileValue)
		}
	}
	switch g.intn(16) {
	case 1, 2:
		req.mode = modeChunked
	case 3:
		req.mode = modeCut
	case 4:
		req.mode = modeHold
	case 5:
		req.mode = modeNoToken
	}
	return req
}

// records draws a record stream, mostly well framed.
func (g *gen) records() []byte {
	var buf bytes.Buffer
	rw := wire.NewRecordWriter(&buf)
	n := g.intn(4) + 1
	for i := 0; i < n; i++ {
		rec := wire.Record{Key: g.string(16), Type: []string{"bytes", "text", "int", "float", "pickle"}[g.intn(5)]}
		var v []byte
		switch rec.Type {
		case "int":
			v = []byte(strconv.Itoa(g.intn(1000)))
		case "float":
			v = []byte("1.5")
		default:
			v = g.bytes(3 * probeFileValue)
		}
		if g.intn(3) == 0 {
			e := float64(g.intn(100)) + 1
			rec.Expire = &e
		}
		if g.intn(3) == 0 {
			tag := g.string(8)
			rec.Tag = &tag
		}
		rec.Len = int64(len(v))
		if g.chance(8) {
			rec.Len += int64(g.intn(7)) - 3 // misframed
		}
		_ = rw.Write(rec, v)
	}
	return buf.Bytes()
}

// probe is the server under probe and what it must keep.
type probe struct {
	srv     *testserver.Server
	sandbox string // the server's working directory, TMPDIR and the parent of its data directory
	client  *http.Client
	ops     []probeOp
	sp      *spec
	ledger  map[string][]byte // key -> value, in the named cache and the index "ledger"
	held    []net.Conn
	calls   int
	routed  map[string]int // status class by outcome, for the log
}

func startProbe(f *testing.F) *probe {
	sandbox := f.TempDir()
	tmp := filepath.Join(sandbox, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		f.Fatal(err)
	}
	srv := testserver.Start(f, testserver.Options{
		DataDir: filepath.Join(sandbox, "data"),
		Dir:     sandbox,
		Env:     []string{"TMPDIR=" + tmp, "HOME=" + sandbox},
		Args: []string{"--fanout", "2", "--disk-min-file-size", strconv.Itoa(probeFileValue),
			"--max-value-bytes", strconv.Itoa(probeMaxValue), "--body-timeout", "2s",
			// Lock and semaphore waits end before this: a fuzzed wait=1e9
			// costs 2 s, not the default 30.
			"--request-timeout", "2s"},
	})
	p := &probe{srv: srv, sandbox: sandbox, ledger: map[string][]byte{}, routed: map[string]int{},
		// The timeout guards against a hung server; it is not what a test checks.
		client: &http.Client{Timeout: 2 * time.Minute}}
	f.Cleanup(func() {
		for _, c := range p.held {
			_ = c.Close()
		}
	})
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < probeLedgerKeys; i++ {
		key := fmt.Sprintf("ledger-%03d", i)
		v := make([]byte, rng.IntN(3*probeFileValue))
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		p.ledger[key] = v
		for _, base := range []string{"/v1/caches/" + probeLedgerName, "/v1/indexes/" + probeLedgerName} {
			res, err := p.do(http.MethodPut, base+"/keys/"+key, v, true)
			if err != nil || res.status != http.StatusNoContent {
				f.Fatalf("writing the ledger: PUT %s/keys/%s: %v %v", base, key, res, err)
			}
		}
	}
	return p
}

type probeResponse struct {
	status int
	header http.Header
	body   []byte
}

func (r *probeResponse) String() string {
	if r == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%d %s", r.status, truncateBody(r.body))
}

func (p *probe) do(method, target string, body []byte, auth bool) (*probeResponse, error) {
	req, err := http.NewRequest(method, p.srv.URL+target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+p.srv.Token)
	}
	return p.send(req)
}

func (p *probe) send(req *http.Request) (*probeResponse, error) {
	res, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusSwitchingProtocols {
		// GET /v1/frames switched the connection to frames: its body is the
		// connection itself, which the server keeps open until it idles out.
		return &probeResponse{status: res.StatusCode, header: res.Header}, nil
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	return &probeResponse{status: res.StatusCode, header: res.Header, body: b}, nil
}

// raw sends the request's head and part of its body on a connection of its
// own; modeCut closes it, modeHold keeps it open (up to probeMaxHeld).
func (p *probe) raw(t *testing.T, r probeRequest) {
	c, err := net.Dial("tcp", p.srv.Addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	w := bufio.NewWriter(c)
	fmt.Fprintf(w, "%s %s HTTP/1.1\r\nHost: cacheserver\r\nAuthorization: Bearer %s\r\n", r.method, r.target, p.srv.Token)
	for k, vs := range r.header {
		for _, v := range vs {
			fmt.Fprintf(w, "%s: %s\r\n", k, v)
		}
	}
	fmt.Fprintf(w, "Content-Length: %d\r\n\r\n", len(r.body)+1+len(r.body)/2)
	w.Write(r.body[:len(r.body)/2])
	_ = w.Flush() // the server may already have answered and closed
	if r.mode == modeCut {
		_ = c.Close()
		return
	}
	p.held = append(p.held, c)
	if len(p.held) > probeMaxHeld {
		_ = p.held[0].Close()
		p.held = p.held[1:]
	}
}

// check sends a request and checks its answer: never a 500, never a 5xx the
// operation does not document, every 4xx (but to HEAD) a JSON error with a
// documented code, never the catch-all's "no route" (the generator only
// sends documented routes).
func (p *probe) check(t *testing.T, op probeOp, r probeRequest) {
	if r.mode == modeCut || r.mode == modeHold {
		p.raw(t, r)
		p.routed["slow"]++
		return
	}
	req, err := http.NewRequest(r.method, p.srv.URL+r.target, bytes.NewReader(r.body))
	if err != nil {
		return // a URL no client could send
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	if r.mode != modeNoToken {
		req.Header.Set("Authorization", "Bearer "+p.srv.Token)
	}
	if r.mode == modeChunked {
		req.ContentLength = -1
		req.Body = io.NopCloser(bytes.NewReader(r.body))
	}
	res, err := p.send(req)
	if err != nil {
		t.Fatalf("%s %s: %v\nserver log:\n%s", r.method, r.target, err, tail(p.srv.Logs()))
	}
	what := fmt.Sprintf("%s %s (%q)", r.method, r.target, truncateBody(r.body))
	switch {
	case res.status == http.StatusInternalServerError:
		t.Fatalf("%s answered %s", what, res)
	case res.status >= 500 && !op.responses[strconv.Itoa(res.status)]:
		t.Fatalf("%s answered %s, which %s %s does not document", what, res, op.method, op.path)
	case r.mode == modeNoToken && res.status != http.StatusUnauthorized && !publicRoute(op):
		t.Fatalf("%s without a token answered %s", what, res)
	case res.status >= 400 && r.method != http.MethodHead:
		var e wire.Error
		if ct := res.header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s answered %s with Content-Type %q", what, res, ct)
		}
		if err := json.Unmarshal(res.body, &e); err != nil || e.Code == "" || e.Message == "" {
			t.Fatalf("%s answered %s: not a JSON error (%v)", what, res, err)
		}
		if res.status == http.StatusNotFound && strings.HasPrefix(e.Message, "no route") {
			t.Fatalf("%s reached no route: %s", what, res)
		}
	}
	outcome := strconv.Itoa(res.status/100) + "xx"
	if res.status >= 400 {
		var e wire.Error
		_ = json.Unmarshal(res.body, &e)
		outcome = strconv.Itoa(res.status) + " " + e.Code
	}
	p.routed[outcome]++
}

func publicRoute(op probeOp) bool {
	return op.method == http.MethodGet && (op.path == "/healthz" || op.path == "/readyz" || op.path == "/metrics")
}

// healthy fails unless /healthz answers 200.
func (p *probe) healthy(t *testing.T) {
	res, err := p.do(http.MethodGet, "/healthz", nil, false)
	if err != nil || res.status != http.StatusOK {
		t.Fatalf("/healthz answered %v, %v after the request\nserver log:\n%s", res, err, tail(p.srv.Logs()))
	}
}

// verify checks the ledger item by item and that everything the server
// wrote is inside its data directory.
func (p *probe) verify(t *testing.T) {
	for key, want := range p.ledger {
		for _, base := range []string{"/v1/caches/" + probeLedgerName, "/v1/indexes/" + probeLedgerName} {
			res, err := p.do(http.MethodGet, base+"/keys/"+key, nil, true)
			if err != nil || res.status != http.StatusOK || !bytes.Equal(res.body, want) {
				t.Fatalf("ledger item %s/keys/%s: %v, %v (want %d bytes)", base, key, res, err, len(want))
			}
		}
	}
	err := filepath.WalkDir(p.sandbox, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(p.sandbox, path)
		switch top, _, _ := strings.Cut(rel, string(filepath.Separator)); {
		case rel == ".", rel == "tmp", top == "data":
			return nil
		default:
			return fmt.Errorf("%s was written outside the data directory", path)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

func tail(logs string) string {
	if len(logs) > 4000 {
		return logs[len(logs)-4000:]
	}
	return logs
}

// FuzzOpenAPI is the probe suite (see the top of this file). `go test` runs
// its seeds: a few requests for every documented operation and a final
// full check. `make fuzz` runs it (and the other fuzz targets) for a while.
func FuzzOpenAPI(f *testing.F) {
	sp := loadSpec(f)
	ops := probeOperations(f, sp)
	p := startProbe(f)
	p.ops, p.sp = ops, sp
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range ops {
		f.Add(uint16(i), []byte(nil)) // every choice the first (documented, valid) one
		for j := 0; j < 2; j++ {
			b := make([]byte, 64+rng.IntN(192))
			for k := range b {
				b[k] = byte(rng.Uint32())
			}
			f.Add(uint16(i), b)
		}
	}
	f.Add(uint16(probeVerifySel), []byte(nil))
	f.Fuzz(func(t *testing.T, sel uint16, data []byte) {
		if sel == probeVerifySel {
			p.healthy(t)
			p.verify(t)
			t.Logf("answers so far: %v", p.routed)
			return
		}
		op := ops[int(sel)%len(ops)]
		g := &gen{data: data, sp: sp}
		p.check(t, op, g.request(op))
		p.healthy(t)
		if p.calls++; p.calls%probeCheckEvery == 0 {
			p.verify(t)
		}
	})
}
