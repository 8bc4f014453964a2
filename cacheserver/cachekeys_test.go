package cacheserver_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// A named cache is python-diskcache's Cache: queues (push, pull, peek,
// peekitem) and its keys listed in insertion and sorted order, in pages.
func TestNamedCacheQueuesAndKeys(t *testing.T) {
	srv, _ := startServer(t)
	call := func(method, path, body string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+srv.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header, string(b)
	}
	want := func(method, path, body string, status int, answer string) http.Header {
		t.Helper()
		got, h, b := call(method, path, body)
		if got != status || (answer != "" && b != answer) {
			t.Fatalf("%s %s = %d %q, want %d %q", method, path, got, b, status, answer)
		}
		return h
	}
	const q = "/v1/caches/jobs"
	// An empty or missing cache: reads and takes say empty and create nothing.
	want("POST", q+"/pull", "", 404, "")
	want("GET", q+"/peek?side=back", "", 404, "")
	want("GET", q+"/peekitem", "", 404, "")
	want("GET", q+"/keys", "", 200, "")
	if _, err := os.Stat(filepath.Join(srv.DataDir, "cache", "jobs")); !os.IsNotExist(err) {
		t.Fatalf("a read of a missing cache made its directory: %v", err)
	}

	for _, v := range []string{"a", "b", "c"} {
		want("POST", q+"/push?prefix=p", v, 200, "")
	}
	want("POST", q+"/push?side=front", "first", 200, `{"key":"500000000000000","kt":"int"}`+"\n")
	h := want("POST", q+"/pull?prefix=p", "", 200, "a")
	if k := h.Get(wire.HeaderKey); k != "p-500000000000000" {
		t.Fatalf("pulled key %q", k)
	}
	want("GET", q+"/peek?prefix=p&side=back", "", 200, "c")
	want("GET", q+"/peek?prefix=p&side=back", "", 200, "c") // peek leaves it
	want("GET", q+"/peekitem", "", 200, "first")            // the last inserted
	want("GET", q+"/peekitem?last=false", "", 200, "b")

	// Keys: insertion order b, c, first (a was pulled); sorted: the int,
	// then the texts.
	for _, k := range []string{"z", "y"} {
		want("PUT", q+"/keys/"+k, "v", 204, "")
	}
	list := func(query string, limit int) []string {
		t.Helper()
		keys, _ := listAll(t, srv.URL, srv.Token, q+"/keys", limit, query, nil)
		return keys
	}
	for _, tc := range []struct {
		query string
		want  string
	}{
		{"", "p-500000000000001 p-500000000000002 500000000000000 z y"},
		{"&reverse=true", "y z 500000000000000 p-500000000000002 p-500000000000001"},
		{"&order=sorted", "500000000000000 p-500000000000001 p-500000000000002 y z"},
		{"&order=sorted&reverse=true", "z y p-500000000000002 p-500000000000001 500000000000000"},
	} {
		for _, limit := range []int{1, 2, 5, 100} {
			if got := strings.Join(list(tc.query, limit), " "); got != tc.want {
				t.Errorf("keys%s, limit %d = %s, want %s", tc.query, limit, got, tc.want)
			}
		}
	}

	// Bad input: 400 with a JSON body. A cursor of one order is not one of
	// the other.
	insertionCursor := want("GET", q+"/keys?limit=1", "", 200, "").Get(wire.HeaderNextCursor)
	sortedCursor := want("GET", q+"/keys?limit=1&order=sorted", "", 200, "").Get(wire.HeaderNextCursor)
	negative := base64.RawURLEncoding.EncodeToString([]byte("rk1.0.0.0.-1.0"))
	noSuchDatabase := base64.RawURLEncoding.EncodeToString([]byte("rk1.0.0.99.0.0"))
	for _, path := range []string{q + "/keys?order=random", q + "/keys?cursor=nonsense", "/v1/keys?cursor=" + negative,
		"/v1/keys?cursor=" + noSuchDatabase,
		"/v1/keys?order=sorted", "/v1/keys?cursor=" + insertionCursor,
		q + "/keys?order=sorted&cursor=" + insertionCursor, q + "/keys?cursor=" + sortedCursor,
		q + "/keys?limit=0", q + "/keys?reverse=maybe", q + "/peekitem?last=perhaps", q + "/peek?side=middle"} {
		got, _, b := call("GET", path, "")
		var e wire.Error
		if got != 400 || json.Unmarshal([]byte(b), &e) != nil || e.Code != wire.CodeBadRequest || e.Message == "" {
			t.Errorf("GET %s = %d %s, want 400 bad_request", path, got, b)
		}
	}
}

