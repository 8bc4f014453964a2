package cacheserver_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

func startServer(t *testing.T, args ...string) (*testserver.Server, *client.Client) {
	t.Helper()
	srv := testserver.Start(t, testserver.Options{Args: args})
	c, err := client.New(srv.URL, client.Options{Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	return srv, c
}

func TestKeyOperationsOverHTTP(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	cache := c.Cache("")

	keys := []kv.Key{
		kv.TextKey("plain"), kv.TextKey("with/slash and spaces?&#%"), kv.TextKey("ünïcødé"),
		kv.BytesKey([]byte{0, 1, 2, 0xff, '/'}), kv.IntKey(-42), kv.FloatKey(2.5),
		kv.PickleKey([]byte("\x80\x05\x95")), kv.TextKey(""), kv.TextKey("/"), kv.BytesKey(nil),
		kv.TextKey("."), kv.TextKey(".."), kv.TextKey("http://example.com/a?b#c"),
	}
	values := []kv.Value{
		kv.Text("hello"), kv.Bytes([]byte{0, 0xfe}), kv.Int(-7), kv.Float(0.25),
		kv.Pickle([]byte("\x80\x05N.")), kv.Bytes(bytes.Repeat([]byte("big"), 20000)), kv.Text(""),
	}
	for i, k := range keys {
		v := values[i%len(values)]
		if err := cache.Set(ctx, k, v, kv.SetOptions{Tag: kv.TextKey("t"), Expire: kv.ExpireAfter(time.Hour)}); err != nil {
			t.Fatalf("Set(%s): %v", k, err)
		}
		it, ok, err := cache.Get(ctx, k)
		if err != nil || !ok {
			t.Fatalf("Get(%s) = %v, %v", k, ok, err)
		}
		if !it.Value.Equal(v) {
			t.Errorf("Get(%s) value = %s, want %s", k, it.Value, v)
		}
		if !it.Tag.Equal(kv.TextKey("t")) || it.ExpireTime == 0 {
			t.Errorf("Get(%s) metadata = tag %s expire %v", k, it.Tag, it.ExpireTime)
		}
		if ok, err := cache.Contains(ctx, k); err != nil || !ok {
			t.Errorf("Contains(%s) = %v, %v", k, ok, err)
		}
	}

	if added, err := cache.Add(ctx, kv.TextKey("plain"), kv.Text("x"), kv.SetOptions{}); err != nil || added {
		t.Fatalf("Add on live key = %v, %v; want false", added, err)
	}
	if added, err := cache.Add(ctx, kv.TextKey("fresh"), kv.Text("x"), kv.SetOptions{}); err != nil || !added {
		t.Fatalf("Add on new key = %v, %v; want true", added, err)
	}
	if ok, err := cache.Touch(ctx, kv.TextKey("fresh"), kv.ExpireAfter(time.Minute)); err != nil || !ok {
		t.Fatalf("Touch = %v, %v", ok, err)
	}
	if ok, err := cache.Touch(ctx, kv.TextKey("nope"), kv.ExpireAfter(time.Minute)); err != nil || ok {
		t.Fatalf("Touch missing = %v, %v", ok, err)
	}

	n, err := cache.Incr(ctx, kv.TextKey("counter"), kv.Int(5), kv.Int(10))
	if err != nil || !n.Equal(kv.Int(15)) {
		t.Fatalf("Incr = %s, %v", n, err)
	}
	n, err = cache.Decr(ctx, kv.TextKey("counter"), kv.Float(0.5), kv.Int(0))
	if err != nil || !n.Equal(kv.Float(14.5)) {
		t.Fatalf("Decr = %s, %v", n, err)
	}
	if _, err := cache.Incr(ctx, kv.TextKey("missing"), kv.Int(1), kv.Value{}); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Incr missing without default: %v, want ErrNotFound", err)
	}
	if _, err := cache.Incr(ctx, kv.TextKey("plain"), kv.Int(1), kv.Int(0)); !errors.Is(err, client.ErrNotNumeric) {
		t.Fatalf("Incr on text: %v, want ErrNotNumeric", err)
	}

	it, ok, err := cache.Pop(ctx, kv.TextKey("fresh"))
	if err != nil || !ok || !it.Value.Equal(kv.Text("x")) {
		t.Fatalf("Pop = %+v %v %v", it, ok, err)
	}
	if _, ok, _ := cache.Get(ctx, kv.TextKey("fresh")); ok {
		t.Fatal("popped key still there")
	}
	if del, err := cache.Delete(ctx, kv.TextKey("plain")); err != nil || !del {
		t.Fatalf("Delete = %v, %v", del, err)
	}
	if del, err := cache.Delete(ctx, kv.TextKey("plain")); err != nil || del {
		t.Fatalf("second Delete = %v, %v", del, err)
	}
	if removed, err := cache.Evict(ctx, kv.TextKey("t")); err != nil || removed != int64(len(keys)-1) {
		t.Fatalf("Evict = %d, %v; want %d", removed, err, len(keys)-1)
	}
}

func TestExpireZeroIsDeadAndNoneIsForever(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	cache := c.Cache("")
	if err := cache.Set(ctx, kv.TextKey("dead"), kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfter(0)}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := cache.Get(ctx, kv.TextKey("dead")); ok || err != nil {
		t.Fatalf("expire=0 item readable: %v %v", ok, err)
	}
	if err := cache.Set(ctx, kv.TextKey("alive"), kv.Int(1), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	it, ok, err := cache.Get(ctx, kv.TextKey("alive"))
	if !ok || err != nil || it.ExpireTime != 0 {
		t.Fatalf("no-expiry item: %+v %v %v", it, ok, err)
	}
}

func TestBatchOperations(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	cache := c.Cache("batch/nested")
	big := bytes.Repeat([]byte{7}, 100_000)
	items := []client.SetItem{
		{Key: kv.TextKey("a"), Value: kv.Text("A")},
		{Key: kv.BytesKey([]byte{0, 1}), Value: kv.Bytes(big), Opts: kv.SetOptions{Tag: kv.BytesKey([]byte{9})}},
		{Key: kv.IntKey(3), Value: kv.Int(33), Opts: kv.SetOptions{Expire: kv.ExpireAfter(time.Hour)}},
		{Key: kv.TextKey("bad"), Value: kv.Value{Type: kv.ValueText, Data: []byte{0xff}}},
	}
	res, err := cache.SetMany(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	if res.Stored != 3 || len(res.Failed) != 1 || res.Failed[0].Index != 3 || res.Failed[0].Error != wire.CodeBadValue {
		t.Fatalf("SetMany = %+v", res)
	}
	got, err := cache.GetMany(ctx, []kv.Key{kv.TextKey("a"), kv.TextKey("missing"), kv.BytesKey([]byte{0, 1}), kv.IntKey(3)})
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].Found || !got[0].Value.Equal(kv.Text("A")) || got[1].Found ||
		!got[2].Found || !bytes.Equal(got[2].Value.Data, big) || !got[2].Tag.Equal(kv.BytesKey([]byte{9})) ||
		!got[3].Value.Equal(kv.Int(33)) || got[3].ExpireTime == 0 {
		t.Fatalf("GetMany = %+v", got)
	}
	del, err := cache.DeleteMany(ctx, []kv.Key{kv.TextKey("a"), kv.TextKey("missing")})
	if err != nil || len(del) != 2 || !del[0] || del[1] {
		t.Fatalf("DeleteMany = %v, %v", del, err)
	}
	// The main cache does not see the named cache's items.
	if _, ok, _ := c.Cache("").Get(ctx, kv.IntKey(3)); ok {
		t.Fatal("named cache leaked into the main cache")
	}
}

func TestLargeValueStreamsBothWays(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	cache := c.Cache("")
	const size = 64 << 20
	src := io.LimitReader(&pattern{}, size)
	h := sha256.New()
	if err := cache.Set(ctx, kv.TextKey("huge"), kv.Value{Type: kv.ValueBytes},
		kv.SetOptions{Body: io.TeeReader(src, h)}); err != nil {
		t.Fatal(err)
	}
	want := h.Sum(nil)
	st, ok, err := cache.Open(ctx, kv.TextKey("huge"))
	if err != nil || !ok {
		t.Fatalf("Open = %v %v", ok, err)
	}
	defer st.Close()
	if st.Size != size {
		t.Fatalf("Content-Length = %d, want %d", st.Size, size)
	}
	h2 := sha256.New()
	if n, err := io.Copy(h2, st); err != nil || n != size {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	if !bytes.Equal(h2.Sum(nil), want) {
		t.Fatal("streamed value differs")
	}
}

// pattern is an endless deterministic byte stream.
type pattern struct{ n byte }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = p.n
		p.n = p.n*31 + 7
	}
	return len(b), nil
}

func TestAuthAndPublicEndpoints(t *testing.T) {
	srv, _ := startServer(t)
	get := func(path, token string) int {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized {
			var e wire.Error
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Code != wire.CodeUnauthorized {
				t.Errorf("401 body = %+v, %v", e, err)
			}
			if resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		}
		return resp.StatusCode
	}
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/v1/keys/x", "", 401},
		{"/v1/keys/x", "wrong", 401},
		{"/v1/keys/x", srv.Token, 404},
		{"/v1/info", "", 401},
		{"/healthz", "", 200},
		{"/readyz", "", 200},
		{"/metrics", "", 200},
	} {
		if got := get(tc.path, tc.token); got != tc.want {
			t.Errorf("GET %s with token %q = %d, want %d", tc.path, tc.token, got, tc.want)
		}
	}
}

