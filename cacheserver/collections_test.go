package cacheserver_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

func TestCollectionBadInput(t *testing.T) {
	srv, c := startServer(t)
	ctx := context.Background()
	// State for the conflict cases.
	if st, err := c.Lock(kv.TextKey("held")).Acquire(ctx, "alice", 0, 0); err != nil || !st.Acquired {
		t.Fatalf("Acquire = %+v, %v", st, err)
	}
	if _, err := c.Deque("d").Append(ctx, kv.Text("x")); err != nil {
		t.Fatal(err)
	}
	do := func(method, path, token, vtype, body string) (int, wire.Error) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
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
	tok := srv.Token
	for _, tc := range []struct {
		method, path, token, vtype, body string
		status                           int
		code                             string
	}{
		{"GET", "/v1/deques/d", "", "", "", 401, wire.CodeUnauthorized},
		{"POST", "/v1/locks/k/acquire?owner=a", "wrong", "", "", 401, wire.CodeUnauthorized},
		// Names: traversal, absolute, empty segments, control characters.
		{"GET", "/v1/deques/..%2F..%2Fetc", tok, "", "", 400, wire.CodeBadName},
		{"GET", "/v1/deques/%2Fabs", tok, "", "", 400, wire.CodeBadName},
		{"POST", "/v1/deques/a%2F%2Fb/push", tok, "", "v", 400, wire.CodeBadName},
		{"GET", "/v1/deques/a%2F..%2F..%2Fx/items", tok, "", "", 400, wire.CodeBadName},
		{"GET", "/v1/indexes/..%2Fcache%2Fx", tok, "", "", 400, wire.CodeBadName},
		{"PUT", "/v1/indexes/a%5Cb/keys/k", tok, "", "v", 400, wire.CodeBadName},
		{"GET", "/v1/indexes/a%00b/keys/k", tok, "", "", 400, wire.CodeBadName},
		// Empty, out of range.
		{"POST", "/v1/deques/empty/pop", tok, "", "", 404, wire.CodeEmpty},
		{"GET", "/v1/deques/empty/peek?side=front", tok, "", "", 404, wire.CodeEmpty},
		{"GET", "/v1/deques/d/items/1", tok, "", "", 404, wire.CodeIndexOutOfRange},
		{"GET", "/v1/deques/d/items/-2", tok, "", "", 404, wire.CodeIndexOutOfRange},
		{"GET", "/v1/deques/d/items/9223372036854775807", tok, "", "", 404, wire.CodeIndexOutOfRange},
		{"GET", "/v1/deques/d/items/-99999999999999999999", tok, "", "", 404, wire.CodeIndexOutOfRange},
		{"GET", "/v1/deques/d/items/1.5", tok, "", "", 400, wire.CodeBadRequest},
		{"PUT", "/v1/deques/d/items/5", tok, "", "v", 404, wire.CodeIndexOutOfRange},
		{"DELETE", "/v1/deques/empty/items/0", tok, "", "", 404, wire.CodeIndexOutOfRange},
		{"POST", "/v1/indexes/i/popitem", tok, "", "", 404, wire.CodeEmpty},
		{"GET", "/v1/indexes/i/peekitem?last=false", tok, "", "", 404, wire.CodeEmpty},
		{"POST", "/v1/indexes/i/pull?prefix=p", tok, "", "", 404, wire.CodeEmpty},
		{"GET", "/v1/indexes/i/keys/nope", tok, "", "", 404, wire.CodeNotFound},
		{"POST", "/v1/indexes/i/keys/nope/pop", tok, "", "", 404, wire.CodeNotFound},
		{"GET", "/v1/averages/none", tok, "", "", 404, wire.CodeNotFound},
		{"DELETE", "/v1/averages/none", tok, "", "", 404, wire.CodeNotFound},
		// Bad numbers and parameters.
		{"POST", "/v1/deques/d/push?maxlen=x", tok, "", "v", 400, wire.CodeBadRequest},
		{"POST", "/v1/deques/d/push?maxlen=-1", tok, "", "v", 400, wire.CodeBadRequest},
		{"POST", "/v1/deques/d/push?side=middle", tok, "", "v", 400, wire.CodeBadRequest},
		{"POST", "/v1/deques/d/push", tok, "int", "1.5", 400, wire.CodeBadValue},
		{"GET", "/v1/deques/d/items?limit=0", tok, "", "", 400, wire.CodeBadRequest},
		{"GET", "/v1/deques/d/items?limit=10001", tok, "", "", 400, wire.CodeBadRequest},
		{"GET", "/v1/deques/d/items?offset=-1", tok, "", "", 400, wire.CodeBadRequest},
		{"GET", "/v1/deques/d/items?reverse=maybe", tok, "", "", 400, wire.CodeBadRequest},
		{"GET", "/v1/deques/d/items/first", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/deques/d/rotate?steps=1.5", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/deques/d/items", tok, "", "{\"key\":\"\",\"len\":5}\nab", 400, wire.CodeBadRequest},
		{"POST", "/v1/deques/d/items", tok, "", "{\"key\":\"\",\"type\":\"text\",\"len\":1}\na{\"key\":\"\",\"type\":\"int\",\"len\":1}\nx", 400, wire.CodeBadValue},
		{"POST", "/v1/deques/d/items", tok, "", "not a record stream", 400, wire.CodeBadRequest},
		{"GET", "/v1/indexes/i/items?cursor=bogus", tok, "", "", 400, wire.CodeBadRequest},
		{"GET", "/v1/indexes/i/items?limit=-5", tok, "", "", 400, wire.CodeBadRequest},
		{"GET", "/v1/indexes/i/keys/k?kt=int", tok, "", "", 400, wire.CodeBadKey},
		{"POST", "/v1/indexes/i/popitem?last=sometimes", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/indexes/i/push?prefix=%FF", tok, "", "v", 400, wire.CodeBadKey},
		{"POST", "/v1/locks/k/acquire", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/locks/k/acquire?owner=a&ttl=-1", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/locks/k/acquire?owner=a&wait=soon", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/locks/k/acquire?owner=a&reentrant=perhaps", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/locks/held/release?owner=bob", tok, "", "", 409, wire.CodeNotOwner},
		{"POST", "/v1/locks/held/refresh?owner=bob&ttl=5", tok, "", "", 409, wire.CodeNotOwner},
		{"POST", "/v1/locks/free/release?owner=bob&reentrant=true", tok, "", "", 409, wire.CodeNotOwner},
		{"POST", "/v1/semaphores/s/acquire?owner=a&value=0", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/semaphores/s/acquire?owner=a&value=two", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/semaphores/s/release?owner=a", tok, "", "", 409, wire.CodeNotOwner},
		{"POST", "/v1/semaphores/s/refresh?owner=a", tok, "", "", 409, wire.CodeNotOwner},
		{"POST", "/v1/averages/avg", tok, "", "fast", 400, wire.CodeBadValue},
		{"POST", "/v1/averages/avg", tok, "", "nan", 400, wire.CodeBadValue},
		{"POST", "/v1/averages/held", tok, "", "1", 409, wire.CodeWrongType},
		{"POST", "/v1/ratelimits/r", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/ratelimits/r?count=0&per=1", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/ratelimits/r?count=5&per=0", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/ratelimits/r?count=5&per=x", tok, "", "", 400, wire.CodeBadRequest},
		{"POST", "/v1/ratelimits/r?count=5&per=1&cost=6", tok, "", "", 400, wire.CodeBadRequest},
	} {
		status, e := do(tc.method, tc.path, tc.token, tc.vtype, tc.body)
		if status != tc.status || e.Code != tc.code || e.Message == "" {
			t.Errorf("%s %s (%q) = %d %+v, want %d %s", tc.method, tc.path, tc.body, status, e, tc.status, tc.code)
		}
	}
	// Nothing of the rejected writes was stored: the deque still holds
	// exactly its one item, and no rejected name made a directory.
	n, err := c.Deque("d").Len(ctx)
	front, ferr := c.Deque("d").PeekLeft(ctx)
	if n != 1 || err != nil || ferr != nil || !front.Equal(kv.Text("x")) {
		t.Fatalf("deque after rejected writes: len %d (%v), front %v (%v)", n, err, front, ferr)
	}
}

// TestDequeCompareValueIsBounded: remove and count hold the value they
// compare with in memory, so it is bounded (413 past 64 MiB, with its
// length said or streamed); --max-value-bytes (1 TiB) let one request take
// the shard's memory.
func TestDequeCompareValueIsBounded(t *testing.T) {
	srv, c := startServer(t)
	ctx := context.Background()
	if _, err := c.Deque("d").Append(ctx, kv.Bytes([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("v", 64<<20+1)
	for _, op := range []string{"count", "remove"} {
		for _, streamed := range []bool{false, true} {
			var body io.Reader = strings.NewReader(big)
			if streamed {
				body = io.MultiReader(body) // no length: chunked
			}
			req, _ := http.NewRequest("POST", srv.URL+"/v1/deques/d/"+op, body)
			req.Header.Set("Authorization", "Bearer "+srv.Token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var e wire.Error
			_ = json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || e.Code != wire.CodeValueTooLarge {
				t.Errorf("%s of a 64 MiB + 1 value (streamed %v): %d %+v, want 413 value_too_large", op, streamed, resp.StatusCode, e)
			}
		}
	}
	if n, err := c.Deque("d").Count(ctx, kv.Bytes([]byte("x"))); err != nil || n != 1 {
		t.Fatalf("count of a small value: %d, %v", n, err)
	}
}
