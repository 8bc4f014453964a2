package cacheserver_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
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
		var keys []string
		cursor := ""
		for pages := 0; pages < 20; pages++ {
			path := q + "/keys?limit=" + strconv.Itoa(limit) + query
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			got, h, b := call("GET", path, "")
			if got != 200 {
				t.Fatalf("GET %s = %d %s", path, got, b)
			}
			rr := wire.NewRecordReader(strings.NewReader(b))
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
			if cursor = h.Get(wire.HeaderNextCursor); cursor == "" {
				return keys
			}
		}
		t.Fatal("no end to the pages")
		return nil
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
	for _, path := range []string{q + "/keys?order=random", q + "/keys?cursor=nonsense",
		q + "/keys?order=sorted&cursor=" + insertionCursor, q + "/keys?cursor=" + sortedCursor,
		q + "/keys?limit=0", q + "/keys?reverse=maybe", q + "/peekitem?last=perhaps", q + "/peek?side=middle"} {
		got, _, b := call("GET", path, "")
		var e wire.Error
		if got != 400 || json.Unmarshal([]byte(b), &e) != nil || e.Code != wire.CodeBadRequest || e.Message == "" {
			t.Errorf("GET %s = %d %s, want 400 bad_request", path, got, b)
		}
	}
}
