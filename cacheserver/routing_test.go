package cacheserver_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// do sends one request with a token and returns status, headers and body.
func do(t *testing.T, method, url, token string, body []byte, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func ownerOf(key string, n int) int { return topology.Owner([]byte(key), n) }

// onShard reads a key from one shard's own store, bypassing routing.
func onShard(t *testing.T, s *testserver.Server, key string) bool {
	st, _, _ := do(t, "HEAD", s.URL+"/v1/keys/"+wire.EscapePath(key), s.Token, nil,
		map[string]string{wire.HeaderScope: "shard"})
	return st == http.StatusOK
}

func TestThreeShardsAreOneCache(t *testing.T) {
	c := testserver.StartCluster(t, 3, testserver.Options{})
	tok := c.Shards[0].Token
	const n = 300
	perOwner := make([]int, 3)
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("key-%d", i)
		perOwner[ownerOf(key, 3)]++
		via := c.Shards[i%3]
		st, h, b := do(t, "PUT", via.URL+"/v1/keys/"+key+"?tag=t"+fmt.Sprint(i%2), tok, []byte("v"+key),
			map[string]string{wire.HeaderValueType: "text"})
		if st != http.StatusNoContent && st != http.StatusOK {
			t.Fatalf("PUT %s via shard %d: %d %s", key, i%3, st, b)
		}
		if h.Get(wire.HeaderEpoch) != "1" {
			t.Fatalf("PUT answer has %s %q, want 1", wire.HeaderEpoch, h.Get(wire.HeaderEpoch))
		}
	}
	for _, k := range perOwner {
		if k == 0 {
			t.Fatalf("keys per owner %v: a shard owns nothing", perOwner)
		}
	}
	// Every key reads back through every shard, and lives on its owner only.
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("key-%d", i)
		for via := range c.Shards {
			st, _, b := do(t, "GET", c.Shards[via].URL+"/v1/keys/"+key, tok, nil, nil)
			if st != http.StatusOK || string(b) != "v"+key {
				t.Fatalf("GET %s via shard %d: %d %q", key, via, st, b)
			}
		}
		for i, s := range c.Shards {
			if got, want := onShard(t, s, key), ownerOf(key, 3) == i; got != want {
				t.Fatalf("%s on shard %d: %v, want %v", key, i, got, want)
			}
		}
	}

	// Cluster-wide: info counts every shard; evict by tag through one shard
	// empties the tag on all of them.
	st, _, b := do(t, "GET", c.Shards[1].URL+"/v1/info", tok, nil, nil)
	var info struct {
		Count  int64             `json:"count"`
		Shards []json.RawMessage `json:"shards"`
	}
	if st != http.StatusOK || json.Unmarshal(b, &info) != nil || info.Count != n || len(info.Shards) != 3 {
		t.Fatalf("info via shard 1: %d %s", st, b)
	}
	st, _, b = do(t, "POST", c.Shards[2].URL+"/v1/evict?tag=t0", tok, nil, nil)
	var removed struct{ Removed int64 }
	if st != http.StatusOK || json.Unmarshal(b, &removed) != nil || removed.Removed != n/2 {
		t.Fatalf("evict t0 via shard 2: %d %s", st, b)
	}
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("key-%d", i)
		st, _, _ := do(t, "HEAD", c.Shards[0].URL+"/v1/keys/"+key, tok, nil, nil)
		if want := map[bool]int{true: 404, false: 200}[i%2 == 0]; st != want {
			t.Fatalf("HEAD %s after evict: %d, want %d", key, st, want)
		}
	}
	// A named cache lives whole on the owner of its name.
	for i := 0; i < 20; i++ {
		st, _, b := do(t, "PUT", c.Shards[i%3].URL+fmt.Sprintf("/v1/caches/sessions/keys/s%d", i), tok, []byte("x"), nil)
		if st >= 300 {
			t.Fatalf("PUT named: %d %s", st, b)
		}
	}
	st, _, b = do(t, "GET", c.Shards[1].URL+"/v1/caches/sessions/info", tok, nil, nil)
	if st != http.StatusOK || !strings.Contains(string(b), `"count":20`) {
		t.Fatalf("named cache info: %d %s", st, b)
	}
}

func TestBatchAcrossShards(t *testing.T) {
	c := testserver.StartCluster(t, 3, testserver.Options{})
	tok := c.Shards[0].Token
	var recs bytes.Buffer
	rw := wire.NewRecordWriter(&recs)
	var keys []wire.EncodeKeyJSON
	for i := 0; i < 50; i++ {
		k := fmt.Sprintf("b%d", i)
		if err := rw.Write(wire.Record{Key: k, Type: "text"}, []byte("val-"+k)); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, wire.EncodeKeyJSON{Key: k})
	}
	st, _, b := do(t, "POST", c.Shards[1].URL+"/v1/batch/set", tok, recs.Bytes(), map[string]string{"Content-Type": wire.RecordsContentType})
	if st != http.StatusOK || !strings.Contains(string(b), `"stored":50`) {
		t.Fatalf("batch set: %d %s", st, b)
	}
	for i := 0; i < 50; i++ {
		if !onShard(t, c.Shards[ownerOf(fmt.Sprintf("b%d", i), 3)], fmt.Sprintf("b%d", i)) {
			t.Fatalf("b%d not on its owner", i)
		}
	}
	// Ask for the keys in reverse order, with a missing one in the middle.
	var ask []wire.EncodeKeyJSON
	for i := len(keys) - 1; i >= 0; i-- {
		ask = append(ask, keys[i])
		if i == 25 {
			ask = append(ask, wire.EncodeKeyJSON{Key: "missing"})
		}
	}
	body, _ := json.Marshal(map[string]any{"keys": ask})
	st, _, b = do(t, "POST", c.Shards[2].URL+"/v1/batch/get", tok, body, nil)
	if st != http.StatusOK {
		t.Fatalf("batch get: %d %s", st, b)
	}
	rr := wire.NewRecordReader(bytes.NewReader(b))
	for i, k := range ask {
		rec, val, err := rr.Next()
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		v, _ := io.ReadAll(val)
		if rec.Key != k.Key {
			t.Fatalf("record %d is %q, want %q", i, rec.Key, k.Key)
		}
		if k.Key == "missing" {
			if rec.Found == nil || *rec.Found {
				t.Fatalf("missing key found: %+v", rec)
			}
		} else if string(v) != "val-"+k.Key {
			t.Fatalf("record %d %q = %q", i, k.Key, v)
		}
	}
	body, _ = json.Marshal(map[string]any{"keys": ask})
	st, _, b = do(t, "POST", c.Shards[0].URL+"/v1/batch/delete", tok, body, nil)
	var del struct {
		Deleted []bool `json:"deleted"`
		Count   int    `json:"count"`
	}
	if st != http.StatusOK || json.Unmarshal(b, &del) != nil || del.Count != 50 || len(del.Deleted) != 51 || del.Deleted[len(ask)-26] {
		t.Fatalf("batch delete: %d %s", st, b)
	}
}

