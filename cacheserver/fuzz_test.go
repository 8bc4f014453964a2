package cacheserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/cacheserver"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// codeStatus is the status each error code is answered with, as
// docs/api/openapi.yaml documents it.
var codeStatus = map[string]int{
	wire.CodeBadRequest:      400,
	wire.CodeBadKey:          400,
	wire.CodeKeyTooLarge:     400,
	wire.CodeBadValue:        400,
	wire.CodeBadName:         400,
	wire.CodeBadSetting:      400,
	wire.CodeValueTooLarge:   413,
	wire.CodeNotFound:        404,
	wire.CodeEmpty:           404,
	wire.CodeIndexOutOfRange: 404,
	wire.CodeNotNumeric:      409,
	wire.CodeOverflow:        409,
	wire.CodeNotOwner:        409,
	wire.CodeWrongType:       409,
	wire.CodeUnauthorized:    401,
	wire.CodeRateLimited:     429,
	wire.CodeUpgradeRequired: 426,
}

// fuzzServer is an in-process server for the fuzz targets. Under -fuzz a
// worker sends it many requests; it is replaced now and then so that the
// named caches the requests open (each keeps its files open) stay few.
type fuzzServer struct {
	root string // parent of every data directory

	mu   sync.Mutex
	srv  *cacheserver.Server
	dir  string
	uses int
}

const (
	fuzzMaxKey    = 256
	fuzzMaxValue  = 64 << 10
	fuzzFileValue = 1 << 10 // disk_min_file_size: small, so values often go to files
)

func newFuzzServer(f *testing.F) *fuzzServer {
	fz := &fuzzServer{root: f.TempDir()}
	f.Cleanup(func() {
		fz.mu.Lock()
		defer fz.mu.Unlock()
		if fz.srv != nil {
			_ = fz.srv.Close()
		}
	})
	return fz
}

