package cacheserver_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// ownedBy returns the first "<prefix><i>" owned by shard of n.
func ownedBy(prefix string, shard, n int) string {
	for i := 0; ; i++ {
		if s := fmt.Sprint(prefix, i); topology.Owner([]byte(s), n) == shard {
			return s
		}
	}
}

// exampleBody is a body each route accepts (or, for the routes that take
// none, nil) and its headers.
func exampleBody(t *testing.T, method, path, key string) ([]byte, map[string]string) {
	t.Helper()
	hdr := map[string]string{wire.HeaderValueType: "int"}
	records := func() []byte {
		var b bytes.Buffer
		rw := wire.NewRecordWriter(&b)
		for _, k := range []string{key, "other"} {
			if err := rw.Write(wire.Record{Key: k, Type: "int"}, []byte("3")); err != nil {
				t.Fatal(err)
			}
		}
		hdr["Content-Type"] = wire.RecordsContentType
		return b.Bytes()
	}
	switch {
	case strings.HasSuffix(path, "/batch/get"), strings.HasSuffix(path, "/batch/delete"):
		b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"key": key}, {"key": "other"}, {"key": "absent"}}})
		return b, nil
	case strings.HasSuffix(path, "/batch/set"), method == "POST" && strings.HasSuffix(path, "/items"):
		return records(), hdr
	case method == "PATCH":
		return []byte(`{"cull_limit": 12}`), nil
	case method == "PUT" && strings.HasSuffix(path, "/tag-index"), method == "DELETE", method == "GET", method == "HEAD":
		return nil, nil
	case method == "PUT", method == "POST":
		return []byte("7"), hdr
	}
	return nil, nil
}

var templateVar = regexp.MustCompile(`\{[a-z]+\}`)

// concretePath fills a route's path template with key, name and index 0.
func concretePath(t *testing.T, path, key, name string) string {
	t.Helper()
	return templateVar.ReplaceAllStringFunc(path, func(m string) string {
		switch m {
		case "{key}":
			return key
		case "{name}":
			return name
		case "{index}":
			return "0"
		}
		t.Fatalf("unknown template %s in %s", m, path)
		return ""
	})
}

// TestEveryRouteThroughANonOwner walks every operation of the OpenAPI
// document on two identical 3-shard caches: one asked through the shard
// that owns the key or collection (or, for cluster-wide operations, through
// shard 1), the other through shard 0, which must forward or merge. Both
// must answer alike, status and body.
func TestEveryRouteThroughANonOwner(t *testing.T) {
	sp := loadSpec(t)
	ops := sp.operations(t)
	var keys []string
	for k := range ops {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	a := testserver.StartCluster(t, 3, testserver.Options{})
	b := testserver.StartCluster(t, 3, testserver.Options{})
	tok := a.Shards[0].Token
	key, name := ownedBy("key", 1, 3), ownedBy("coll", 1, 3)
	// volume and the shards' detail depend on page layout and timing; the
	// rest of every answer must be equal.
	volatile := regexp.MustCompile(`"(volume|remaining|expire_time)":[0-9.e+-]+`)
	compared := 0
	for _, k := range keys {
		op := ops[k]
		if !strings.HasPrefix(op.path, "/v1/") || op.path == "/v1/topology" || op.path == "/v1/usage" {
			continue // answered by the shard asked, by design
		}
		concrete := concretePath(t, op.path, key, name)
		query := "?owner=o&count=5&per=60&tag=t"
		// Run each operation twice so the second sees the first's effects.
		for round := 0; round < 2; round++ {
			body, hdr := exampleBody(t, op.method, op.path, key)
			stA, _, bodyA := do(t, op.method, a.Shards[1].URL+concrete+query, tok, body, hdr)
			body, hdr = exampleBody(t, op.method, op.path, key)
			stB, _, bodyB := do(t, op.method, b.Shards[0].URL+concrete+query, tok, body, hdr)
			na, nb := volatile.ReplaceAll(bodyA, nil), volatile.ReplaceAll(bodyB, nil)
			if stA != stB || !bytes.Equal(na, nb) {
				t.Errorf("%s (round %d): through the owner %d %s; through shard 0 %d %s", k, round, stA, bodyA, stB, bodyB)
			}
			if stA == http.StatusBadGateway || stA == http.StatusServiceUnavailable || stA >= 500 {
				t.Errorf("%s: %d %s", k, stA, bodyA)
			}
		}
		compared++
	}
	if compared < 60 {
		t.Fatalf("only %d operations compared", compared)
	}
	// In the cache asked through shard 0, the key and the named cache
	// really live on their owner, shard 1, only.
	for i, s := range b.Shards {
		if has := onShard(t, s, key); has != (i == 1) {
			t.Errorf("key %s on shard %d: %v", key, i, has)
		}
		st, _, body := do(t, "GET", s.URL+"/v1/caches/"+name+"/info", tok, nil,
			map[string]string{wire.HeaderScope: "shard"})
		var info struct{ Count int }
		if st != http.StatusOK || json.Unmarshal(body, &info) != nil || (info.Count > 0) != (i == 1) {
			t.Errorf("named cache %s on shard %d: %d %s", name, i, st, body)
		}
	}
}

// TestEveryGetRouteAnswersHeadThroughANonOwner sends HEAD, which net/http
// serves on every GET route, to each GET operation of the OpenAPI document
// through the owner (shard 1) and through shard 0: both answer as the GET
// does, with no body.
func TestEveryGetRouteAnswersHeadThroughANonOwner(t *testing.T) {
	sp := loadSpec(t)
	ops := sp.operations(t)
	var keys []string
	for k, op := range ops {
		if _, own := ops["HEAD "+op.path]; !own && op.method == "GET" && strings.HasPrefix(op.path, "/v1/") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	c := testserver.StartCluster(t, 3, testserver.Options{})
	tok := c.Shards[0].Token
	key, name := ownedBy("key", 1, 3), ownedBy("coll", 1, 3)
	for _, path := range []string{"/v1/keys/" + key, "/v1/caches/" + name + "/keys/" + key,
		"/v1/indexes/" + name + "/keys/" + key} {
		if st, _, body := do(t, "PUT", c.Shards[1].URL+path, tok, []byte("7"), nil); st >= 300 {
			t.Fatalf("PUT %s: %d %s", path, st, body)
		}
	}
	if st, _, body := do(t, "POST", c.Shards[1].URL+"/v1/deques/"+name+"/push", tok, []byte("7"), nil); st >= 300 {
		t.Fatalf("push: %d %s", st, body)
	}
	for _, k := range keys {
		op := ops[k]
		concrete := concretePath(t, op.path, key, name)
		stGet, hGet, _ := do(t, "GET", c.Shards[0].URL+concrete, tok, nil, nil)
		for _, shard := range []int{1, 0} {
			st, h, body := do(t, "HEAD", c.Shards[shard].URL+concrete, tok, nil, nil)
			if st != stGet || h.Get("Content-Type") != hGet.Get("Content-Type") || len(body) != 0 {
				t.Errorf("HEAD %s through shard %d: %d %q %q; GET through shard 0: %d %q",
					concrete, shard, st, h.Get("Content-Type"), body, stGet, hGet.Get("Content-Type"))
			}
		}
	}
	if len(keys) < 20 {
		t.Fatalf("only %d GET operations", len(keys))
	}
}
