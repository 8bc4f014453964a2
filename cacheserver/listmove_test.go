package cacheserver_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// setListedKeys sets n text keys through url and returns them sorted.
func setListedKeys(t *testing.T, url, token string, n int) []string {
	t.Helper()
	c := dataClient(t, url, token).Cache("")
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "listed-" + strconv.Itoa(i)
		if err := c.Set(context.Background(), kv.TextKey(keys[i]), kv.Text(strings.Repeat("v", 100)), kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(keys)
	return keys
}

// missingFrom returns the keys of want that got lacks.
func missingFrom(want, got []string) []string {
	var missing []string
	for _, k := range want {
		if !slices.Contains(got, k) {
			missing = append(missing, k)
		}
	}
	return missing
}

// TestListingDuringAShrinkHoldsTheDepartingShards: while a shrink 3 → 2
// has moved nothing yet (its handoff stalled at 1 byte/s), a third of the
// keys are still on the departing shard, which the new layout no longer
// names; a listing through any shard, either way, holds every key once.
func TestListingDuringAShrinkHoldsTheDepartingShards(t *testing.T) {
	c := testserver.StartCluster(t, 3, testserver.Options{Args: stalledMove})
	tok := c.Shards[0].Token
	m := &mover{t: t, admin: c.AdminToken, layout: topology.Layout{Epoch: 1, Shards: c.URLs}}
	want := setListedKeys(t, c.URLs[0], tok, 150)
	all := m.announce(c.URLs[:2])
	if n := itemsOn(t, c.Shards[2]); n == 0 {
		t.Fatal("the departing shard holds nothing: the test needs keys there")
	}
	for i, u := range all {
		for _, q := range []string{"", "&reverse=true"} {
			got, _ := listAll(t, u, tok, "/v1/keys", 7, q, nil)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("through shard %d%s: %d keys, missing %v", i, q, len(got), missingFrom(want, got))
			}
		}
	}
}

// TestListingWhileKeysMoveMissesNone: listings run back to back, a few
// keys a page, while a shrink 3 → 2 and then a grow 2 → 3 move keys at
// 4 KiB/s; every listing holds every key (some twice, as Redis's SCAN
// may), whichever shard it goes through and whichever way.
func TestListingWhileKeysMoveMissesNone(t *testing.T) {
	c := testserver.StartCluster(t, 3, testserver.Options{Args: slowMove})
	tok := c.Shards[0].Token
	m := &mover{t: t, admin: c.AdminToken, layout: topology.Layout{Epoch: 1, Shards: c.URLs}}
	want := setListedKeys(t, c.URLs[0], tok, 600)
	for _, move := range []struct {
		name   string
		shards []string
	}{{"3 → 2", c.URLs[:2]}, {"2 → 3", c.URLs}} {
		all := m.announce(move.shards)
		listings, twice := 0, 0
		for stillMoving(t, m, all) {
			u, q := all[listings%len(all)], ""
			if listings%2 == 1 {
				q = "&reverse=true"
			}
			got, _ := listAll(t, u, tok, "/v1/keys", 5, q, nil)
			if missing := missingFrom(want, got); len(missing) > 0 {
				t.Fatalf("%s, listing %d through %s%s missed %d keys: %v", move.name, listings, u, q, len(missing), missing)
			}
			twice += len(got) - len(want)
			listings++
		}
		t.Logf("%s: %d listings while keys moved, none missed a key; %d keys listed twice", move.name, listings, twice)
		if listings == 0 {
			t.Fatalf("%s: the move ended before a listing ran", move.name)
		}
		m.waitDrained(all)
		m.end(all)
	}
}

// TestListingAcrossAnEpochChangeAsksToRestart: a cursor from before a
// change of topology is refused with 409 listing_restart, which the
// clients take as "list again from the start".
func TestListingAcrossAnEpochChangeAsksToRestart(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	tok := c.Shards[0].Token
	m := &mover{t: t, admin: c.AdminToken, layout: topology.Layout{Epoch: 1, Shards: c.URLs}}
	setListedKeys(t, c.URLs[0], tok, 20)
	get := func(u string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := get(c.URLs[0] + "/v1/keys?limit=3")
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	cursor := resp.Header.Get(wire.HeaderNextCursor)
	if resp.StatusCode != http.StatusOK || cursor == "" {
		t.Fatalf("first page: %s, cursor %q", resp.Status, cursor)
	}
	m.end(m.announce(c.URLs))
	for _, u := range c.URLs {
		resp := get(u + "/v1/keys?limit=3&cursor=" + cursor)
		var body struct {
			Error string `json:"error"`
		}
		err := json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusConflict || err != nil || body.Error != wire.CodeListingRestart {
			t.Errorf("through %s after the epoch changed: %s %q (%v); want 409 %s", u, resp.Status, body.Error, err, wire.CodeListingRestart)
		}
	}
}