// server returns the current server, opening a new one every 200 uses.
func (fz *fuzzServer) server(t *testing.T) (*cacheserver.Server, string) {
	fz.mu.Lock()
	defer fz.mu.Unlock()
	if fz.srv == nil || fz.uses >= 200 {
		if fz.srv != nil {
			_ = fz.srv.Close()
			_ = os.RemoveAll(fz.dir)
		}
		dir, err := os.MkdirTemp(fz.root, "data-")
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := cacheserver.LoadConfig([]string{
			"--data-dir", dir, "--insecure-no-auth", "--fanout", "2",
			"--max-key-bytes", fmt.Sprint(fuzzMaxKey), "--max-value-bytes", fmt.Sprint(fuzzMaxValue),
			"--disk-min-file-size", fmt.Sprint(fuzzFileValue),
		}, func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		srv, err := cacheserver.New(context.Background(), cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		fz.srv, fz.dir, fz.uses = srv, dir, 0
	}
	fz.uses++
	return fz.srv, fz.dir
}

// response is what serve recorded.
type response struct {
	status int
	header http.Header
	body   []byte
}

// serve sends a request to the handler in process and checks what every
// answer must satisfy: the handler does not panic, does not cut off a
// response it has started (http.ErrAbortHandler, which a real server turns
// into a dropped connection), never answers 5xx, and answers every 4xx with
// a JSON error body whose code is documented with that status. It returns
// nil when the request cannot be sent at all (a URL or header no HTTP
// client could send).
func serve(t *testing.T, h http.Handler, method, target string, header http.Header, body []byte, chunked bool) *response {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		return nil
	}
	for _, vs := range header {
		for _, v := range vs {
			if !validHeaderValue(v) {
				return nil
			}
		}
	}
	req := httptest.NewRequest(method, "http://cacheserver/", bytes.NewReader(body))
	req.URL = u
	req.RequestURI = u.RequestURI()
	req.Header = header
	req.ContentLength = int64(len(body))
	if chunked {
		req.ContentLength = -1
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	rec := httptest.NewRecorder()
	aborted := func() (aborted bool) {
		defer func() {
			if p := recover(); p != nil {
				if p != http.ErrAbortHandler {
					panic(fmt.Sprintf("%s %s panicked: %v", method, target, p))
				}
				aborted = true
			}
		}()
		h.ServeHTTP(rec, req)
		return false
	}()
	res := &response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	if aborted {
		t.Fatalf("%s %s: the response was cut after it started (%d)", method, target, res.status)
	}
	switch {
	case res.status >= 500:
		t.Fatalf("%s %s (%v, %q) answered %d: %s", method, target, header, truncateBody(body), res.status, res.body)
	case res.status >= 300 && res.status < 400:
		// net/http.ServeMux redirects paths with literal "." or ".."
		// segments or "//" to their cleaned form (which clients must not
		// send: keys "." and ".." go as %2E); nothing else may redirect.
		if escaped := u.EscapedPath(); path.Clean(escaped) == escaped {
			t.Fatalf("%s %s answered %d, but its path is clean", method, target, res.status)
		}
	case res.status >= 400 && method != http.MethodHead:
		var e wire.Error
		dec := json.NewDecoder(bytes.NewReader(res.body))
		if ct := res.header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %s: %d with Content-Type %q: %q", method, target, res.status, ct, res.body)
		}
		if err := dec.Decode(&e); err != nil || e.Code == "" || e.Message == "" {
			t.Fatalf("%s %s: %d with body %q: not a JSON error (%v)", method, target, res.status, res.body, err)
		}
		if want, ok := codeStatus[e.Code]; !ok || want != res.status {
			t.Fatalf("%s %s: %d with code %q, which is documented with status %d", method, target, res.status, e.Code, want)
		}
	}
	return res
}

func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func truncateBody(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// keyRoute is a route of /v1/keys/{key} for the fuzz target to pick.
type keyRoute struct {
	method, suffix string
	hasBody        bool
}

var keyRoutes = []keyRoute{
	{"GET", "", false}, {"HEAD", "", false}, {"PUT", "", true}, {"DELETE", "", false},
	{"POST", "/add", true}, {"POST", "/touch", false}, {"POST", "/pop", false},
	{"POST", "/incr", false}, {"POST", "/decr", false}, {"POST", "/replace", true},
}

// FuzzKeyRoutes sends arbitrary keys, key kinds, query strings, value
// types and bodies to the single-key routes of the server's cache and of a
// named cache. Besides what serve checks, a value PUT with 204 reads back
// (GET) with the same type and bytes.
func FuzzKeyRoutes(f *testing.F) {
	fz := newFuzzServer(f)
	f.Add(uint8(2), "k", "", "", "bytes", []byte("v"), false)
	f.Add(uint8(2), "with/slash and space?&#%", "text", "expire=60&tag=t", "text", []byte("hello"), false)
	f.Add(uint8(2), "\x00\xff", "bytes", "tag=%FF&tt=bytes", "pickle", []byte("\x80\x05N."), true)
	f.Add(uint8(2), "-42", "int", "expire=-1", "int", []byte("12"), false)
	f.Add(uint8(2), "2.5", "float", "", "float", []byte(" 1.5e3 "), false)
	f.Add(uint8(2), "big", "", "", "bytes", bytes.Repeat([]byte("x"), fuzzFileValue+1), false)
	f.Add(uint8(2), "stream", "", "", "text", bytes.Repeat([]byte("é"), 700), true)
	f.Add(uint8(2), "huge", "", "", "bytes", bytes.Repeat([]byte("x"), fuzzMaxValue+1), false)
	f.Add(uint8(2), strings.Repeat("k", fuzzMaxKey+1), "", "", "", []byte("v"), false)
	f.Add(uint8(2), "k", "weird", "", "complex", []byte("v"), false)
	f.Add(uint8(2), "k", "", "expire=nan&tag=x&tt=pickle", "", []byte(""), false)
	f.Add(uint8(2), "k", "", "", "text", []byte("\xff"), true)
	f.Add(uint8(2), "k", "", "", "int", []byte("99999999999999999999"), false)
	f.Add(uint8(7), "n", "", "delta=2.5&default=1", "", []byte(nil), false)
	f.Add(uint8(7), "n", "", "delta=9223372036854775807", "", []byte(nil), false)
	f.Add(uint8(8), "n", "", "default=none", "", []byte(nil), false)
	f.Add(uint8(7), "n", "", "delta=x", "", []byte(nil), false)
	f.Add(uint8(5), "k", "", "expire=1e308", "", []byte(nil), false)
	f.Add(uint8(0), "missing", "", "", "", []byte(nil), false)
	f.Add(uint8(1), "k", "int", "", "", []byte(nil), false)
	f.Add(uint8(13), "k", "", "", "", []byte("v"), false)
	f.Add(uint8(11), "..%2F..", "", "", "", []byte("v"), false)
	f.Add(uint8(20), "k", "", "kt=&kt=int", "bytes", []byte("v"), false)
	for _, key := range []string{"", "/", ".", "..", "%2E", "a/../b"} {
		f.Add(uint8(2), key, "", "", "text", []byte("dots"), false)
		f.Add(uint8(11), key, "bytes", "", "", []byte("dots"), false)
	}
	f.Add(uint8(0), "=", "", "ke=base64", "", []byte(nil), false)
	f.Add(uint8(0), "!!", "", "ke=base64", "", []byte(nil), false)
	f.Add(uint8(0), "k", "", "ke=rot13", "", []byte(nil), false)
	f.Fuzz(func(t *testing.T, sel uint8, key, kt, query, vtype string, body []byte, chunked bool) {
		srv, _ := fz.server(t)
		h := srv.Handler()
		route := keyRoutes[int(sel)%len(keyRoutes)]
		prefix := "/v1"
		if sel >= 9 {
			prefix = "/v1/caches/" + url.PathEscape([]string{"named", "a/b", "..", "x y"}[int(sel/9)%4])
		}
		q := query
		if kt != "" {
			q = "kt=" + url.QueryEscape(kt) + "&" + query
		}
		// Keys are written as the clients write them: percent-encoded, "."
		// and ".." as %2E, "" and "/" in base64 (?ke=base64).
		seg, enc := wire.EncodeKeySegment(key)
		if enc != "" {
			q = wire.ParamKeyEncoding + "=" + enc + "&" + q
		}
		target := prefix + "/keys/" + seg + route.suffix + "?" + q
		header := http.Header{}
		if vtype != "" {
			header.Set(wire.HeaderValueType, vtype)
		}
		if !route.hasBody {
			body = nil
		}
		res := serve(t, h, route.method, target, header, body, chunked && route.hasBody)
		if res == nil || route.method != "PUT" || res.status != http.StatusNoContent {
			return
		}
		if u, _ := url.Parse(target); u.Query().Has(wire.ParamExpire) {
			if exp, err := strconv.ParseFloat(u.Query().Get(wire.ParamExpire), 64); err != nil || exp < 3600 {
				return // dead, or may be dead, by the time it is read
			}
		}
		// What was stored reads back.
		got := serve(t, h, "GET", prefix+"/keys/"+seg+"?"+q, http.Header{}, nil, false)
		if got.status != http.StatusOK {
			t.Fatalf("PUT %s answered 204, then GET answered %d: %s", target, got.status, got.body)
		}
		wantType := vtype
		if wantType == "" {
			wantType = "bytes"
		}
		if gt := got.header.Get(wire.HeaderValueType); gt != wantType {
			t.Fatalf("PUT %s as %s reads back as %s", target, wantType, gt)
		}
		switch wantType {
		case "int", "float":
			sent, err := wire.ParseNumber(string(body))
			if err != nil {
				t.Fatalf("PUT %s stored %q, which is not a number", target, body)
			}
			back, err := wire.ParseNumber(string(got.body))
			if err != nil || !back.Equal(sent) && !(wantType == "float" && back.Equal(kv.Float(float64(sent.Int)))) {
				t.Fatalf("PUT %s %s %q reads back as %q", target, wantType, body, got.body)
			}
		default:
			if !bytes.Equal(got.body, body) {
				t.Fatalf("PUT %s (%d bytes) reads back %d different bytes", target, len(body), len(got.body))
			}
		}
	})
}

// FuzzBatchBodies sends arbitrary bodies to batch get, set and delete.
// Besides what serve checks: a batch set that answers 200 accounts for
// every record of its body (stored or failed), a batch get answers a
// well-formed record stream with one record per requested key, and a
// batch delete one boolean per key.
func FuzzBatchBodies(f *testing.F) {
	fz := newFuzzServer(f)
	f.Add(uint8(0), []byte(`{"keys":[{"key":"a"},{"key":"AAH/","kt":"bytes"},{"key":"7","kt":"int"}]}`))
	f.Add(uint8(0), []byte(`{"keys":[]}`))
	f.Add(uint8(0), []byte(`{"keys":[{"key":"!!","kt":"bytes"}]}`))
	f.Add(uint8(0), []byte(`{"keys":[{"key":"a"}],"extra":1}`))
	f.Add(uint8(0), []byte(`{"keys":[{"key":"a"}]} trailing`))
	f.Add(uint8(0), []byte(`not json`))
	f.Add(uint8(1), []byte("{\"key\":\"a\",\"type\":\"text\",\"len\":5}\nhello{\"key\":\"n\",\"kt\":\"int\",\"type\":\"int\",\"len\":2,\"expire\":60}\n42"))
	f.Add(uint8(1), append([]byte("{\"key\":\"big\",\"len\":1500,\"tag\":\"AQ==\",\"tt\":\"bytes\"}\n"), bytes.Repeat([]byte{1}, 1500)...))
	f.Add(uint8(1), []byte("{\"key\":\"a\",\"type\":\"int\",\"len\":3}\nabc{\"key\":\"b\",\"type\":\"complex\",\"len\":0}\n{\"key\":\"c\",\"tt\":\"pickle\",\"tag\":\"x\",\"len\":0}\n"))
	f.Add(uint8(1), []byte("{\"key\":\"a\",\"len\":5}\nab"))
	f.Add(uint8(1), []byte("{\"key\":\"a\",\"len\":-1}\n"))
	f.Add(uint8(1), []byte("{\"key\":\"a\",\"len\":99999999}\n"))
	f.Add(uint8(1), []byte("{\"key\":\"\xff\",\"kt\":\"text\",\"len\":0}\n"))
	f.Add(uint8(2), []byte(`{"keys":[{"key":"a"},{"key":"missing"}]}`))
	f.Add(uint8(4), []byte(`{"keys":[{"key":"a"}]}`))
	f.Fuzz(func(t *testing.T, sel uint8, body []byte) {
		srv, _ := fz.server(t)
		h := srv.Handler()
		prefix := "/v1"
		if sel >= 3 {
			prefix = "/v1/caches/batch"
		}
		op := []string{"get", "set", "delete"}[int(sel)%3]
		ct := "application/json"
		if op == "set" {
			ct = wire.RecordsContentType
		}
		res := serve(t, h, "POST", prefix+"/batch/"+op, http.Header{"Content-Type": {ct}}, body, sel%2 == 1)
		if res == nil || res.status != http.StatusOK {
			return
		}
		switch op {
		case "set":
			var out cacheserver.BatchSetResult
			if err := json.Unmarshal(res.body, &out); err != nil {
				t.Fatalf("batch set 200 body %q: %v", res.body, err)
			}
			n := countRecords(body)
			if n < 0 {
				t.Fatalf("batch set answered 200 to a stream the record reader rejects: %q", truncateBody(body))
			}
			if out.Stored+len(out.Failed) != n {
				t.Fatalf("batch set of %d records: stored %d, failed %d", n, out.Stored, len(out.Failed))
			}
		case "get", "delete":
			var req cacheserver.BatchKeys
			if err := json.Unmarshal(body, &req); err != nil {
				t.Fatalf("batch %s answered 200 to a body that is not JSON: %q", op, truncateBody(body))
			}
			if op == "delete" {
				var out struct {
					Deleted []bool `json:"deleted"`
					Count   int    `json:"count"`
				}
				if err := json.Unmarshal(res.body, &out); err != nil || len(out.Deleted) != len(req.Keys) {
					t.Fatalf("batch delete of %d keys answered %q (%v)", len(req.Keys), res.body, err)
				}
				return
			}
			rr := wire.NewRecordReader(bytes.NewReader(res.body))
			n := 0
			for ; ; n++ {
				rec, v, err := rr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("batch get answered a malformed record stream: %v\n%q", err, res.body)
				}
				if _, err := io.ReadAll(v); err != nil {
					t.Fatalf("batch get record %d: %v", n, err)
				}
				if n < len(req.Keys) && (rec.Key != req.Keys[n].Key && req.Keys[n].Kind == "") {
					t.Fatalf("batch get record %d is for key %q, asked for %q", n, rec.Key, req.Keys[n].Key)
				}
			}
			if n != len(req.Keys) {
				t.Fatalf("batch get of %d keys answered %d records", len(req.Keys), n)
			}
		}
	})
}

// countRecords counts the records of a stream as the server's reader sees
// them, -1 when it rejects the stream.
func countRecords(body []byte) int {
	rr := wire.NewRecordReader(bytes.NewReader(body))
	for n := 0; ; n++ {
		_, v, err := rr.Next()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			return -1
		}
		if _, err := io.Copy(io.Discard, v); err != nil {
			return -1
		}
	}
}

