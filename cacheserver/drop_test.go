package cacheserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/testfiles"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// TestDropCollections: DELETE on a named cache, deque or index removes it,
// its items, its settings and its files, and leaves the collections nested
// under its name; the name then reads empty and works as new.
func TestDropCollections(t *testing.T) {
	ctx := context.Background()
	srv, c := startServer(t)
	big := kv.Text(strings.Repeat("v", 60_000)) // a value file each
	nc, nested := c.Cache("jobs/1"), c.Cache("jobs/1/part")
	limit := int64(1 << 20)
	if _, err := nc.UpdateSettings(ctx, settings.Settings{SizeLimit: &limit}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		for _, cc := range []*client.Cache{nc, nested} {
			if err := cc.Set(ctx, kv.IntKey(int64(i)), big, kv.SetOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	dq, ix := c.Deque("jobs/1"), c.Index("jobs/1")
	for i := range 3 {
		if _, err := dq.Append(ctx, big); err != nil {
			t.Fatal(err)
		}
		if err := ix.Set(ctx, kv.IntKey(int64(i)), big); err != nil {
			t.Fatal(err)
		}
	}
	nestedFiles := testfiles.Below(t, filepath.Join(srv.DataDir, "cache", "jobs", "1", "part"))

	if n, err := nc.Drop(ctx); err != nil || n != 5 {
		t.Fatalf("Drop = %d, %v; want 5", n, err)
	}
	for _, f := range testfiles.Below(t, filepath.Join(srv.DataDir, "cache", "jobs", "1")) {
		if !strings.HasPrefix(f, "part"+string(filepath.Separator)) {
			t.Errorf("file %s of the dropped cache is left", f)
		}
	}
	if got := testfiles.Below(t, filepath.Join(srv.DataDir, "cache", "jobs", "1", "part")); len(got) != len(nestedFiles) {
		t.Errorf("the nested cache's files went from %d to %d", len(nestedFiles), len(got))
	}
	if info, err := nested.Info(ctx); err != nil || info.Count != 5 {
		t.Errorf("the nested cache holds %d items (%v), want 5", info.Count, err)
	}
	if n, err := dq.Clear(ctx); err != nil || n != 3 {
		t.Fatalf("deque Clear = %d, %v; want 3", n, err)
	}
	if n, err := ix.Clear(ctx); err != nil || n != 3 {
		t.Fatalf("index Clear = %d, %v; want 3", n, err)
	}
	for _, kind := range []string{"deque", "index"} {
		if got := testfiles.Below(t, filepath.Join(srv.DataDir, kind)); len(got) != 0 {
			t.Errorf("files of the dropped %s are left: %v", kind, got)
		}
		if _, err := os.Stat(filepath.Join(srv.DataDir, kind, "jobs")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s/jobs is left after its only collection was dropped (%v)", kind, err)
		}
	}

	// The name comes back empty, with a new cache's settings.
	info, err := nc.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Count != 0 || info.Settings.SizeLimit == nil || *info.Settings.SizeLimit == limit {
		t.Errorf("after the drop: %d items, size limit %v; want 0 and a new cache's", info.Count, info.Settings.SizeLimit)
	}
	if _, ok, err := nc.Get(ctx, kv.IntKey(0)); err != nil || ok {
		t.Errorf("a dropped item reads back: %v, %v", ok, err)
	}
	if err := nc.Set(ctx, kv.IntKey(9), kv.Int(9), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	if n, err := dq.Append(ctx, kv.Int(1)); err != nil || n != 1 {
		t.Fatalf("Append after the drop = %d, %v", n, err)
	}

	// A name never used: nothing to remove, and nothing created.
	if n, err := c.Cache("never").Drop(ctx); err != nil || n != 0 {
		t.Errorf("Drop(never) = %d, %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(srv.DataDir, "cache", "never")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dropping a name never used created it (%v)", err)
	}
	if _, err := c.Cache("").Drop(ctx); err == nil {
		t.Error("the server's own cache was dropped; want an error (Clear it)")
	}
	for _, tc := range []struct {
		path, token string
		status      int
		code        string
	}{
		{"/v1/caches/a%2F..%2F..%2Fx", srv.Token, 400, wire.CodeBadName},
		{"/v1/deques/a%2F%2Fb", srv.Token, 400, wire.CodeBadName},
		{"/v1/indexes/jobs%2F1%2Fab", srv.Token, 400, wire.CodeBadName}, // a value directory's name
		{"/v1/caches/jobs%2F1", "", 401, wire.CodeUnauthorized},
	} {
		st, _, body := do(t, "DELETE", srv.URL+tc.path, tc.token, nil, nil)
		if st != tc.status || !strings.Contains(string(body), `"`+tc.code+`"`) {
			t.Errorf("DELETE %s = %d %s; want %d %s", tc.path, st, body, tc.status, tc.code)
		}
	}
	if info, err := nested.Info(ctx); err != nil || info.Count != 5 {
		t.Errorf("the nested cache holds %d items (%v) after the bad requests, want 5", info.Count, err)
	}
}

// TestDropUnderConcurrentRequests: drops of a deque and of a named cache
// while other clients push to the one and store file-sized values in the
// other: every request succeeds (none runs on a handle the drop closed),
// what is written after the last drop is there, and once that is dropped
// too no file is left (an upload the drop waited for included).
func TestDropUnderConcurrentRequests(t *testing.T) {
	ctx := context.Background()
	srv, c := startServer(t)
	dq, nc := c.Deque("q"), c.Cache("n")
	big := kv.Text(strings.Repeat("b", 40_000))
	const writers, writes, drops = 4, 60, 30
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers+2)
	for w := range writers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range writes {
				if _, err := dq.Append(ctx, kv.Int(int64(w))); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := range writes {
				if err := nc.Set(ctx, kv.IntKey(int64(w*writes+i)), big, kv.SetOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range drops {
			if _, err := dq.Clear(ctx); err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range drops {
			if _, err := nc.Drop(ctx); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a request beside the drops failed: %v", err)
	}
	if _, err := dq.Append(ctx, kv.Text("last")); err != nil {
		t.Fatal(err)
	}
	if v, err := dq.Peek(ctx); err != nil || !v.Equal(kv.Text("last")) {
		t.Errorf("the deque's last item = %v, %v; want the one appended after the drops", v, err)
	}
	if err := nc.Set(ctx, kv.TextKey("last"), big, kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	if it, ok, err := nc.Get(ctx, kv.TextKey("last")); err != nil || !ok || !it.Value.Equal(big) {
		t.Errorf("the value stored after the drops: %v, %v", ok, err)
	}
	if _, err := nc.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := dq.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"cache", "deque"} {
		if got := testfiles.Below(t, filepath.Join(srv.DataDir, kind)); len(got) != 0 {
			t.Errorf("files left under %s/ after the last drop: %v", kind, got)
		}
	}
}

// TestDropDuringAMove: a named cache and a deque dropped at their new owner
// (through another shard, which forwards) while their previous owner has
// not handed them off yet (its moves are paused): the handoff that comes
// later brings back none of their items, and the previous owner keeps no
// files of them once the move is done.
func TestDropDuringAMove(t *testing.T) {
	ctx := context.Background()
	c := testserver.StartCluster(t, 2, testserver.Options{})
	tok := c.Shards[0].Token
	m := &mover{t: t, admin: c.AdminToken, layout: topology.Layout{Epoch: 1, Shards: c.URLs}}
	cname, qname := movingName("c", 2, 3, 2), movingName("q", 2, 3, 2)
	via := dataClient(t, c.URLs[0], tok)
	big := kv.Text(strings.Repeat("m", 50_000))
	for i := range 10 {
		if err := via.Cache(cname).Set(ctx, kv.IntKey(int64(i)), big, kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := via.Deque(qname).Append(ctx, kv.Int(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	cOld, qOld := c.Shards[topology.Owner([]byte(cname), 2)], c.Shards[topology.Owner([]byte(qname), 2)]
	for _, u := range c.URLs {
		if st, _, body := do(t, "POST", u+"/v1/rebalance/pause?lease=300", c.AdminToken, nil, nil); st != 200 {
			t.Fatalf("pause %s: %d %s", u, st, body)
		}
	}
	s2 := startShard(t, c, 2, m.layout)
	three := append(append([]string(nil), c.URLs...), s2.URL)
	all := m.announce(three)

	if n, err := via.Cache(cname).Drop(ctx); err != nil || n != 10 {
		t.Fatalf("drop of the named cache during the move = %d, %v; want 10", n, err)
	}
	if n, err := via.Deque(qname).Clear(ctx); err != nil || n != 10 {
		t.Fatalf("drop of the deque during the move = %d, %v; want 10", n, err)
	}
	for _, p := range []string{filepath.Join(cOld.DataDir, "cache", cname), filepath.Join(qOld.DataDir, "deque", qname)} {
		if _, err := os.Stat(filepath.Join(p, "cache.db")); err != nil {
			t.Fatalf("the previous owner no longer holds %s before its handoff: the test moved nothing late (%v)", p, err)
		}
	}
	for _, u := range c.URLs {
		if st, _, body := do(t, "POST", u+"/v1/rebalance/resume", c.AdminToken, nil, nil); st != 200 {
			t.Fatalf("resume %s: %d %s", u, st, body)
		}
	}
	m.waitDrained(all)
	m.end(all)
	for _, u := range three {
		cl := dataClient(t, u, tok)
		if info, err := cl.Cache(cname).Info(ctx); err != nil || info.Count != 0 {
			t.Errorf("through %s: the dropped cache holds %d items after the move (%v)", u, info.Count, err)
		}
		if n, err := cl.Deque(qname).Len(ctx); err != nil || n != 0 {
			t.Errorf("through %s: the dropped deque holds %d items after the move (%v)", u, n, err)
		}
	}
	if got := testfiles.Below(t, filepath.Join(cOld.DataDir, "cache", cname)); len(got) != 0 {
		t.Errorf("the previous owner keeps files of the cache it handed off: %v", got)
	}
	if got := testfiles.Below(t, filepath.Join(qOld.DataDir, "deque", qname)); len(got) != 0 {
		t.Errorf("the previous owner keeps files of the deque it handed off: %v", got)
	}
}

// TestListCollections: GET /v1/collections lists the named caches, deques
// and indexes that exist, by kind then name, with what their files take
// (a value file counted, a nested collection not), filtered by kind and
// prefix, in pages; a dropped one is gone from it, and listing creates
// nothing.
func TestListCollections(t *testing.T) {
	ctx := context.Background()
	srv, c := startServer(t)
	big := kv.Text(strings.Repeat("v", 60_000))
	for _, name := range []string{"a", "a/b", "z"} {
		if err := c.Cache(name).Set(ctx, kv.TextKey("k"), big, kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"q1", "q2"} {
		if _, err := c.Deque(name).Append(ctx, kv.Int(1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Index("i").Set(ctx, kv.TextKey("k"), kv.Int(1)); err != nil {
		t.Fatal(err)
	}
	ids := func(kind, prefix string, pageSize int) []string {
		t.Helper()
		var out []string
		for ci, err := range c.Collections(ctx, kind, prefix, pageSize) {
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, ci.Kind+"/"+ci.Name)
		}
		return out
	}
	want := []string{"cache/a", "cache/a/b", "cache/z", "deque/q1", "deque/q2", "index/i"}
	for _, pageSize := range []int{0, 1, 2, 5} {
		if got := ids("", "", pageSize); !slices.Equal(got, want) {
			t.Errorf("pages of %d: %v, want %v", pageSize, got, want)
		}
	}
	if got := ids("deque", "", 0); !slices.Equal(got, want[3:5]) {
		t.Errorf("kind deque: %v", got)
	}
	if got := ids("cache", "a", 1); !slices.Equal(got, want[:2]) {
		t.Errorf("caches with prefix a: %v", got)
	}
	page, err := c.CollectionsPage(ctx, "cache", "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	bytesOf := map[string]int64{}
	for _, ci := range page.Collections {
		bytesOf[ci.Name] = ci.Bytes
	}
	// Each holds its database and a value file of 60,000 bytes; the files
	// of a's nested cache a/b are not a's.
	for name, n := range bytesOf {
		if n < 60_000 || n > bytesOf["z"]+30_000 || n < bytesOf["z"]-30_000 {
			t.Errorf("%s takes %d bytes (z %d): want its database and one value file", name, n, bytesOf["z"])
		}
	}
	if _, err := c.Cache("a").Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ids("cache", "", 0); !slices.Equal(got, []string{"cache/a/b", "cache/z"}) {
		t.Errorf("after dropping a: %v", got)
	}
	if got := testfiles.Below(t, filepath.Join(srv.DataDir, "index", "none")); len(got) != 0 {
		t.Errorf("listing created files: %v", got)
	}
	for _, q := range []string{"kind=queue", "limit=0", "limit=10001", "limit=x"} {
		if st, _, body := do(t, "GET", srv.URL+"/v1/collections?"+q, srv.Token, nil, nil); st != 400 {
			t.Errorf("GET /v1/collections?%s = %d %s, want 400", q, st, body)
		}
	}
}

// TestListCollectionsOfShards: through any shard of a sharded cache the
// listing holds every shard's collections once, in order, page after page;
// a shard asked for its own part lists only the collections it owns.
func TestListCollectionsOfShards(t *testing.T) {
	ctx := context.Background()
	c := testserver.StartCluster(t, 3, testserver.Options{})
	tok := c.Shards[0].Token
	var want []string
	for i := range 25 {
		name := "job-" + strconv.Itoa(100+i)
		if _, err := dataClient(t, c.URLs[0], tok).Deque(name).Append(ctx, kv.Int(1)); err != nil {
			t.Fatal(err)
		}
		want = append(want, "deque/"+name)
	}
	for _, u := range c.URLs {
		var got []string
		for ci, err := range dataClient(t, u, tok).Collections(ctx, "", "job-", 7) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ci.Kind+"/"+ci.Name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("through %s: %v, want %v", u, got, want)
		}
	}
	// Names all on one shard: that shard alone has more than a page.
	var solo []string
	for i := 0; len(solo) < 10; i++ {
		if name := "solo-" + strconv.Itoa(100+i); topology.Owner([]byte(name), 3) == 1 {
			if _, err := dataClient(t, c.URLs[0], tok).Deque(name).Append(ctx, kv.Int(1)); err != nil {
				t.Fatal(err)
			}
			solo = append(solo, "deque/"+name)
		}
	}
	var got []string
	for ci, err := range dataClient(t, c.URLs[0], tok).Collections(ctx, "deque", "solo-", 3) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ci.Kind+"/"+ci.Name)
	}
	if !slices.Equal(got, solo) {
		t.Errorf("the collections of one shard, by pages of 3: %v, want %v", got, solo)
	}

	total := 0
	for i, u := range c.URLs {
		st, _, body := do(t, "GET", u+"/v1/collections", tok, nil, map[string]string{wire.HeaderScope: "shard"})
		var page client.CollectionsPage
		if err := json.Unmarshal(body, &page); st != 200 || err != nil {
			t.Fatalf("shard %d: %d %s", i, st, body)
		}
		for _, ci := range page.Collections {
			if o := topology.Owner([]byte(ci.Name), 3); o != i {
				t.Errorf("shard %d lists %s, owned by shard %d", i, ci.Name, o)
			}
		}
		total += len(page.Collections)
	}
	if total != len(want)+len(solo) {
		t.Errorf("the shards list %d collections of their own, want %d", total, len(want)+len(solo))
	}
}

// TestReadsCreateNoCollection: reading a named cache, deque or index that
// does not exist, or taking from it (pop, pull, delete), answers as for an
// empty one and creates nothing, so a collection dropped and then read or
// polled stays dropped; the first write creates it.
func TestReadsCreateNoCollection(t *testing.T) {
	ctx := context.Background()
	srv, c := startServer(t)
	dq := c.Deque("ghost")
	if _, err := dq.Append(ctx, kv.Int(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := dq.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	tok := srv.Token
	for _, tc := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/v1/deques/ghost", 200, `"len":0`},
		{"GET", "/v1/deques/ghost/peek", 404, `"empty"`},
		{"GET", "/v1/deques/ghost/items", 200, ``},
		{"GET", "/v1/deques/ghost/items/0", 404, ``},
		{"GET", "/v1/indexes/ghost", 200, `"len":0`},
		{"GET", "/v1/indexes/ghost/keys/k", 404, ``},
		{"HEAD", "/v1/indexes/ghost/keys/k", 404, ``},
		{"GET", "/v1/indexes/ghost/peekitem", 404, ``},
		{"GET", "/v1/indexes/ghost/items", 200, ``},
		{"GET", "/v1/caches/ghost/keys/k", 404, ``},
		{"GET", "/v1/caches/ghost/info", 200, `"count":0`},
		{"GET", "/v1/caches/ghost/stats", 200, `"hits":0`},
		{"GET", "/v1/caches/ghost/settings", 200, `"eviction_policy"`},
		{"POST", "/v1/caches/ghost/batch/get", 200, `"found":false`},
		// Takes find nothing to take, and create nothing either.
		{"POST", "/v1/deques/ghost/pop", 404, `"empty"`},
		{"POST", "/v1/indexes/ghost/popitem", 404, ``},
		{"POST", "/v1/indexes/ghost/pull", 404, ``},
		{"POST", "/v1/indexes/ghost/keys/k/pop", 404, ``},
		{"DELETE", "/v1/indexes/ghost/keys/k", 200, `"deleted":false`},
		{"DELETE", "/v1/caches/ghost/keys/k", 200, `"deleted":false`},
		{"POST", "/v1/caches/ghost/keys/k/pop", 404, ``},
		{"POST", "/v1/caches/ghost/batch/delete", 200, `"count":0`},
		// So do the writes that find nothing to change in an empty one.
		{"POST", "/v1/caches/ghost/keys/k/touch", 200, `"touched":false`},
		{"POST", "/v1/caches/ghost/evict?tag=t", 200, `"removed":0`},
		{"POST", "/v1/caches/ghost/expire", 200, `"removed":0`},
		{"POST", "/v1/caches/ghost/cull", 200, `"removed":0`},
		{"POST", "/v1/caches/ghost/clear", 200, `"removed":0`},
		{"POST", "/v1/caches/ghost/stats?enable=false&reset=true", 200, `"statistics":false`},
		{"POST", "/v1/caches/ghost/stats?enable=perhaps", 400, `"bad_request"`},
		{"POST", "/v1/deques/ghost/rotate?steps=2", 204, ``},
		{"POST", "/v1/deques/ghost/reverse", 204, ``},
		{"POST", "/v1/deques/ghost/remove", 200, `"removed":false`},
		{"POST", "/v1/deques/ghost/count", 200, `"count":0`},
		{"PUT", "/v1/deques/ghost/items/0", 404, `"index_out_of_range"`},
		{"DELETE", "/v1/deques/ghost/items/0", 404, `"index_out_of_range"`},
	} {
		var body []byte
		switch {
		case strings.HasSuffix(tc.path, "/batch/get") || strings.HasSuffix(tc.path, "/batch/delete"):
			body = []byte(`{"keys":[{"key":"k"}]}`)
		case strings.HasSuffix(tc.path, "/remove") || strings.HasSuffix(tc.path, "/count") || tc.method == "PUT":
			body = []byte("v")
		}
		st, _, got := do(t, tc.method, srv.URL+tc.path, tok, body, nil)
		if st != tc.status || !strings.Contains(string(got), tc.body) {
			t.Errorf("%s %s = %d %s; want %d with %s", tc.method, tc.path, st, got, tc.status, tc.body)
		}
	}
	for _, kind := range []string{"cache", "deque", "index"} {
		if got := testfiles.Below(t, filepath.Join(srv.DataDir, kind)); len(got) != 0 {
			t.Errorf("reads created files under %s/: %v", kind, got)
		}
	}
	for ci, err := range c.Collections(ctx, "", "", 0) {
		if err != nil {
			t.Fatal(err)
		}
		t.Errorf("reads created %s %s", ci.Kind, ci.Name)
	}
	if _, err := dq.Append(ctx, kv.Int(2)); err != nil {
		t.Fatal(err)
	}
	if n, err := dq.Len(ctx); err != nil || n != 1 {
		t.Errorf("after a write: len %d, %v", n, err)
	}
}