func TestBadInputGetsClear4xx(t *testing.T) {
	srv, c := startServer(t, "--max-key-bytes", "100", "--max-value-bytes", "1000")
	ctx := context.Background()
	do := func(method, path, vtype, body string) (int, wire.Error) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+srv.Token)
		if vtype != "" {
			req.Header.Set(wire.HeaderValueType, vtype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e wire.Error
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e
	}
	for _, tc := range []struct {
		method, path, vtype, body string
		status                    int
		code                      string
	}{
		{"PUT", "/v1/keys/" + strings.Repeat("k", 101), "", "v", 400, wire.CodeKeyTooLarge},
		{"PUT", "/v1/keys/k", "", strings.Repeat("v", 1001), 413, wire.CodeValueTooLarge},
		{"PUT", "/v1/keys/k", "int", "12x", 400, wire.CodeBadValue},
		{"PUT", "/v1/keys/k", "int", "1.5", 400, wire.CodeBadValue},
		{"PUT", "/v1/keys/k", "complex", "1", 400, wire.CodeBadValue},
		{"PUT", "/v1/keys/k?kt=int", "", "v", 400, wire.CodeBadKey},
		{"PUT", "/v1/keys/k?kt=weird", "", "v", 400, wire.CodeBadKey},
		{"PUT", "/v1/keys/k?expire=soon", "", "v", 400, wire.CodeBadRequest},
		// A malformed pair is refused, not dropped (the item would lose
		// its expiry or tag).
		{"PUT", "/v1/keys/k?expire=%ZZ", "", "v", 400, wire.CodeBadRequest},
		{"PUT", "/v1/keys/k?expire=5&tag=%ZZ", "", "v", 400, wire.CodeBadRequest},
		{"PUT", "/v1/keys/k?expire=1;tag=x", "", "v", 400, wire.CodeBadRequest},
		{"PUT", "/v1/keys/%FF", "", "v", 400, wire.CodeBadKey},
		{"PUT", "/v1/keys/k", "text", "\xff", 400, wire.CodeBadValue},
		{"POST", "/v1/keys/k/incr?delta=x", "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/indexes/ix/push?prefix=" + strings.Repeat("p", 85), "", "v", 400, wire.CodeKeyTooLarge},
		// Beyond 64 bits: an overflow, not a float that lost its low digits.
		{"POST", "/v1/keys/k/incr?delta=18446744073709551616", "", "", 409, wire.CodeOverflow},
		{"POST", "/v1/keys/k/incr?default=1180591620717411303424", "", "", 409, wire.CodeOverflow},
		{"POST", "/v1/keys/k/decr?delta=-9223372036854775809", "", "", 409, wire.CodeOverflow},
		{"PUT", "/v1/keys/k", "int", "9223372036854775808", 400, wire.CodeBadValue},
		{"GET", "/v1/caches/..%2F..%2Fetc/keys/k", "", "", 400, wire.CodeBadName},
		{"GET", "/v1/caches/%2Fabs/keys/k", "", "", 400, wire.CodeBadName},
		// A nested name on another collection's own files.
		{"GET", "/v1/caches/x%2Fcache.db/keys/k", "", "", 400, wire.CodeBadName},
		{"GET", "/v1/indexes/y%2Fcache.db", "", "", 400, wire.CodeBadName},
		{"GET", "/v1/deques/q%2Fab", "", "", 400, wire.CodeBadName},
		{"PATCH", "/v1/settings", "", `{"eviction_policy":"random"}`, 400, wire.CodeBadSetting},
		{"PATCH", "/v1/settings", "", `{"sqlite_mmap_size":1}`, 400, wire.CodeBadSetting},
		{"PATCH", "/v1/settings", "", `{"size_limit":-1}`, 400, wire.CodeBadSetting},
		{"PATCH", "/v1/settings", "", `not json`, 400, wire.CodeBadRequest},
		{"POST", "/v1/batch/get", "", `{"keys":[{"key":"!!","kt":"bytes"}]}`, 400, wire.CodeBadKey},
		{"POST", "/v1/batch/set", "", "{\"key\":\"a\",\"len\":5}\nab", 400, wire.CodeBadRequest},
		{"GET", "/v1/nope", "", "", 404, wire.CodeNotFound},
	} {
		status, e := do(tc.method, tc.path, tc.vtype, tc.body)
		if status != tc.status || e.Code != tc.code || e.Message == "" {
			t.Errorf("%s %s (%s %q) = %d %+v, want %d %s", tc.method, tc.path, tc.vtype, tc.body, status, e, tc.status, tc.code)
		}
	}
	// Nothing of the rejected requests was stored.
	info, err := c.Cache("").Info(ctx)
	if err != nil || info.Count != 0 {
		t.Fatalf("after rejected requests: count %d, %v", info.Count, err)
	}
}