func TestTopologyAnnouncements(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	s := c.Shards[0]
	st, _, b := do(t, "GET", s.URL+"/v1/topology", s.Token, nil, nil)
	var top topology.Topology
	if st != http.StatusOK || json.Unmarshal(b, &top) != nil || top.Epoch != 1 || top.Self != 0 || len(top.Shards) != 2 {
		t.Fatalf("GET topology: %d %s", st, b)
	}
	next, _ := json.Marshal(topology.Announcement{Layout: topology.Layout{Epoch: 2, Shards: c.URLs}})
	if st, _, b := do(t, "PUT", s.URL+"/v1/topology", s.Token, next, nil); st != http.StatusForbidden || !strings.Contains(string(b), wire.CodeForbidden) {
		t.Fatalf("PUT with the data token: %d %s", st, b)
	}
	for range 2 { // the same announcement twice: both 200
		if st, _, b := do(t, "PUT", s.URL+"/v1/topology", c.AdminToken, next, nil); st != http.StatusOK {
			t.Fatalf("PUT epoch 2: %d %s", st, b)
		}
	}
	older, _ := json.Marshal(topology.Announcement{Layout: topology.Layout{Epoch: 1, Shards: c.URLs}})
	if st, _, b := do(t, "PUT", s.URL+"/v1/topology", c.AdminToken, older, nil); st != http.StatusConflict || !strings.Contains(string(b), wire.CodeTopologyConflict) {
		t.Fatalf("PUT an older epoch: %d %s", st, b)
	}
	other, _ := json.Marshal(topology.Announcement{Layout: topology.Layout{Epoch: 2, Shards: c.URLs[:1]}})
	if st, _, b := do(t, "PUT", s.URL+"/v1/topology", c.AdminToken, other, nil); st != http.StatusConflict {
		t.Fatalf("PUT another layout at the same epoch: %d %s", st, b)
	}
	// Shard 1 is still on epoch 1: a request forwarded by shard 0 (epoch 2)
	// makes it learn epoch 2 from shard 0 instead of failing.
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("k%d", i); ownerOf(k, 2) == 1 {
			key = k
		}
	}
	if st, _, b := do(t, "PUT", s.URL+"/v1/keys/"+key, s.Token, []byte("x"), nil); st >= 300 {
		t.Fatalf("PUT via shard 0 at epoch 2: %d %s", st, b)
	}
	st, _, b = do(t, "GET", c.Shards[1].URL+"/v1/topology", s.Token, nil, nil)
	if st != http.StatusOK || json.Unmarshal(b, &top) != nil || top.Epoch != 2 {
		t.Fatalf("shard 1 did not catch up: %d %s", st, b)
	}
	// A restarted shard routes by its persisted copy (epoch 2), not the
	// --epoch 1 of its flags.
	c.Shards[1].Kill()
	c.Shards[1].Restart(t)
	st, _, b = do(t, "GET", c.Shards[1].URL+"/v1/topology", s.Token, nil, nil)
	if st != http.StatusOK || json.Unmarshal(b, &top) != nil || top.Epoch != 2 {
		t.Fatalf("restarted shard 1: %d %s", st, b)
	}
	// And says so when it starts.
	if got := lastServingLine(t, c.Shards[1]); got.Epoch != 2 || got.Shards != 2 {
		t.Errorf("restarted shard 1 logged %+v at start, want topology epoch 2 with 2 shards", got)
	}
	// The owner down: 503 naming it.
	c.Shards[1].Kill()
	st, _, b = do(t, "GET", s.URL+"/v1/keys/"+key, s.Token, nil, nil)
	if st != http.StatusServiceUnavailable || !strings.Contains(string(b), wire.CodeShardUnavailable) || !strings.Contains(string(b), `"shard":1`) {
		t.Fatalf("owner down: %d %s", st, b)
	}
	st, _, b = do(t, "POST", s.URL+"/v1/clear", s.Token, nil, nil)
	if st != http.StatusBadGateway || !strings.Contains(string(b), wire.CodePartialFailure) {
		t.Fatalf("clear with a shard down: %d %s", st, b)
	}
}

// TestOneHop: a forwarded request that reaches a shard that does not own
// the key is refused with the receiver's topology, never forwarded again.
func TestOneHop(t *testing.T) {
	c := testserver.StartCluster(t, 3, testserver.Options{})
	s := c.Shards[0]
	key := ownedBy("k", 2, 3)
	st, _, b := do(t, "GET", s.URL+"/v1/keys/"+key, s.Token, nil, map[string]string{wire.HeaderForwardedEpoch: "1"})
	if st != http.StatusConflict || !strings.Contains(string(b), wire.CodeWrongEpoch) || !strings.Contains(string(b), `"topology"`) {
		t.Fatalf("forwarded request to a non-owner: %d %s", st, b)
	}
	// A sender on an older epoch is told the newer one.
	next, _ := json.Marshal(topology.Announcement{Layout: topology.Layout{Epoch: 5, Shards: c.URLs}})
	if st, _, b := do(t, "PUT", s.URL+"/v1/topology", c.AdminToken, next, nil); st != http.StatusOK {
		t.Fatalf("PUT: %d %s", st, b)
	}
	own := ownedBy("k", 0, 3)
	st, _, b = do(t, "GET", s.URL+"/v1/keys/"+own, s.Token, nil, map[string]string{wire.HeaderForwardedEpoch: "4"})
	if st != http.StatusConflict || !strings.Contains(string(b), `"epoch":5`) {
		t.Fatalf("forwarded at an older epoch: %d %s", st, b)
	}
	for i, sh := range c.Shards {
		st, _, b := do(t, "GET", sh.URL+"/metrics", "", nil, nil)
		if st != http.StatusOK || strings.Contains(string(b), "diskcache_forwarded_requests_total{") {
			t.Fatalf("shard %d forwarded something: %s", i, b)
		}
	}
}

