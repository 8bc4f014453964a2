package cacheserver_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/loadcheck"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// clientStore runs the load through Go clients: each call goes through one
// of several clients, so requests arrive at every shard (and forward) or
// straight at the owner.
type clientStore struct{ clients []*client.Client }

func (s clientStore) pick() *client.Cache { return s.clients[rand.IntN(len(s.clients))].Cache("") }

func (s clientStore) Set(ctx context.Context, k string, v []byte) error {
	return s.pick().Set(ctx, kv.TextKey(k), kv.Bytes(v), kv.SetOptions{})
}

func (s clientStore) Delete(ctx context.Context, k string) error {
	_, err := s.pick().Delete(ctx, kv.TextKey(k))
	return err
}

func (s clientStore) Get(ctx context.Context, k string) ([]byte, bool, error) {
	it, ok, err := s.pick().Get(ctx, kv.TextKey(k))
	return it.Value.Data, ok, err
}

// TestRoutedLoadLosesNothing: writers, deleters and readers through every
// shard and through a smart client at once; afterwards every acknowledged
// write reads back as acknowledged, through every shard.
func TestRoutedLoadLosesNothing(t *testing.T) {
	c := testserver.StartCluster(t, 3, testserver.Options{})
	var clients []*client.Client
	for i, u := range c.URLs {
		cl, err := client.New(u, client.Options{Token: c.Shards[i].Token, DirectOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, cl)
	}
	smart, _ := client.New(c.URLs[0], client.Options{Token: c.Shards[0].Token})
	clients = append(clients, smart)
	l := loadcheck.New(clientStore{clients}, loadcheck.Config{Workers: 8, KeysPerWorker: 100})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { l.Run(context.Background(), stop); close(done) }()
	time.Sleep(3 * time.Second) // the length of the load
	close(stop)
	<-done
	for i, cl := range clients {
		counts, err := l.VerifyThrough(context.Background(), clientStore{[]*client.Client{cl}})
		if err != nil {
			t.Fatalf("verify through client %d: %v", i, err)
		}
		t.Logf("routed load, read back through client %d: %v", i, counts)
		if !counts.Safe() || counts.Errors != 0 || counts.Sets == 0 {
			t.Fatalf("routed load: %v; last: %v", counts, l.LastError())
		}
	}
}