// TestLongIntegerOfAFloatValue: a float value may be written as a long
// integer; it is the float, while an int value or an incr delta that long
// is refused (TestBadInputGetsClear4xx).
func TestLongIntegerOfAFloatValue(t *testing.T) {
	srv, c := startServer(t)
	req, _ := http.NewRequest("PUT", srv.URL+"/v1/keys/f", strings.NewReader("100000000000000000000"))
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	req.Header.Set(wire.HeaderValueType, "float")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT a float written as a long integer: %s", resp.Status)
	}
	it, ok, err := c.Cache("").Get(context.Background(), kv.TextKey("f"))
	if err != nil || !ok || it.Value.Type != kv.ValueFloat || it.Value.Float != 1e20 {
		t.Fatalf("read back %+v %v %v, want the float 1e20", it.Value, ok, err)
	}
}

func TestRuntimeSettingsPersistAcrossRestart(t *testing.T) {
	ctx := context.Background()
	srv, c := startServer(t)
	cache := c.Cache("")
	want := settings.Settings{
		EvictionPolicy: settings.Ptr(settings.PolicyLeastRecentlyUsed), CullLimit: settings.Ptr[int64](3),
		Statistics: settings.Ptr(true), TagIndex: settings.Ptr(true), SizeLimit: settings.Ptr[int64](8 << 20),
	}
	if _, err := cache.UpdateSettings(ctx, want); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	srv.Restart(t)
	got, err := cache.Settings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := want.Diff(got); !d.IsZero() {
		t.Fatalf("settings after restart = %v", got)
	}
}