// TestFirstTopologyDiscardsWhatIsNotOwned: a pod of an older release kept
// whatever keys a round-robin Service sent it. Restarted as shard 1 of a
// routed topology, it drops the keys and collections it does not own
// (never readable again), once, and counts them.
func TestFirstTopologyDiscardsWhatIsNotOwned(t *testing.T) {
	old := testserver.Start(t, testserver.Options{})
	owned := map[string]bool{}
	for i := 0; i < 60; i++ {
		k := fmt.Sprintf("k%d", i)
		owned[k] = ownerOf(k, 3) == 1
		if st, _, b := do(t, "PUT", old.URL+"/v1/keys/"+k, old.Token, []byte("x"), nil); st >= 300 {
			t.Fatalf("PUT %s: %d %s", k, st, b)
		}
	}
	mine, theirs := ownedBy("c", 1, 3), ownedBy("c", 2, 3)
	for _, name := range []string{mine, theirs} {
		if st, _, b := do(t, "PUT", old.URL+"/v1/caches/"+name+"/keys/a", old.Token, []byte("x"), nil); st >= 300 {
			t.Fatalf("PUT named: %d %s", st, b)
		}
	}
	old.Kill()

	c := testserver.StartCluster(t, 3, testserver.Options{})
	s := c.Shards[1]
	s.Kill()
	for i, a := range s.Args {
		if a == "--data-dir" {
			s.Args[i+1] = old.DataDir
		}
	}
	s.Restart(t)
	discarded := 0
	for k, own := range owned {
		if onShard(t, s, k) != own {
			t.Errorf("%s on shard 1: %v, owned %v", k, !own, own)
		}
		if !own {
			discarded++
		}
	}
	countOn := func(name string) int {
		_, _, b := do(t, "GET", s.URL+"/v1/caches/"+name+"/info", s.Token, nil, map[string]string{wire.HeaderScope: "shard"})
		var info struct{ Count int }
		_ = json.Unmarshal(b, &info)
		return info.Count
	}
	if countOn(mine) != 1 || countOn(theirs) != 0 {
		t.Errorf("named caches after the first topology: %s %d, %s %d", mine, countOn(mine), theirs, countOn(theirs))
	}
	_, _, m := do(t, "GET", s.URL+"/metrics", "", nil, nil)
	if want := fmt.Sprintf("diskcache_discarded_items_total %d\n", discarded+1); !strings.Contains(string(m), want) {
		t.Errorf("metrics lack %q", want)
	}
	// Once only: the next start has a persisted topology and keeps all.
	s.Kill()
	s.Restart(t)
	_, _, m = do(t, "GET", s.URL+"/metrics", "", nil, nil)
	if !strings.Contains(string(m), "diskcache_discarded_items_total 0\n") {
		t.Error("a restart discarded again")
	}
}

// TestForwardingOverTLS: shards serving https forward to each other over
// https, verifying the peer's certificate with --peer-ca-file, and as
// frames on upgraded connections.
func TestForwardingOverTLS(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{TLS: true})
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.CertPool}}}
	key := ownedBy("k", 1, 2)
	for _, step := range []struct {
		method string
		want   int
	}{{"PUT", http.StatusNoContent}, {"GET", http.StatusOK}} {
		var body io.Reader
		if step.method == "PUT" {
			body = strings.NewReader("secret")
		}
		req, _ := http.NewRequest(step.method, c.URLs[0]+"/v1/keys/"+key, body)
		req.Header.Set("Authorization", "Bearer "+c.Shards[0].Token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != step.want || (step.method == "GET" && string(b) != "secret") {
			t.Fatalf("%s through shard 0 over https: %d %s", step.method, resp.StatusCode, b)
		}
	}
	if got := peerRequestsVia(t, hc, c.Shards[0], "frames"); got != 2 {
		t.Fatalf("%d forwarded requests went as frames over TLS, want 2", got)
	}
}

// TestTopologyFileIsFollowed: a newer topology written to the mounted file
// (the kubelet refreshing the operator's ConfigMap) is adopted without a
// PUT.
func TestTopologyFileIsFollowed(t *testing.T) {
	file := filepath.Join(t.TempDir(), "topology.json")
	c := testserver.StartCluster(t, 2, testserver.Options{Args: []string{"--topology-file", file}})
	next, _ := json.Marshal(topology.Announcement{Layout: topology.Layout{Epoch: 7, Shards: c.URLs}})
	if err := os.WriteFile(file, next, 0o600); err != nil {
		t.Fatal(err)
	}
	s := c.Shards[0]
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, h, b := do(t, "GET", s.URL+"/v1/topology", s.Token, nil, nil)
		if st == http.StatusOK && h.Get(wire.HeaderEpoch) == "7" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the file's epoch 7 was not adopted: %d %s", st, b)
		}
		time.Sleep(200 * time.Millisecond) // polling the observable state, with a deadline
	}
}