// FuzzNames sends arbitrary cache, deque and index names. Besides what
// serve checks: a name that engine.ValidateName accepts is served (2xx)
// from the database <kind>/<name>/cache.db, one it rejects is 400 bad_name
// (or, for "." and ".." segments, the mux's redirect), and nothing is ever
// created outside the data directory.
func FuzzNames(f *testing.F) {
	fz := newFuzzServer(f)
	for _, name := range []string{"a", "a/b", "sessions/eu/1", "..", ".", "../x", "a/../b", "/abs", "a/", "a//b",
		"back\\slash", "nul\x00", "ünï", strings.Repeat("n", 256), strings.Repeat("n/", 260), "x y"} {
		for sel := uint8(0); sel < 5; sel++ {
			f.Add(sel, name)
		}
	}
	f.Fuzz(func(t *testing.T, sel uint8, name string) {
		srv, dir := fz.server(t)
		h := srv.Handler()
		seg := url.PathEscape(name)
		var method, target, kind string
		var body []byte
		switch sel % 5 {
		case 0:
			method, target, kind = "GET", "/v1/caches/"+seg+"/info", "cache"
		case 1:
			method, target, kind, body = "PUT", "/v1/caches/"+seg+"/keys/k", "cache", []byte("v")
		case 2:
			method, target, kind = "GET", "/v1/deques/"+seg, "deque"
		case 3:
			method, target, kind, body = "POST", "/v1/deques/"+seg+"/push", "deque", []byte("v")
		case 4:
			method, target, kind = "GET", "/v1/indexes/"+seg, "index"
		}
		db := filepath.Join(dir, kind, filepath.FromSlash(name), engine.DBName)
		_, statErr := os.Stat(db)
		existed := statErr == nil
		res := serve(t, h, method, target, http.Header{}, body, false)
		if res == nil {
			return
		}
		valid := engine.ValidateName(name) == nil
		switch {
		case res.status >= 300 && res.status < 400:
			// The mux's redirect of dot segments (see serve).
		case seg == "%2F" && res.status == http.StatusNotFound:
			// Go's ServeMux matches no wildcard to a segment that is exactly
			// %2F: the request never reaches a handler, and the catch-all
			// answers no route (the name "/" is invalid anyway).
			var e wire.Error
			if err := json.Unmarshal(res.body, &e); err != nil || e.Code != wire.CodeNotFound {
				t.Fatalf("%s %s: answered 404 %s, want the no-route error", method, target, res.body)
			}
		case valid && res.status >= 300:
			t.Fatalf("%s %s: valid name %q answered %d: %s", method, target, name, res.status, res.body)
		case valid && method == "GET":
			// A read creates no collection.
			if _, err := os.Stat(db); (err == nil) != existed {
				t.Fatalf("%s %s: valid name %q answered %d; the collection existed before: %v, after: %v", method, target, name, res.status, existed, err)
			}
		case valid:
			// The collection lives in <kind>/<name>, as python-diskcache
			// puts it, and nowhere else.
			if _, err := os.Stat(db); err != nil {
				t.Fatalf("%s %s: valid name %q answered %d, but %v", method, target, name, res.status, err)
			}
		case !valid:
			var e wire.Error
			_ = json.Unmarshal(res.body, &e)
			// A '.' or '..' name is refused for its path (bad_request)
			// before it is looked at as a name (bad_name).
			if res.status != http.StatusBadRequest || (e.Code != wire.CodeBadName && e.Code != wire.CodeBadRequest) {
				t.Fatalf("%s %s: invalid name %q answered %d %s", method, target, name, res.status, res.body)
			}
		}
		// Nothing outside the data directory.
		err := filepath.WalkDir(fz.root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == fz.root {
				return nil
			}
			if rel, _ := filepath.Rel(fz.root, p); !strings.HasPrefix(rel, "data-") {
				return fmt.Errorf("%s was created outside every data directory", p)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s %s (name %q): %v", method, target, name, err)
		}
	})
}

// TestNamesAreNotSQLiteURIs: the engine opens databases through SQLite
// "file:" URIs, where an unescaped '?' would start the query (caches "a?b"
// and "a?c" sharing cache/a), '#' the fragment, and %XX escapes would be
// decoded ("%2e%2e%2f007" opening the root cache's database 007/cache.db).
func TestNamesAreNotSQLiteURIs(t *testing.T) {
	for _, name := range []string{"a?b", "#", "%2e%2e", "%2e%2e%2f007", "100%"} {
		for sel := uint8(0); sel < 5; sel++ {
			t.Run(fmt.Sprintf("%q/%d", name, sel), func(t *testing.T) {
				fz := &fuzzServer{root: t.TempDir()}
				t.Cleanup(func() {
					if fz.srv != nil {
						_ = fz.srv.Close()
					}
				})
				srv, dir := fz.server(t)
				kind := []string{"cache", "cache", "deque", "deque", "index"}[sel]
				// A write: reads create no collection.
				target := map[string]string{"cache": "/v1/caches/", "deque": "/v1/deques/", "index": "/v1/indexes/"}[kind] + url.PathEscape(name)
				method := "PUT"
				if kind == "deque" {
					method, target = "POST", target+"/push"
				} else {
					target += "/keys/k"
				}
				res := serve(t, srv.Handler(), method, target, http.Header{}, []byte("v"), false)
				if res.status >= 300 {
					t.Fatalf("%s %s answered %d", method, target, res.status)
				}
				if _, err := os.Stat(filepath.Join(dir, kind, filepath.FromSlash(name), engine.DBName)); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// FuzzCacheQueuesAndKeys sends arbitrary query strings to a named cache's
// queue and listing routes (push, pull, peek, peekitem, keys) and to the
// server's cache's listing (GET /v1/keys). Besides what
// serve checks, a listing that answers 200 is a well-formed record stream
// of at most its limit keys.
func FuzzCacheQueuesAndKeys(f *testing.F) {
	fz := newFuzzServer(f)
	for _, q := range []string{"", "order=sorted&reverse=true&limit=2", "limit=1&cursor=aXgxLjEuMg",
		"order=sorted&cursor=a3MxLmludC4x", "order=sorted&cursor=a3MxLmJ5dGVzLiEh", "cursor=%FF",
		"limit=0", "limit=99999999999999999999", "prefix=p&side=back", "prefix=%FF", "side=middle",
		"last=false", "expire=1&tag=t", "order=sideways", "match=k*", "match=%5B", "match=%5C",
		"match=%5B%5E", "match=k%5B0-1%5D&reverse=true&limit=1", "order=sorted&match=x", "cursor=cmsxLjAuMC4wLjAuMA"} {
		for sel := uint8(0); sel < 6; sel++ {
			f.Add(sel, q)
		}
	}
	f.Fuzz(func(t *testing.T, sel uint8, query string) {
		srv, _ := fz.server(t)
		h := srv.Handler()
		const p = "/v1/caches/fuzzed"
		for i := 0; i < 3; i++ {
			serve(t, h, "PUT", p+"/keys/k"+strconv.Itoa(i), http.Header{}, []byte("v"), false)
		}
		method, suffix, body := []string{"GET", "POST", "POST", "GET", "GET", "GET"}[sel%6], []string{"/keys", "/push", "/pull", "/peek", "/peekitem", "/keys"}[sel%6], []byte(nil)
		if suffix == "/push" {
			body = []byte("pushed")
		}
		target := p + suffix
		if sel%6 == 5 {
			target = "/v1/keys" // the server's cache
		}
		res := serve(t, h, method, target+"?"+query, http.Header{}, body, false)
		if res == nil || suffix != "/keys" || res.status != http.StatusOK {
			return
		}
		rr := wire.NewRecordReader(bytes.NewReader(res.body))
		n := 0
		for {
			_, _, err := rr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("GET %s?%s: a listing that does not parse: %v", p+suffix, query, err)
			}
			n++
		}
		if limit, err := strconv.Atoi(mustParseQuery(query).Get("limit")); err == nil && n > limit {
			t.Fatalf("GET %s?%s: %d keys", p+suffix, query, n)
		}
	})
}

func mustParseQuery(q string) url.Values {
	v, _ := url.ParseQuery(q)
	return v
}
