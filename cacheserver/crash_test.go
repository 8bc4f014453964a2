package cacheserver_test

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// Shape of the crash test's load.
const (
	crashWriters        = 8   // goroutines writing through the Go client
	crashKeysPerW       = 8   // keys each writer owns (and overwrites and deletes)
	crashCounters       = 3   // counters all writers increment
	crashRounds         = 3   // kills and restarts on the same directory
	crashAcksBeforeKill = 300 // acknowledged writes in a round before SIGKILL
	crashFileValue      = 40 << 10
	crashBigValue       = 192 << 10
)

// crashValue is the deterministic value of version v of key j of writer w:
// keys j%4 == 0 and 2 get 40 KiB and j%4 == 1 192 KiB (value files, the
// latter streamed with chunked encoding), the others 100 B to 2 KiB (in
// SQLite).
func crashValue(w, j, v int) []byte {
	var size int
	switch j % 4 {
	case 0, 2:
		size = crashFileValue
	case 1:
		size = crashBigValue
	default:
		size = 100 + (w*31+j*7+v)%1900
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%d/%d", w, j, v)
	rng := rand.New(rand.NewPCG(h.Sum64(), uint64(size)))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func crashFileBacked(j int) bool { return j%4 != 3 }

func crashKey(w, j int) kv.Key { return kv.TextKey(fmt.Sprintf("w%d/k%d", w, j)) }

func counterKey(c int) kv.Key { return kv.TextKey(fmt.Sprintf("counter-%d", c)) }

// crashOp is what writer w does in its i-th operation: increment a
// counter (every sixth), or set or delete one of its keys. It goes over
// its keys in passes: two passes of sets (an insert, then a replacement:
// the old value file is removed only after the commit), then a pass of
// deletes (the same), and again.
func crashOp(w, i int) (counter, key int, del bool) {
	if i%6 == 5 {
		return (w + i) % crashCounters, -1, false
	}
	n := i - i/6 // key operations so far
	return -1, n % crashKeysPerW, (n/crashKeysPerW)%3 == 2
}

// keyState is what a writer knows about one of its keys. Versions are -1
// for no value (never set, or deleted).
type keyState struct {
	acked    int  // version the last acknowledged set or delete left
	pending  bool // a set or delete was sent and never answered
	inFlight int  // the version that pending operation writes
}

// TestCrashKeepsAcknowledgedWrites runs writers against a real cacheserver
// process, kills it with SIGKILL after crashAcksBeforeKill acknowledged
// writes (counted, not timed), restarts it on the same directory and
// checks that every acknowledged write reads back exactly: each key holds
// its last acknowledged value (or none after an acknowledged delete), or
// what the operation in flight at the kill wrote; each counter is at
// least its acknowledged increments and at most those plus the increments
// in flight. Check then finds nothing but value files and directories of
// writes in flight at the kill (never acknowledged: the engine writes the
// file before the transaction that names it commits, and removes a
// replaced or deleted file after it), each of which must hold exactly a
// value an in-flight write was writing or replacing; check with fix=true
// removes them and leaves every acknowledged value intact. Most writes
// replace or delete value files, and the test kills the server
// crashRounds times, so a file removed before its transaction commits is
// seen, not just possible.
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills a cacheserver process")
	}
	srv := testserver.Start(t, testserver.Options{Args: []string{"--fanout", "2"}})
	var (
		states    [crashWriters][crashKeysPerW]keyState
		ctrLo     [crashCounters]int64 // value a counter has at least
		ctrSent   [crashCounters]int64 // increments beyond ctrLo sent
		totalAcks int64
	)
	for w := range crashWriters {
		for j := range crashKeysPerW {
			states[w][j] = keyState{acked: -1}
		}
	}
	next := [crashWriters]int{} // each writer's next operation
	for round := 1; round <= crashRounds; round++ {
		acks := crashRound(t, srv, &states, &next, &ctrLo, &ctrSent)
		totalAcks += acks
		if t.Failed() {
			return
		}
		srv.Restart(t)
		crashVerify(t, srv, round, acks, &states, &ctrLo, &ctrSent)
		if t.Failed() {
			return
		}
	}
	t.Logf("%d writes acknowledged over %d crashes", totalAcks, crashRounds)
}

