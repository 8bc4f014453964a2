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
	crashWriters        = 6   // goroutines writing through the Go client
	crashKeysPerW       = 8   // keys each writer owns (and overwrites)
	crashCounters       = 3   // counters all writers increment
	crashAcksBeforeKill = 400 // acknowledged writes before SIGKILL
	crashFileValue      = 40 << 10
	crashBigValue       = 192 << 10
)

// crashValue is the deterministic value of version v of key j of writer w:
// keys j%4 == 0 get 40 KiB and j%4 == 1 192 KiB (value files, the latter
// streamed with chunked encoding), the others 100 B to 2 KiB (in SQLite).
func crashValue(w, j, v int) []byte {
	var size int
	switch j % 4 {
	case 0:
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

func crashKey(w, j int) kv.Key { return kv.TextKey(fmt.Sprintf("w%d/k%d", w, j)) }

func counterKey(c int) kv.Key { return kv.TextKey(fmt.Sprintf("counter-%d", c)) }

// keyState is what a writer knows about one of its keys. Versions are -1
// for none.
type keyState struct {
	acked    int // last version whose set answered 2xx
	inFlight int // version whose set was sent and never answered
}

// TestCrashKeepsAcknowledgedWrites runs writers against a real cacheserver
// process, kills it with SIGKILL after crashAcksBeforeKill acknowledged
// writes (counted, not timed), restarts it on the same directory and
// checks that every acknowledged write reads back exactly: each key holds
// its last acknowledged value, or the value that was in flight at the kill;
// each counter is at least its acknowledged increments and at most those
// plus the increments in flight. Check then finds nothing but value files
// and directories of writes in flight at the kill (never acknowledged: the
// engine writes the file before the transaction that names it commits, and
// removes a replaced file after it), each of which must hold exactly a
// value an in-flight write was writing or replacing; check with fix=true
// removes them and leaves every acknowledged value intact.
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills a cacheserver process")
	}
	srv := testserver.Start(t, testserver.Options{Args: []string{"--fanout", "4"}})
	ctx := context.Background()
	// No retries: a write is acknowledged by its one answer, and nothing
	// may be resent to the restarted server.
	writer, err := client.New(srv.URL, client.Options{Token: srv.Token, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	cache := writer.Cache("")

	var (
		acks        atomic.Int64
		reached     = make(chan struct{})
		killed      atomic.Bool
		states      [crashWriters][crashKeysPerW]keyState
		ctrAttempts [crashCounters]atomic.Int64
		ctrAcks     [crashCounters]atomic.Int64
		unexpected  = make(chan error, crashWriters)
		wg          sync.WaitGroup
	)
	for w := range crashWriters {
		for j := range crashKeysPerW {
			states[w][j] = keyState{acked: -1, inFlight: -1}
		}
	}
	ack := func() {
		if acks.Add(1) == crashAcksBeforeKill {
			close(reached)
		}
	}
	for w := range crashWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				var err error
				if i%3 == 2 {
					c := (w + i) % crashCounters
					ctrAttempts[c].Add(1)
					if _, err = cache.Incr(ctx, counterKey(c), kv.Int(1), kv.Int(0)); err == nil {
						ctrAcks[c].Add(1)
					}
				} else {
					j := (i/3*2 + i%3) % crashKeysPerW
					st := &states[w][j]
					v := i
					st.inFlight = v
					data := crashValue(w, j, v)
					opts := kv.SetOptions{}
					if j%4 == 1 {
						// Unknown length: chunked, streamed into a file.
						opts.Body = io.MultiReader(bytes.NewReader(data))
						err = cache.Set(ctx, crashKey(w, j), kv.Value{Type: kv.ValueBytes}, opts)
					} else {
						err = cache.Set(ctx, crashKey(w, j), kv.Bytes(data), opts)
					}
					if err == nil {
						st.acked, st.inFlight = v, -1
					}
				}
				if err != nil {
					if !killed.Load() {
						unexpected <- fmt.Errorf("writer %d before the kill: %w", w, err)
					}
					return // the server is gone; whatever was sent stays in flight
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
	if t.Failed() {
		return
	}

	srv.Restart(t)
	reader, err := client.New(srv.URL, client.Options{Token: srv.Token})
	if err != nil {
		t.Fatal(err)
	}
	rc := reader.Cache("")

	// Orphans that an in-flight write may have left: a prefix of the value
	// it was writing (the new file, not committed), or the whole value it
	// replaced (the old file, committed away but not yet removed).
	inFlightFiles := 0
	for w := range crashWriters {
		for j := range crashKeysPerW {
			if st := states[w][j]; st.inFlight >= 0 && j%4 <= 1 {
				inFlightFiles++
			}
		}
	}
	t.Logf("%d writes acknowledged before the kill; %d sets in flight, %d of them file-backed",
		acks.Load(), countInFlight(&states), inFlightFiles)

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
				case ok && st.inFlight >= 0 && bytes.Equal(it.Value.Data, crashValue(w, j, st.inFlight)):
				case !ok && st.acked < 0:
				default:
					t.Errorf("%s: key %s holds %d bytes (found %v); acknowledged version %d, in flight %d",
						when, crashKey(w, j), len(it.Value.Data), ok, st.acked, st.inFlight)
				}
			}
		}
		for c := range crashCounters {
			it, ok, err := rc.Get(ctx, counterKey(c))
			if err != nil {
				t.Fatal(err)
			}
			lo, hi := ctrAcks[c].Load(), ctrAttempts[c].Load()
			n := int64(0)
			if ok {
				n = it.Value.Int
			}
			if n < lo || n > hi || (ok && it.Value.Type != kv.ValueInt) {
				t.Errorf("%s: %s = %s; %d increments acknowledged, %d sent", when, counterKey(c), it.Value, lo, hi)
			}
		}
	}
	verify("after restart")

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
			if !isInFlightOrphan(got, &states) {
				t.Errorf("unknown file %s (%d bytes) is not a value of a write in flight at the kill", wn.Path, len(got))
			}
		case kv.WarnEmptyDir:
			emptyDirs++
			rel, _ := filepath.Rel(srv.DataDir, wn.Path)
			if !valueDir.MatchString(filepath.ToSlash(rel)) {
				t.Errorf("empty directory %s is not a value file directory", wn.Path)
			}
		default:
			t.Errorf("check after the crash: %s: %s", wn.Kind, wn.Message)
		}
	}
	if orphans > inFlightFiles || emptyDirs > 2*inFlightFiles {
		t.Errorf("check found %d unknown files and %d empty directories; only %d file-backed writes were in flight",
			orphans, emptyDirs, inFlightFiles)
	}
	t.Logf("check after the crash: %d orphaned value files, %d empty directories", orphans, emptyDirs)

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
				t.Fatalf("check after %d passes of fix=true: %+v", pass, left)
			}
		}
	}
	verify("after check fix=true")
}

func countInFlight(states *[crashWriters][crashKeysPerW]keyState) int {
	n := 0
	for w := range crashWriters {
		for j := range crashKeysPerW {
			if states[w][j].inFlight >= 0 {
				n++
			}
		}
	}
	return n
}

// isInFlightOrphan reports whether data is a prefix of a value an
// in-flight set was writing, or the whole value it was replacing.
func isInFlightOrphan(data []byte, states *[crashWriters][crashKeysPerW]keyState) bool {
	for w := range crashWriters {
		for j := range crashKeysPerW {
			st := states[w][j]
			if st.inFlight < 0 {
				continue
			}
			if bytes.HasPrefix(crashValue(w, j, st.inFlight), data) {
				return true
			}
			if st.acked >= 0 && bytes.Equal(crashValue(w, j, st.acked), data) {
				return true
			}
		}
	}
	return false
}
