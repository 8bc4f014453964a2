package client

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// TestTopologyCalls runs GET and PUT /v1/topology against real shards: a
// newer announcement is adopted, an older one is refused with the server's
// topology, and the data token cannot announce at all.
func TestTopologyCalls(t *testing.T) {
	ctx := context.Background()
	cl := testserver.StartCluster(t, 2, testserver.Options{})
	admin, err := New(cl.URLs[1], Options{Token: cl.AdminToken, DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := admin.Topology(ctx)
	if err != nil || got.Epoch != 1 || !slices.Equal(got.Shards, cl.URLs) || got.Self != 1 {
		t.Fatalf("Topology = %+v, %v; want epoch 1 over %q, self 1", got, err, cl.URLs)
	}

	next := topology.Announcement{Layout: topology.Layout{Epoch: 2, Shards: cl.URLs[:1]}}
	if got, err = admin.PutTopology(ctx, next); err != nil || got.Epoch != 2 || !slices.Equal(got.Shards, cl.URLs[:1]) {
		t.Fatalf("PutTopology(epoch 2) = %+v, %v", got, err)
	}
	if got, err = admin.PutTopology(ctx, next); err != nil || got.Epoch != 2 {
		t.Fatalf("the same announcement again = %+v, %v; want 200", got, err)
	}

	_, err = admin.PutTopology(ctx, topology.Announcement{Layout: topology.Layout{Epoch: 1, Shards: cl.URLs}})
	cur, ok := IsTopologyConflict(err)
	if !errors.Is(err, ErrTopologyConflict) || !ok || cur.Epoch != 2 || !slices.Equal(cur.Shards, cl.URLs[:1]) {
		t.Fatalf("an older announcement: %v (current %+v), want a conflict carrying epoch 2", err, cur)
	}

	data, err := New(cl.URLs[1], Options{Token: cl.Shards[1].Token, DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = data.PutTopology(ctx, topology.Announcement{Layout: topology.Layout{Epoch: 3, Shards: cl.URLs}})
	var ce *Error
	if !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
		t.Fatalf("PUT with the data token: %v, want 403", err)
	}
}