// listAll reads every page of a key listing (GET url+path with query),
// limit keys a page, with extra request headers.
func listAll(t *testing.T, base, token, path string, limit int, query string, header http.Header) ([]string, int) {
	t.Helper()
	var keys []string
	cursor := ""
	for pages := 1; pages < 10000; pages++ {
		u := base + path + "?limit=" + strconv.Itoa(limit) + query
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s = %d %s (%v)", u, resp.StatusCode, b, err)
		}
		rr := wire.NewRecordReader(strings.NewReader(string(b)))
		n := 0
		for {
			rec, _, err := rr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, rec.Key)
			n++
		}
		if n > limit {
			t.Fatalf("%d keys in a page of %d", n, limit)
		}
		if cursor = resp.Header.Get(wire.HeaderNextCursor); cursor == "" {
			return keys, pages
		}
	}
	t.Fatal("no end to the pages")
	return nil, 0
}

// The server's cache lists its keys database by database (a FanoutCache's
// iteration), in pages, with a Redis-style match on text keys.
func TestRootKeys(t *testing.T) {
	srv, c := startServer(t, "--fanout", "4")
	ctx := context.Background()
	want := map[string]bool{}
	for i := 0; i < 60; i++ {
		k := "user:" + strconv.Itoa(i)
		if err := c.Cache("").Set(ctx, kv.TextKey(k), kv.Int(1), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		want[k] = true
	}
	for _, k := range []string{"x*y", "x?y", "x[y"} {
		if err := c.Cache("").Set(ctx, kv.TextKey(k), kv.Int(1), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	all := func(query string, limit int) []string {
		keys, _ := listAll(t, srv.URL, srv.Token, "/v1/keys", limit, query, nil)
		return keys
	}
	forward := all("", 1000)
	if len(forward) != 63 {
		t.Fatalf("%d keys listed, want 63", len(forward))
	}
	for _, limit := range []int{1, 5} {
		if got := all("", limit); !slices.Equal(got, forward) {
			t.Errorf("limit %d: %v, want %v", limit, got, forward)
		}
		for _, yes := range []string{"true", "tRuE", "T", "On"} { // booleans in any case
			got := all("&reverse="+yes, limit)
			slices.Reverse(got)
			if !slices.Equal(got, forward) {
				t.Errorf("reverse=%s, limit %d: the reverse of %v", yes, limit, got)
			}
		}
	}
	for _, tc := range []struct{ match, want string }{
		{"user:1?", "user:10 user:11 user:12 user:13 user:14 user:15 user:16 user:17 user:18 user:19"},
		{"user:[2-3]", "user:2 user:3"},
		{"user:[^0-8]", "user:9"},
		{`x\*y`, "x*y"}, {`x\?y`, "x?y"}, {`x\[y`, "x[y"}, {"x?y", "x*y x?y x[y"},
		{"nothing*", ""},
	} {
		got := all("&match="+url.QueryEscape(tc.match), 3)
		slices.Sort(got)
		if strings.Join(got, " ") != tc.want {
			t.Errorf("match %q: %v, want %s", tc.match, got, tc.want)
		}
	}
}

// On three shards a listing through any one of them goes from shard to
// shard: every key once, forward and reverse, whatever the page size; with
// Diskcache-Scope: shard each lists its own, which together are the same.
func TestRootKeysAcrossShards(t *testing.T) {
	cl := testserver.StartCluster(t, 3, testserver.Options{})
	tok := cl.Shards[0].Token
	ctx := context.Background()
	c := dataClient(t, cl.URLs[0], tok)
	var want []string
	for i := 0; i < 90; i++ {
		k := "k" + strconv.Itoa(i)
		if err := c.Cache("").Set(ctx, kv.TextKey(k), kv.Int(1), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		want = append(want, k)
	}
	slices.Sort(want)
	var parts []string
	for _, u := range cl.URLs {
		own, _ := listAll(t, u, tok, "/v1/keys", 1000, "", http.Header{wire.HeaderScope: {"shard"}})
		if len(own) == 0 || len(own) == len(want) {
			t.Fatalf("shard %s holds %d of %d keys", u, len(own), len(want))
		}
		parts = append(parts, own...)
	}
	slices.Sort(parts)
	if !slices.Equal(parts, want) {
		t.Fatalf("the shards' own parts = %v", parts)
	}
	for i, u := range cl.URLs {
		for _, limit := range []int{7, 1000} {
			for _, reverse := range []bool{false, true} {
				q := ""
				if reverse {
					q = "&reverse=true"
				}
				got, pages := listAll(t, u, tok, "/v1/keys", limit, q, nil)
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Errorf("through shard %d, limit %d, reverse %v: %d keys %v", i, limit, reverse, len(got), got)
				}
				if limit == 1000 && pages < 3 {
					t.Errorf("through shard %d: %d pages for 3 shards", i, pages)
				}
			}
		}
	}
}