// crashRound runs the writers until crashAcksBeforeKill writes are
// acknowledged, kills the server and returns the acknowledged count.
func crashRound(t *testing.T, srv *testserver.Server, states *[crashWriters][crashKeysPerW]keyState,
	next *[crashWriters]int, ctrLo, ctrSent *[crashCounters]int64) int64 {
	ctx := context.Background()
	// No retries: a write is acknowledged by its one answer, and nothing
	// may be resent to the restarted server.
	writer, err := client.New(srv.URL, client.Options{Token: srv.Token, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	cache := writer.Cache("")
	var (
		acks       atomic.Int64
		reached    = make(chan struct{})
		killed     atomic.Bool
		ctrAcks    [crashCounters]atomic.Int64
		ctrSends   [crashCounters]atomic.Int64
		unexpected = make(chan error, crashWriters)
		wg         sync.WaitGroup
	)
	ack := func() {
		if acks.Add(1) == crashAcksBeforeKill {
			close(reached)
		}
	}
	for w := range crashWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ; ; next[w]++ {
				i := next[w]
				ctr, j, del := crashOp(w, i)
				var err error
				switch {
				case ctr >= 0:
					ctrSends[ctr].Add(1)
					if _, err = cache.Incr(ctx, counterKey(ctr), kv.Int(1), kv.Int(0)); err == nil {
						ctrAcks[ctr].Add(1)
					}
				case del:
					st := &states[w][j]
					st.pending, st.inFlight = true, -1
					if _, err = cache.Delete(ctx, crashKey(w, j)); err == nil {
						st.acked, st.pending = -1, false
					}
				default:
					st := &states[w][j]
					st.pending, st.inFlight = true, i
					data := crashValue(w, j, i)
					opts := kv.SetOptions{}
					if j%4 == 1 {
						// Unknown length: chunked, streamed into a file.
						opts.Body = io.MultiReader(bytes.NewReader(data))
						err = cache.Set(ctx, crashKey(w, j), kv.Value{Type: kv.ValueBytes}, opts)
					} else {
						err = cache.Set(ctx, crashKey(w, j), kv.Bytes(data), opts)
					}
					if err == nil {
						st.acked, st.pending = i, false
					}
				}
				if err != nil {
					if !killed.Load() {
						unexpected <- fmt.Errorf("writer %d before the kill: %w", w, err)
					}
					next[w]++ // whatever was sent stays in flight
					return    // the server is gone
				}
				ack()
			}
		}()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	select {
	case <-reached:
	case <-allDone:
		t.Fatalf("writers stopped after %d acknowledged writes: %v", acks.Load(), <-unexpected)
	}
	killed.Store(true)
	srv.Kill() // SIGKILL, mid-load
	<-allDone
	close(unexpected)
	for err := range unexpected {
		t.Error(err)
	}
	for c := range crashCounters {
		ctrLo[c] += ctrAcks[c].Load()
		ctrSent[c] += ctrSends[c].Load() - ctrAcks[c].Load()
	}
	return acks.Load()
}

// crashVerify checks the restarted server against what the writers were
// told, then settles the state: what an in-flight operation left becomes
// the acknowledged state of the next round.
func crashVerify(t *testing.T, srv *testserver.Server, round int, acks int64,
	states *[crashWriters][crashKeysPerW]keyState, ctrLo, ctrSent *[crashCounters]int64) {
	ctx := context.Background()
	reader, err := client.New(srv.URL, client.Options{Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	rc := reader.Cache("")

	// Orphans that an in-flight write may have left: a prefix of the value
	// it was writing (the new file, not committed), or the whole value it
	// replaced or deleted (the old file, committed away but not yet
	// removed). One at most per operation.
	inFlightFiles := 0
	for w := range crashWriters {
		for j := range crashKeysPerW {
			if st := states[w][j]; st.pending && crashFileBacked(j) {
				inFlightFiles++
			}
		}
	}
	t.Logf("round %d: %d writes acknowledged before the kill; %d sets and deletes in flight, %d of them on value files",
		round, acks, countInFlight(states), inFlightFiles)

	verify := func(when string) {
		t.Helper()
		for w := range crashWriters {
			for j := range crashKeysPerW {
				st := states[w][j]
				it, ok, err := rc.Get(ctx, crashKey(w, j))
				if err != nil {
					t.Fatalf("%s: Get(%s): %v", when, crashKey(w, j), err)
				}
				switch {
				case ok && st.acked >= 0 && bytes.Equal(it.Value.Data, crashValue(w, j, st.acked)):
				case ok && st.pending && st.inFlight >= 0 && bytes.Equal(it.Value.Data, crashValue(w, j, st.inFlight)):
				case !ok && (st.acked < 0 || st.pending && st.inFlight < 0):
				default:
					t.Errorf("%s: key %s holds %d bytes (found %v); acknowledged version %d, in flight %v (version %d)",
						when, crashKey(w, j), len(it.Value.Data), ok, st.acked, st.pending, st.inFlight)
				}
			}
		}
		for c := range crashCounters {
			it, ok, err := rc.Get(ctx, counterKey(c))
			if err != nil {
				t.Fatal(err)
			}
			lo, hi := ctrLo[c], ctrLo[c]+ctrSent[c]
			n := int64(0)
			if ok {
				n = it.Value.Int
			}
			if n < lo || n > hi || (ok && it.Value.Type != kv.ValueInt) {
				t.Errorf("%s: %s = %s; want %d to %d", when, counterKey(c), it.Value, lo, hi)
			}
		}
	}
	when := fmt.Sprintf("round %d after restart", round)
	verify(when)

	warns, err := rc.Check(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	orphans, emptyDirs := 0, 0
	valueDir := regexp.MustCompile(`^[0-9]{3}/[0-9a-f]{2}(/[0-9a-f]{2})?$`)
	for _, wn := range warns {
		switch wn.Kind {
		case kv.WarnUnknownFile:
			orphans++
			got, err := os.ReadFile(wn.Path)
			if err != nil {
				t.Fatalf("unknown file %s: %v", wn.Path, err)
			}
			if !isInFlightOrphan(got, states) {
				t.Errorf("%s: unknown file %s (%d bytes) is not a value of a write in flight at the kill", when, wn.Path, len(got))
			}
		case kv.WarnEmptyDir:
			emptyDirs++
			rel, _ := filepath.Rel(srv.DataDir, wn.Path)
			if !valueDir.MatchString(filepath.ToSlash(rel)) {
				t.Errorf("%s: empty directory %s is not a value file directory", when, wn.Path)
			}
		default:
			t.Errorf("%s: check: %s: %s", when, wn.Kind, wn.Message)
		}
	}
	if orphans > inFlightFiles || emptyDirs > 2*inFlightFiles {
		t.Errorf("%s: check found %d unknown files and %d empty directories; only %d writes on value files were in flight",
			when, orphans, emptyDirs, inFlightFiles)
	}
	t.Logf("%s: check found %d orphaned value files, %d empty directories", when, orphans, emptyDirs)

	// check fix=true removes them. It decides which directories are empty
	// before it removes anything, so the directories that its removals
	// empty are left for the next pass, one level per pass (an engine quirk,
	// reported): allow exactly those, and at most one pass per level.
	residual := map[string]bool{}
	for _, wn := range warns {
		if wn.Kind == kv.WarnUnknownFile || wn.Kind == kv.WarnEmptyDir {
			for d := filepath.Dir(wn.Path); filepath.Dir(d) != filepath.Clean(srv.DataDir); d = filepath.Dir(d) {
				residual[d] = true
			}
		}
	}
	for pass := 1; ; pass++ {
		if _, err := rc.Check(ctx, true); err != nil {
			t.Fatal(err)
		}
		left, err := rc.Check(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		for _, wn := range left {
			if wn.Kind != kv.WarnEmptyDir || !residual[wn.Path] || pass > 2 {
				t.Fatalf("%s: check after %d passes of fix=true: %+v", when, pass, left)
			}
		}
	}
	verify(fmt.Sprintf("round %d after check fix=true", round))
	if t.Failed() {
		return
	}

	// What was in flight is now settled one way or the other.
	for w := range crashWriters {
		for j := range crashKeysPerW {
			st := &states[w][j]
			if !st.pending {
				continue
			}
			it, ok, err := rc.Get(ctx, crashKey(w, j))
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case !ok:
				st.acked = -1
			case st.inFlight >= 0 && bytes.Equal(it.Value.Data, crashValue(w, j, st.inFlight)):
				st.acked = st.inFlight
			}
			st.pending, st.inFlight = false, -1
		}
	}
	for c := range crashCounters {
		it, ok, err := rc.Get(ctx, counterKey(c))
		if err != nil {
			t.Fatal(err)
		}
		ctrLo[c], ctrSent[c] = 0, 0
		if ok {
			ctrLo[c] = it.Value.Int
		}
	}
}

func countInFlight(states *[crashWriters][crashKeysPerW]keyState) int {
	n := 0
	for w := range crashWriters {
		for j := range crashKeysPerW {
			if states[w][j].pending {
				n++
			}
		}
	}
	return n
}

// isInFlightOrphan reports whether data is a prefix of a value an
// in-flight set was writing, or the whole value an in-flight set or delete
// was replacing.
func isInFlightOrphan(data []byte, states *[crashWriters][crashKeysPerW]keyState) bool {
	for w := range crashWriters {
		for j := range crashKeysPerW {
			st := states[w][j]
			if !st.pending {
				continue
			}
			if st.inFlight >= 0 && bytes.HasPrefix(crashValue(w, j, st.inFlight), data) {
				return true
			}
			if st.acked >= 0 && bytes.Equal(crashValue(w, j, st.acked), data) {
				return true
			}
		}
	}
	return false
}
