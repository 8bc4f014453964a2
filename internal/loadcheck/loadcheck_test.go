package loadcheck

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// mapStore is a correct in-memory store; its faults make it wrong on
// purpose, to show that the check notices.
type mapStore struct {
	mu     sync.Mutex
	m      map[string][]byte
	faults string // "", "lose", "keep-deleted", "stale", "late"
	old    map[string][]byte
	held   map[string][]byte // "late": the last failed write of each key
}

var errStalled = errors.New("stalled")

// holdLate fails every write and applies the key's previous one instead,
// as a stalled server would, later, requests its client gave up on.
func (s *mapStore) holdLate(k string, v []byte) error {
	if h, ok := s.held[k]; ok {
		s.m[k] = h
	}
	s.held[k] = v
	return errStalled
}

func (s *mapStore) Set(_ context.Context, k string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.old[k] == nil {
		s.old[k] = v
	}
	if s.faults == "late" {
		return s.holdLate(k, v)
	}
	if s.faults == "lose" && len(s.m) > 5 {
		return nil // acknowledged, not kept
	}
	s.m[k] = v
	return nil
}

func (s *mapStore) Delete(_ context.Context, k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.faults != "keep-deleted" {
		delete(s.m, k)
	}
	return nil
}

func (s *mapStore) Get(_ context.Context, k string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.faults == "stale" && s.old[k] != nil {
		return s.old[k], true, nil
	}
	v, ok := s.m[k]
	return v, ok, nil
}

func run(t *testing.T, faults string) Counts {
	t.Helper()
	st := &mapStore{m: map[string][]byte{}, old: map[string][]byte{}, held: map[string][]byte{}, faults: faults}
	l := New(st, Config{Workers: 4, KeysPerWorker: 20})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { l.Run(context.Background(), stop); close(done) }()
	time.Sleep(50 * time.Millisecond) // how long the load runs, not a synchronisation
	close(stop)
	<-done
	c, err := l.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLedger(t *testing.T) {
	if c := run(t, ""); !c.Safe() || c.Sets == 0 || c.Deletes == 0 || c.Reads == 0 || c.Checked != 80 {
		t.Fatalf("a correct store: %v", c)
	}
	if c := run(t, "lose"); c.Lost == 0 && c.Stale == 0 {
		t.Fatalf("a store that loses writes: %v", c)
	}
	if c := run(t, "keep-deleted"); c.Resurrected == 0 {
		t.Fatalf("a store that keeps deleted keys: %v", c)
	}
	if c := run(t, "stale"); c.StaleReads == 0 || c.Stale == 0 {
		t.Fatalf("a store that serves old values: %v", c)
	}
	// Writes that failed may all happen, in any order, until one is
	// acknowledged: none of their outcomes is stale.
	if c := run(t, "late"); !c.Safe() || c.Errors == 0 || c.Checked != 80 {
		t.Fatalf("a store that applies failed writes late: %v", c)
	}
}