// TestLayoutWithoutMoveKeepsData: a new shard list announced without a
// previous layout (an operator that does not rebalance) moves nothing and
// must not be taken for a missed move: every shard keeps what it holds and
// still owns. What it no longer owns is dropped: nothing will hand it
// over, and kept it would come back in place of newer writes once a later
// layout made this shard its owner again.
func TestLayoutWithoutMoveKeepsData(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	s := c.Shards[0]
	var stays, leaves string
	for i := 0; stays == "" || leaves == ""; i++ {
		k := fmt.Sprint("k", i)
		switch {
		case ownerOf(k, 2) != 0:
		case ownerOf(k, 3) == 0 && stays == "":
			stays = k
		case ownerOf(k, 3) == 2 && leaves == "":
			leaves = k
		}
	}
	for _, key := range []string{stays, leaves} {
		if st, _, b := do(t, "PUT", s.URL+"/v1/keys/"+key, s.Token, []byte("x"), nil); st >= 300 {
			t.Fatalf("PUT: %d %s", st, b)
		}
	}
	grown, _ := json.Marshal(topology.Announcement{Layout: topology.Layout{Epoch: 2, Shards: append(c.URLs, "http://127.0.0.1:1")}})
	if st, _, b := do(t, "PUT", s.URL+"/v1/topology", c.AdminToken, grown, nil); st != http.StatusOK {
		t.Fatalf("PUT topology: %d %s", st, b)
	}
	if !onShard(t, s, stays) {
		t.Fatal("shard 0 dropped a key it still owns on a layout announced without a move")
	}
	if onShard(t, s, leaves) {
		t.Fatal("shard 0 kept a key it no longer owns, which nothing will move, after a layout announced without a move")
	}
}

// TestForwardedPartsCheckTheirEpoch: a batch part or a fan-out
// sub-request (Diskcache-Scope: shard with the sender's epoch) from a
// shard on another epoch is refused like a forwarded key: served, a
// lagging shard's write landed on the old owner, where no read looks, and
// its clear missed the new shard. A client's Diskcache-Scope: shard asks
// for a shard's own part of a cluster-wide operation, or a look at what it
// holds; a write still goes to its owner.
func TestForwardedPartsCheckTheirEpoch(t *testing.T) {
	c := testserver.StartCluster(t, 3, testserver.Options{})
	s0, tok := c.Shards[0], c.Shards[0].Token
	stale := map[string]string{wire.HeaderScope: "shard", wire.HeaderForwardedEpoch: "0", "Content-Type": wire.RecordsContentType}
	k0, k2 := ownedBy("e", 0, 3), ownedBy("e", 2, 3)
	if st, _, b := do(t, "POST", s0.URL+"/v1/batch/set", tok, []byte(fmt.Sprintf("{\"key\":%q,\"len\":1}\nx", k0)), stale); st != http.StatusConflict || !strings.Contains(string(b), wire.CodeWrongEpoch) {
		t.Fatalf("a batch part from epoch 0: %d %s, want 409 wrong_epoch", st, b)
	}
	if onShard(t, s0, k0) {
		t.Fatal("the refused batch part was stored")
	}
	for _, k := range []string{k0, k2} {
		if st, _, b := do(t, "PUT", c.Shards[1].URL+"/v1/keys/"+k, tok, []byte("v"), nil); st != http.StatusNoContent {
			t.Fatalf("PUT %s: %d %s", k, st, b)
		}
	}
	if st, _, b := do(t, "POST", s0.URL+"/v1/clear", tok, nil, stale); st != http.StatusConflict {
		t.Fatalf("a clear sub-request from epoch 0: %d %s, want 409", st, b)
	}
	if !onShard(t, s0, k0) {
		t.Fatal("the refused clear removed shard 0's item")
	}
	// Forwarded at the right epoch to a shard that does not own the key.
	if st, _, b := do(t, "PUT", s0.URL+"/v1/keys/"+k2+"x", tok, []byte("v"), map[string]string{wire.HeaderScope: "shard", wire.HeaderForwardedEpoch: "1"}); st != http.StatusConflict {
		t.Fatalf("a forwarded PUT to a non-owner: %d %s, want 409", st, b)
	}
	// A client's scope header: a write goes to the owner; a read looks here.
	k2b := ownedBy("f", 2, 3)
	if st, _, b := do(t, "PUT", s0.URL+"/v1/keys/"+k2b, tok, []byte("v"), map[string]string{wire.HeaderScope: "shard"}); st != http.StatusNoContent {
		t.Fatalf("PUT with Diskcache-Scope: shard: %d %s", st, b)
	}
	if onShard(t, s0, k2b) || !onShard(t, c.Shards[2], k2b) {
		t.Fatal("a PUT with Diskcache-Scope: shard was not stored on the key's owner only")
	}
	// The own part of a clear: shard 0's items only.
	if st, _, b := do(t, "POST", s0.URL+"/v1/clear", tok, nil, map[string]string{wire.HeaderScope: "shard"}); st != http.StatusOK || !strings.Contains(string(b), `"removed":1`) {
		t.Fatalf("shard 0's own clear: %d %s", st, b)
	}
	if onShard(t, s0, k0) || !onShard(t, c.Shards[2], k2) {
		t.Fatal("shard 0's own clear did not remove its item only")
	}
}

