package cacheserver_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// TestWriteItsClientGaveUpMidwayIsDropped: a shard that has taken a
// write, and checked its client was there, finds the client gone by the
// time it would forward the write (another shard's key) or apply it (its
// own): it does neither (499). That is what a shard stopped mid-request (a
// frozen pod) finds when it runs again, its client having given up seconds
// earlier and written the key since through another shard: forwarded or
// applied then, the old write would land over the acknowledged one. Here
// the client closes its side in the very segment that ends the body, after
// the shard has begun to read it (its 100 Continue), so the check before
// the handler has passed and only the later ones can see it.
func TestWriteItsClientGaveUpMidwayIsDropped(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	s0, s1 := c.Shards[0], c.Shards[1]
	key := ownedBy("midway", 1, 2)
	if st, _, b := do(t, "PUT", s0.URL+"/v1/keys/"+key, s0.Token, []byte("first"), nil); st != http.StatusNoContent {
		t.Fatalf("PUT through shard 0: %d %s", st, b)
	}
	_, droppedBefore := keyPuts(t, s0)

	send := func(srv *testserver.Server, value string, giveUp bool) string {
		t.Helper()
		status, err := testserver.PutExpectContinue(strings.TrimPrefix(srv.URL, "http://"), srv.Token, "/v1/keys/"+key, value, giveUp)
		if err != nil {
			t.Fatalf("PUT with 100-continue: %v", err)
		}
		return status
	}

	// The same request from a client that waits is forwarded.
	if got := send(s0, "waited", false); !strings.HasPrefix(got, "204") {
		t.Fatalf("PUT with 100-continue through shard 0: %s", got)
	}
	if st, _, b := do(t, "GET", s1.URL+"/v1/keys/"+key, s1.Token, nil, nil); st != http.StatusOK || string(b) != "waited" {
		t.Fatalf("the key after a PUT whose client waited: %d %q", st, b)
	}
	answer := send(s0, "given up", true)
	if st, _, b := do(t, "GET", s1.URL+"/v1/keys/"+key, s1.Token, nil, nil); st != http.StatusOK || string(b) != "waited" {
		t.Errorf("the key after a PUT whose client gave up midway (answered %s): %d %q, want \"waited\" still", answer, st, b)
	}
	if _, dropped := keyPuts(t, s0); dropped != droppedBefore+1 {
		t.Errorf("shard 0 dropped (499) %v PUTs, want 1", dropped-droppedBefore)
	}

	// The owner itself, asked directly, applies no write whose client has
	// gone when its turn to be written comes.
	_, droppedBefore = keyPuts(t, s1)
	answer = send(s1, "given up at the owner", true)
	if st, _, b := do(t, "GET", s1.URL+"/v1/keys/"+key, s1.Token, nil, nil); st != http.StatusOK || string(b) != "waited" {
		t.Errorf("the key after a PUT to its owner whose client gave up midway (answered %s): %d %q, want \"waited\" still", answer, st, b)
	}
	if _, dropped := keyPuts(t, s1); dropped != droppedBefore+1 {
		t.Errorf("shard 1 dropped (499) %v PUTs, want 1", dropped-droppedBefore)
	}
}