func TestExpireBeyondDurationRange(t *testing.T) {
	ctx := context.Background()
	_, c := startServer(t)
	cache := c.Cache("")
	if err := cache.Set(ctx, kv.TextKey("forever-ish"), kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfterSeconds(1e10)}); err != nil {
		t.Fatal(err)
	}
	it, ok, err := cache.Get(ctx, kv.TextKey("forever-ish"))
	if err != nil || !ok || it.ExpireTime < 1e10 {
		t.Fatalf("item with a 1e10 s expiry: %+v %v %v", it, ok, err)
	}
}

func TestDotSegmentsAreRefusedNotRedirected(t *testing.T) {
	srv, c := startServer(t)
	ctx := context.Background()
	for _, p := range []string{"/v1/caches/../keys/k", "/v1/caches/./keys/k", "/v1/keys/k/..", "/v1//keys/k"} {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+p, strings.NewReader("v"))
		req.Header.Set("Authorization", "Bearer "+srv.Token)
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("PUT %s = %d, want 400", p, resp.StatusCode)
		}
	}
	// The client escapes dots: a cache named ".." is refused as a name,
	// never written into the root cache.
	if err := c.Cache("..").Set(ctx, kv.TextKey("k"), kv.Text("v"), kv.SetOptions{}); err == nil {
		t.Fatal(`Cache("..").Set succeeded`)
	}
	if _, ok, _ := c.Cache("").Get(ctx, kv.TextKey("k")); ok {
		t.Fatal(`Cache("..") wrote into the root cache`)
	}
}