// TestBatchSetWithAnOwnerDown: a batch set through a shard while another
// owner is down stores every record of the shards that are up and answers
// 502 partial_failure with the count (it answered 400, and dropped the
// records after the first one of the down shard).
func TestBatchSetWithAnOwnerDown(t *testing.T) {
	c := testserver.StartCluster(t, 3, testserver.Options{})
	c.Shards[2].Kill()
	owners := []int{0, 2, 1, 0, 1}
	var body bytes.Buffer
	rw := wire.NewRecordWriter(&body)
	keys := make([]string, len(owners))
	for i, o := range owners {
		keys[i] = ownedBy(fmt.Sprintf("d%d-", i), o, 3)
		if err := rw.Write(wire.Record{Key: keys[i]}, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	st, _, b := do(t, "POST", c.Shards[0].URL+"/v1/batch/set", c.Shards[0].Token, body.Bytes(), map[string]string{"Content-Type": wire.RecordsContentType})
	var res struct {
		Error   string                       `json:"error"`
		Message string                       `json:"message"`
		Stored  int                          `json:"stored"`
		Failed  []cacheserver.BatchSetFailed `json:"failed"`
	}
	if st != http.StatusBadGateway || json.Unmarshal(b, &res) != nil || res.Error != wire.CodePartialFailure || res.Stored != 4 {
		t.Fatalf("batch set with shard 2 down: %d %s, want 502 partial_failure with 4 stored", st, b)
	}
	if want := "1 shard failed its part of the batch; 4 records were stored"; res.Message != want {
		t.Errorf("message %q, want %q", res.Message, want)
	}
	// The records not stored are named, so a client reports exactly those.
	if len(res.Failed) != 1 || res.Failed[0].Index != 1 || res.Failed[0].Key != keys[1] || res.Failed[0].Error != wire.CodeShardUnavailable {
		t.Fatalf("failed records: %+v, want record 1 (%s) shard_unavailable", res.Failed, keys[1])
	}
	for i, o := range owners {
		if o != 2 && !onShard(t, c.Shards[o], keys[i]) {
			t.Errorf("record %d (shard %d) was not stored", i, o)
		}
	}
}

// TestStalledOwnerIsAShardTimeout: an owner that takes a forwarded request
// and does not answer within the request timeout is 504 shard_timeout,
// naming it, not the server's own 503 timeout, which means nothing was
// done: the owner may apply the request later (an incr repeated on a
// "timeout" would count twice).
func TestStalledOwnerIsAShardTimeout(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{Args: []string{"--request-timeout", "1s"}})
	key := ownedBy("stall", 1, 2)
	incr := func() (int, []byte) {
		st, _, b := do(t, "POST", c.Shards[0].URL+"/v1/keys/"+key+"/incr", c.Shards[0].Token, nil, nil)
		return st, b
	}
	if st, b := incr(); st != http.StatusOK {
		t.Fatalf("incr: %d %s", st, b)
	}
	c.Shards[1].Freeze(t)
	st, b := incr()
	var e struct {
		Error string `json:"error"`
		Shard *int   `json:"shard"`
	}
	if st != http.StatusGatewayTimeout || json.Unmarshal(b, &e) != nil || e.Error != wire.CodeShardTimeout || e.Shard == nil || *e.Shard != 1 {
		t.Fatalf("incr with its owner stopped: %d %s, want 504 shard_timeout naming shard 1", st, b)
	}
}

// TestBatchGetWithAStalledOwner: a batch get whose part an owner took and
// then stalled on (a frozen pod: the forward is given up at its failed
// health check) answers the other owners' keys, and the stalled owner's
// as shard_unavailable, as for an owner away: a get applies nothing, so
// it is not a shard_timeout ("may have been applied"), and repeating it
// is safe.
func TestBatchGetWithAStalledOwner(t *testing.T) {
	c := testserver.StartCluster(t, 3, testserver.Options{})
	s0 := c.Shards[0]
	keys := []string{ownedBy("bs", 0, 3), ownedBy("bs", 1, 3), ownedBy("bs", 2, 3)}
	for _, k := range keys {
		if st, _, b := do(t, "PUT", s0.URL+"/v1/keys/"+k, s0.Token, []byte("v-"+k), nil); st != http.StatusNoContent {
			t.Fatalf("PUT %s: %d %s", k, st, b)
		}
	}
	// Shard 0 has not seen shard 1 fail yet: its part is sent, and waits.
	c.Shards[1].Freeze(t)
	body := []byte(fmt.Sprintf(`{"keys":[{"key":%q},{"key":%q},{"key":%q}]}`, keys[0], keys[1], keys[2]))
	st, hdr, b := do(t, "POST", s0.URL+"/v1/batch/get", s0.Token, body, nil)
	if st != http.StatusOK || hdr.Get(wire.HeaderFailedKeys) != "1" {
		t.Fatalf("batch get with shard 1 stalled: %d, %s %q; want 200 and 1", st, wire.HeaderFailedKeys, hdr.Get(wire.HeaderFailedKeys))
	}
	rr := wire.NewRecordReader(bytes.NewReader(b))
	for i, k := range keys {
		rec, val, err := rr.Next()
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		v, _ := io.ReadAll(val)
		switch {
		case rec.Key != k:
			t.Fatalf("record %d is %q, want %q", i, rec.Key, k)
		case i == 1 && (rec.Error != wire.CodeShardUnavailable || rec.Found == nil || *rec.Found):
			t.Errorf("the stalled shard's key: %+v, want found false and %s", rec, wire.CodeShardUnavailable)
		case i != 1 && (rec.Error != "" || string(v) != "v-"+k):
			t.Errorf("record %d: %+v %q, want v-%s", i, rec, v, k)
		}
	}
}

// TestStalledShardDropsAWriteItsClientGaveUp: a write sent to a shard
// that was stopped (a frozen pod), whose client then gave up and closed
// the connection (a timeout), is dropped when the shard runs again (code
// 499 in its metrics), not forwarded: meanwhile the client wrote the key
// again through another shard, and the old write, applied late, undid
// that acknowledged one.
func TestStalledShardDropsAWriteItsClientGaveUp(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	s0, s1 := c.Shards[0], c.Shards[1]
	key := ownedBy("late", 1, 2)
	// A forward first: shard 0 keeps a connection to shard 1 open.
	if st, _, b := do(t, "PUT", s0.URL+"/v1/keys/"+key, s0.Token, []byte("first"), nil); st != http.StatusNoContent {
		t.Fatalf("PUT through shard 0: %d %s", st, b)
	}
	s0.Freeze(t)
	// The kernel takes the connection and the request while the process
	// is stopped.
	conn, err := net.Dial("tcp", strings.TrimPrefix(s0.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(conn, "PUT /v1/keys/%s HTTP/1.1\r\nHost: s0\r\nAuthorization: Bearer %s\r\nContent-Length: 3\r\n\r\nold", key, s0.Token); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if st, _, b := do(t, "PUT", s1.URL+"/v1/keys/"+key, s1.Token, []byte("new"), nil); st != http.StatusNoContent {
		t.Fatalf("PUT through shard 1: %d %s", st, b)
	}
	s0.Thaw(t)
	puts := func() (total, dropped float64) { return keyPuts(t, s0) }
	pollUntil(t, 15*time.Second, "shard 0 to serve the PUT it took while stopped", func() (bool, string) {
		total, dropped := puts()
		return total > 1, fmt.Sprintf("%v served, %v dropped", total, dropped)
	})
	if st, _, b := do(t, "GET", s1.URL+"/v1/keys/"+key, s1.Token, nil, nil); st != http.StatusOK || string(b) != "new" {
		t.Errorf("the key after shard 0 ran again: %d %q, want the acknowledged \"new\"", st, b)
	}
	if total, dropped := puts(); dropped != 1 {
		t.Errorf("shard 0 served %v PUTs, dropped (499) %v; want the second dropped", total, dropped)
	}
}

// keyPuts counts the PUTs of a key srv has served, and those it dropped
// because their client had gone (499), from its metrics.
func keyPuts(t *testing.T, srv *testserver.Server) (total, dropped float64) {
	t.Helper()
	for _, line := range strings.Split(scrape(t, srv), "\n") {
		series, v, _ := strings.Cut(line, " ")
		if strings.HasPrefix(series, `diskcache_http_requests_total{`) && strings.HasSuffix(series, `method="PUT",route="/v1/keys/{key}"}`) {
			n, _ := strconv.ParseFloat(v, 64)
			total += n
			if strings.Contains(series, `code="499"`) {
				dropped += n
			}
		}
	}
	return total, dropped
}

// TestStalledOwnerAnswersFast: once a forward to a stalled owner has
// waited, the shard checks the owner's health; when it does not answer,
// the waiting forward is given up (504 for an incr, which the owner may
// still apply; 503 for a read) and the other requests for its keys get 503
// shard_unavailable within a client's timeout (each waited out the request
// timeout, and a client behind one URL gave up on the whole cache). Once
// it answers again, they are served.
func TestStalledOwnerAnswersFast(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{Args: []string{"--request-timeout", "20s"}})
	s0 := c.Shards[0]
	k1, k1b := ownedBy("slow", 1, 2), ownedBy("slower", 1, 2)
	get := func(key string, timeout time.Duration) (int, string, error) {
		req, _ := http.NewRequest("GET", s0.URL+"/v1/keys/"+key, nil)
		req.Header.Set("Authorization", "Bearer "+s0.Token)
		resp, err := (&http.Client{Timeout: timeout}).Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	if st, b, err := get(k1, 5*time.Second); err != nil || st != http.StatusNotFound {
		t.Fatalf("get before: %d %s %v", st, b, err)
	}
	c.Shards[1].Freeze(t)
	hung := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", s0.URL+"/v1/keys/"+k1+"/incr", nil)
		req.Header.Set("Authorization", "Bearer "+s0.Token)
		st := 0
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			st = resp.StatusCode
		}
		hung <- st
	}()
	answered := false
	for attempt := 0; attempt < 10 && !answered; attempt++ {
		st, b, err := get(k1b, 3*time.Second)
		if err == nil {
			if st != http.StatusServiceUnavailable || !strings.Contains(b, wire.CodeShardUnavailable) {
				t.Fatalf("a key of the stalled shard: %d %s, want 503 shard_unavailable", st, b)
			}
			answered = true
		}
	}
	if !answered {
		t.Fatal("no request for the stalled shard's keys was answered within a 3 s client timeout")
	}
	// The incr: 504 if it reached the owner (it may still apply it), 503
	// if it never did (a new connection to the stalled owner failed).
	if st := <-hung; st != http.StatusGatewayTimeout && st != http.StatusServiceUnavailable {
		t.Fatalf("the incr to the stalled owner: %d, want 504 or 503", st)
	}
	// A read that waits is given up at the failed check: 503.
	if st, b, err := get(k1, 5*time.Second); err != nil || st != http.StatusServiceUnavailable {
		t.Fatalf("a read of the stalled shard: %d %s %v, want 503", st, b, err)
	}
	c.Shards[1].Thaw(t)
	// Answered 503 at once until the next check (at most a second later)
	// finds the shard answering again.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, b, err := get(k1b, 5*time.Second)
		if err == nil && st == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the resumed shard's keys: %d %s %v", st, b, err)
		}
		time.Sleep(50 * time.Millisecond) // a poll's pace, not a wait for an event
	}
}

// TestNoForwardGoesToAShardTakenDown: once a stalled owner has failed its
// health check, no request for its keys is sent to it (it tried one per
// second, which waited out the check, and a write so sent could be applied
// when the owner ran again): each is answered 503 at once, as the shard
// checks the owner in the background, and forwards to it again once it
// answers.
func TestNoForwardGoesToAShardTakenDown(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{Args: []string{"--request-timeout", "20s"}})
	s0 := c.Shards[0]
	key := ownedBy("down", 1, 2)
	get := func() (int, string) {
		t.Helper()
		st, _, b := do(t, "GET", s0.URL+"/v1/keys/"+key, s0.Token, nil, nil)
		return st, string(b)
	}
	if st, b := get(); st != http.StatusNotFound {
		t.Fatalf("get before: %d %s", st, b)
	}
	c.Shards[1].Freeze(t)
	// The first get is forwarded, waits, and is given up at the check.
	if st, b := get(); st != http.StatusServiceUnavailable || !strings.Contains(b, "took the request") {
		t.Fatalf("the first get of the stalled shard's key: %d %s, want 503 after the forward was taken", st, b)
	}
	// For three health periods (a second each), every get is answered
	// without a forward (a forward given up says it took the request, or
	// that the request did not reach the shard).
	n := 0
	for start := time.Now(); time.Since(start) < 3*time.Second; n++ {
		st, b := get()
		var e wire.Error
		if st != http.StatusServiceUnavailable || json.Unmarshal([]byte(b), &e) != nil ||
			!strings.HasSuffix(e.Message, "is unavailable: it does not answer its health check") {
			t.Fatalf("get %d of a key of the shard taken for down: %d %s, want 503 without a forward", n, st, b)
		}
	}
	c.Shards[1].Thaw(t)
	pollUntil(t, 15*time.Second, "the thawed shard's key to be served", func() (bool, string) {
		st, b := get()
		return st == http.StatusNotFound, fmt.Sprintf("%d %s", st, b)
	})
}

// TestLaggingShardRedoesItsBatch: a batch get or delete through a shard
// that has not yet learned the newer epoch is refused by the owners on it
// (409), and the shard adopts the newer topology and splits the batch
// again, once: the client gets its answer, not a 502 (and never a miss
// from an owner that had handed the key off).
func TestLaggingShardRedoesItsBatch(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	k0, k1 := ownedBy("lag", 0, 2), ownedBy("lag", 1, 2)
	for _, k := range []string{k0, k1} {
		if st, _, b := do(t, "PUT", c.Shards[1].URL+"/v1/keys/"+k, c.Shards[1].Token, []byte("v-"+k), nil); st != http.StatusNoContent {
			t.Fatalf("PUT %s: %d %s", k, st, b)
		}
	}
	next, _ := json.Marshal(topology.Announcement{Layout: topology.Layout{Epoch: 2, Shards: c.URLs}})
	if st, _, b := do(t, "PUT", c.Shards[1].URL+"/v1/topology", c.AdminToken, next, nil); st != http.StatusOK {
		t.Fatalf("announcing epoch 2 to shard 1: %d %s", st, b)
	}
	body := []byte(fmt.Sprintf(`{"keys":[{"key":%q},{"key":%q}]}`, k0, k1))
	st, _, b := do(t, "POST", c.Shards[0].URL+"/v1/batch/get", c.Shards[0].Token, body, nil)
	if st != http.StatusOK || !strings.Contains(string(b), "v-"+k0) || !strings.Contains(string(b), "v-"+k1) {
		t.Fatalf("batch get through the lagging shard: %d %s", st, b)
	}
	var top topology.Topology
	if st, _, b := do(t, "GET", c.Shards[0].URL+"/v1/topology", c.Shards[0].Token, nil, nil); st != http.StatusOK || json.Unmarshal(b, &top) != nil || top.Epoch != 2 {
		t.Fatalf("the lagging shard's topology after the batch: %d %s, want epoch 2", st, b)
	}
}

// TestLaggingShardRedoesItsBatchSet: a batch set through a shard that has
// not yet learned the newer epoch is refused by the owners on it (409);
// the shard adopts the newer topology and sends the refused records again
// by it, once: every record is stored, and the client gets a 200.
func TestLaggingShardRedoesItsBatchSet(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	k0, k1 := ownedBy("lagset", 0, 2), ownedBy("lagset", 1, 2)
	next, _ := json.Marshal(topology.Announcement{Layout: topology.Layout{Epoch: 2, Shards: c.URLs}})
	if st, _, b := do(t, "PUT", c.Shards[1].URL+"/v1/topology", c.AdminToken, next, nil); st != http.StatusOK {
		t.Fatalf("announcing epoch 2 to shard 1: %d %s", st, b)
	}
	var body bytes.Buffer
	rw := wire.NewRecordWriter(&body)
	for _, k := range []string{k0, k1} {
		if err := rw.Write(wire.Record{Key: k, Type: "bytes"}, []byte("v-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	st, _, b := do(t, "POST", c.Shards[0].URL+"/v1/batch/set", c.Shards[0].Token, body.Bytes(),
		map[string]string{"Content-Type": wire.RecordsContentType})
	if st != http.StatusOK || !strings.Contains(string(b), `"stored":2`) {
		t.Fatalf("batch set through the lagging shard: %d %s", st, b)
	}
	for _, k := range []string{k0, k1} {
		if st, _, b := do(t, "GET", c.Shards[1].URL+"/v1/keys/"+k, c.Shards[1].Token, nil, nil); st != http.StatusOK || string(b) != "v-"+k {
			t.Fatalf("GET %s after the batch: %d %s", k, st, b)
		}
	}
}

// TestLaggingShardBatchSetOverTheRedoBound: a batch set whose values pass
// batchRedoBytes streams on without being kept (records before the bound
// were kept and written, those after stream), so through a lagging shard
// the refused records are reported, not redone; through a shard on the
// current epoch every record is stored.
func TestLaggingShardBatchSetOverTheRedoBound(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	k0, k1 := ownedBy("bound", 0, 2), ownedBy("bound", 1, 2)
	big := bytes.Repeat([]byte("b"), 1<<20+1) // past batchRedoBytes
	batch := func(prefix string) []byte {
		var body bytes.Buffer
		rw := wire.NewRecordWriter(&body)
		for _, rec := range []struct {
			key   string
			value []byte
		}{{k0, []byte(prefix + "small0")}, {k1, []byte(prefix + "small1")}, {k0 + "x", big}, {k1 + "x", []byte(prefix + "after")}} {
			if err := rw.Write(wire.Record{Key: prefix + rec.key, Type: "bytes"}, rec.value); err != nil {
				t.Fatal(err)
			}
		}
		return body.Bytes()
	}
	hdr := map[string]string{"Content-Type": wire.RecordsContentType}
	st, _, b := do(t, "POST", c.Shards[0].URL+"/v1/batch/set", c.Shards[0].Token, batch("a"), hdr)
	if st != http.StatusOK || !strings.Contains(string(b), `"stored":4`) {
		t.Fatalf("batch set over the bound: %d %.300s", st, b)
	}
	for k, want := range map[string][]byte{"a" + k0: []byte("asmall0"), "a" + k1: []byte("asmall1"), "a" + k0 + "x": big, "a" + k1 + "x": []byte("aafter")} {
		if st, _, got := do(t, "GET", c.Shards[1].URL+"/v1/keys/"+k, c.Shards[1].Token, nil, nil); st != http.StatusOK || !bytes.Equal(got, want) {
			t.Fatalf("GET %s: %d, %d bytes, want %d", k, st, len(got), len(want))
		}
	}

	next, _ := json.Marshal(topology.Announcement{Layout: topology.Layout{Epoch: 2, Shards: c.URLs}})
	if st, _, b := do(t, "PUT", c.Shards[1].URL+"/v1/topology", c.AdminToken, next, nil); st != http.StatusOK {
		t.Fatalf("announcing epoch 2 to shard 1: %d %s", st, b)
	}
	st, _, b = do(t, "POST", c.Shards[0].URL+"/v1/batch/set", c.Shards[0].Token, batch("l"), hdr)
	var res struct {
		Stored int                          `json:"stored"`
		Failed []cacheserver.BatchSetFailed `json:"failed"`
	}
	if st != http.StatusBadGateway || json.Unmarshal(b, &res) != nil || len(res.Failed) == 0 || res.Stored+len(res.Failed) != 4 {
		t.Fatalf("batch set over the bound through the lagging shard: %d %.400s", st, b)
	}
	for _, f := range res.Failed {
		if f.Error != wire.CodeWrongEpoch {
			t.Errorf("record %d failed with %q, want %q", f.Index, f.Error, wire.CodeWrongEpoch)
		}
	}
}

// TestForwardedBatchHoldsOnlyOwnedKeys: a batch that says another shard
// forwarded it (Diskcache-Forwarded-Epoch) is served at this shard only
// for keys it owns, as a forwarded single key is. A client sending the
// header itself made a shard store values for other shards' keys, which
// came back over the owners' values after a change of shards.
func TestForwardedBatchHoldsOnlyOwnedKeys(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	s0 := c.Shards[0]
	mine, theirs := ownedBy("fb", 0, 2), ownedBy("fb", 1, 2)
	forwarded := map[string]string{wire.HeaderForwardedEpoch: "1"}
	var body bytes.Buffer
	rw := wire.NewRecordWriter(&body)
	for _, k := range []string{mine, theirs} {
		if err := rw.Write(wire.Record{Key: k}, []byte("planted")); err != nil {
			t.Fatal(err)
		}
	}
	set := map[string]string{"Content-Type": wire.RecordsContentType, wire.HeaderForwardedEpoch: "1"}
	if st, _, b := do(t, "POST", s0.URL+"/v1/batch/set", s0.Token, body.Bytes(), set); st != http.StatusConflict || !strings.Contains(string(b), wire.CodeWrongEpoch) {
		t.Fatalf("a forwarded batch set with shard 1's key: %d %s, want 409 wrong_epoch", st, b)
	}
	if onShard(t, s0, theirs) {
		t.Fatal("shard 0 stored a key of shard 1")
	}
	keys := fmt.Sprintf(`{"keys":[{"key":%q},{"key":%q}]}`, mine, theirs)
	for _, path := range []string{"/v1/batch/get", "/v1/batch/delete"} {
		if st, _, b := do(t, "POST", s0.URL+path, s0.Token, []byte(keys), forwarded); st != http.StatusConflict || !strings.Contains(string(b), wire.CodeWrongEpoch) {
			t.Errorf("a forwarded %s with shard 1's key: %d %s, want 409 wrong_epoch", path, st, b)
		}
	}
	// The shards' own forwarding is unchanged: a batch through shard 0
	// stores each key at its owner.
	if st, _, b := do(t, "POST", s0.URL+"/v1/batch/set", s0.Token, body.Bytes(), map[string]string{"Content-Type": wire.RecordsContentType}); st != http.StatusOK || !strings.Contains(string(b), `"stored":2`) {
		t.Fatalf("a batch set through shard 0: %d %s", st, b)
	}
	if !onShard(t, s0, mine) || onShard(t, s0, theirs) || !onShard(t, c.Shards[1], theirs) {
		t.Fatal("the batch set did not store each key at its owner only")
	}
}

// TestUnknownEpochIsAskedForOnce: requests naming an epoch no shard has
// (a client sending Diskcache-Forwarded-Epoch itself) are answered 503
// no_topology, and the shard asks its peers for that epoch once, not once
// per request: each request cost a round of topology fetches.
func TestUnknownEpochIsAskedForOnce(t *testing.T) {
	c := testserver.StartCluster(t, 3, testserver.Options{Args: []string{"--metrics-interval", "0"}})
	s0 := c.Shards[0]
	fetches := func() float64 {
		n := 0.0
		for _, s := range c.Shards[1:] {
			n += metricValue(t, s, `diskcache_http_requests_total{code="200",method="GET",route="/v1/topology"}`)
		}
		return n
	}
	// A fetch of its own first, so that the series exists.
	for _, s := range c.Shards[1:] {
		if st, _, b := do(t, "GET", s.URL+"/v1/topology", s.Token, nil, nil); st != http.StatusOK {
			t.Fatalf("GET /v1/topology: %d %s", st, b)
		}
	}
	before := fetches()
	key := ownedBy("future", 0, 3)
	const requests = 20
	for range requests {
		st, _, b := do(t, "GET", s0.URL+"/v1/keys/"+key, s0.Token, nil, map[string]string{wire.HeaderForwardedEpoch: "999"})
		if st != http.StatusServiceUnavailable || !strings.Contains(string(b), wire.CodeNoTopology) {
			t.Fatalf("a request naming epoch 999: %d %s, want 503 no_topology", st, b)
		}
	}
	// A round asks the 2 peers, at most one round per 100 ms: fewer rounds
	// than requests unless each request took that long.
	n := fetches() - before
	t.Logf("%v topology fetches for %d requests naming an unknown epoch", n, requests)
	if n >= 2*requests {
		t.Fatalf("%v topology fetches for %d requests naming an unknown epoch, want fewer rounds than requests", n, requests)
	}
}

// servingLine is what the server's "serving" log line says of the
// topology it starts by.
type servingLine struct {
	Epoch  int64 `json:"topology_epoch"`
	Shards int   `json:"topology_shards"`
}

// lastServingLine reads the last "serving" line srv logged.
func lastServingLine(t *testing.T, srv *testserver.Server) servingLine {
	t.Helper()
	var last servingLine
	found := false
	for _, line := range strings.Split(srv.Logs(), "\n") {
		var rec struct {
			Msg string `json:"msg"`
			servingLine
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving" {
			last, found = rec.servingLine, true
		}
	}
	if !found {
		t.Fatalf("no serving line in:\n%s", srv.Logs())
	}
	return last
}
