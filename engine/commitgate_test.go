package engine

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// keysOf returns n keys that database db of f holds.
func keysOf(f *FanoutCache, db, n int) []kv.Key {
	var keys []kv.Key
	for i := int64(0); len(keys) < n; i++ {
		if k := kv.IntKey(i); f.DatabaseIndex(k) == db {
			keys = append(keys, k)
		}
	}
	return keys
}

// queued returns how many writes wait in c's queue.
func queued(c *Cache) int {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return len(c.w.queue)
}

// batches returns how many batches c has led.
func batches(c *Cache) int64 {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return c.w.batches
}

// waitUntil yields until cond holds (the goroutines it waits for are all
// runnable, so this ends; the test's deadline bounds it otherwise).
func waitUntil(cond func() bool) {
	for !cond() {
		runtime.Gosched()
	}
}

// gatedFanout opens a fanout of two databases with one commit turn, and
// returns it with a channel that receives (at most one pending) signal each
// time a leader starts to wait for the turn. The caller closes it.
func gatedFanout(t *testing.T) (*FanoutCache, chan struct{}) {
	t.Helper()
	f, err := OpenFanout(context.Background(), t.TempDir(), FanoutOptions{Fanout: 2, CommitTurns: 1, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if f.gate == nil {
		t.Fatal("CommitTurns 1 made no commit gate")
	}
	waiting := make(chan struct{}, 1)
	f.gate.waiting = func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	}
	return f, waiting
}

// With one commit turn, writes to a database wait while another database
// commits, and those that queue meanwhile then commit in one batch.
func TestCommitTurnsMakeWaitingWritesOneBatch(t *testing.T) {
	ctx := context.Background()
	f, waiting := gatedFanout(t)
	defer f.Close()

	// Database 0 commits (its transaction holds the only turn) until released.
	release, holding := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) }) // before f.Close, which waits for it
	held := make(chan error, 1)
	go func() {
		held <- f.Database(0).Transact(ctx, func(tx *Tx) error {
			close(holding)
			<-release
			return tx.Set(keysOf(f, 0, 1)[0], kv.Int(0), kv.SetOptions{})
		})
	}()
	<-holding

	const writes = 8
	keys := keysOf(f, 1, writes)
	db1 := f.Database(1)
	before := batches(db1)
	done := make(chan error, writes)
	set := func(i int) { done <- f.Set(ctx, keys[i], kv.Int(int64(i)), kv.SetOptions{}) }
	go set(0)
	select {
	case <-waiting: // database 1's leader waits for the turn
	case err := <-done:
		t.Fatalf("a write to database 1 ended (err %v) while database 0 held the only commit turn", err)
	}
	for i := 1; i < writes; i++ {
		go set(i)
	}
	waitUntil(func() bool { return queued(db1) == writes-1 })
	releaseOnce.Do(func() { close(release) })
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	for range writes {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if got := batches(db1) - before; got != 1 {
		t.Errorf("database 1 committed the %d writes that waited for its turn in %d batches, want 1", writes, got)
	}
	for i, k := range keys {
		it, found, err := f.Get(ctx, k, GetOptions{})
		if err != nil || !found || !it.Value.Equal(kv.Int(int64(i))) {
			t.Fatalf("key %v: %v %v %v", k, it.Value, found, err)
		}
	}
}

// FanoutCache.Transact holds database 0's turn while it opens a transaction
// on database 1, where a leader waits for that turn: the leader must let it
// by, or neither ever ends. With more writes queued before it than one batch
// takes, the leader of the next batch must let it by too.
func TestFanoutTransactPassesLeadersWaitingForATurn(t *testing.T) {
	for _, ahead := range []int{1, maxBatch + 6} {
		t.Run(fmt.Sprintf("%d writes ahead", ahead), func(t *testing.T) { testFanoutTransactPassesLeaders(t, ahead) })
	}
}

func testFanoutTransactPassesLeaders(t *testing.T, ahead int) {
	ctx := context.Background()
	f, waiting := gatedFanout(t)
	deadlocked := false
	defer func() {
		if !deadlocked { // Close would wait for the deadlocked writes
			f.Close()
		}
	}()
	k0, k1 := keysOf(f, 0, 1)[0], keysOf(f, 1, ahead+1)

	// D: a transaction on database 1 takes the turn and holds it.
	release, holding := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- f.Database(1).Transact(ctx, func(tx *Tx) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	// C: writes queued on database 1 behind D; the first leads the next batch.
	wrote := make(chan error, ahead)
	for i := range ahead {
		go func() { wrote <- f.Set(ctx, k1[i], kv.Int(int64(i)), kv.SetOptions{}) }()
	}
	waitUntil(func() bool { return queued(f.Database(1)) == ahead })
	// B: a FanoutCache.Transact; its database 0 leader waits for the turn.
	transacted := make(chan error, 1)
	go func() {
		transacted <- f.Transact(ctx, func(tx *FanoutTx) error {
			if err := tx.Set(k0, kv.Int(0), kv.SetOptions{}); err != nil {
				return err
			}
			return tx.Set(k1[ahead], kv.Int(int64(ahead)), kv.SetOptions{})
		})
	}()
	<-waiting
	// D ends: B takes the turn, C's first write leads database 1 and
	// waits for it, and B's transaction on database 1 queues behind C.
	close(release)

	watchdog := time.NewTimer(time.Minute) // a deadlock, not a slow run
	defer watchdog.Stop()
	results := []chan error{held, transacted}
	for range ahead {
		results = append(results, wrote)
	}
	for _, ch := range results {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatal(err)
			}
		case <-watchdog.C:
			deadlocked = true
			t.Fatal("deadlock: FanoutCache.Transact waits for database 1, whose leader waits for the turn it holds")
		}
	}
	for i, k := range append(k1, k0) {
		want := int64(i)
		if i > ahead {
			want = 0 // k0
		}
		it, found, err := f.Get(ctx, k, GetOptions{})
		if err != nil || !found || !it.Value.Equal(kv.Int(want)) {
			t.Fatalf("key %v: %v %v %v", k, it.Value, found, err)
		}
	}
}

// Under one commit turn, FanoutCache.Transacts and single writes to every
// database, all at once, each commit exactly once.
func TestCommitTurnsUnderConcurrentTransacts(t *testing.T) {
	ctx := context.Background()
	f, err := OpenFanout(ctx, t.TempDir(), FanoutOptions{Fanout: 4, CommitTurns: 1, Timeout: time.Hour, BatchYield: true})
	if err != nil {
		t.Fatal(err)
	}
	const transactors, transacts, setters, sets = 4, 20, 8, 100
	var wg sync.WaitGroup
	errs := make(chan error, transactors+setters)
	for w := range transactors {
		wg.Go(func() {
			for i := range transacts {
				err := f.Transact(ctx, func(tx *FanoutTx) error {
					if _, err := tx.Incr(kv.TextKey("total"), kv.Int(1), kv.Int(0)); err != nil {
						return err
					}
					return tx.Set(kv.TextKey(fmt.Sprintf("t%d-%d", w, i)), kv.Int(int64(i)), kv.SetOptions{})
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for w := range setters {
		wg.Go(func() {
			for i := range sets {
				if err := f.Set(ctx, kv.TextKey(fmt.Sprintf("s%d-%d", w, i)), kv.Int(int64(i)), kv.SetOptions{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	watchdog := time.NewTimer(time.Minute) // a deadlock, not a slow run
	defer watchdog.Stop()
	select {
	case <-finished:
	case <-watchdog.C:
		t.Fatal("deadlock: writes under one commit turn never ended")
	}
	defer f.Close()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total, found, err := f.Get(ctx, kv.TextKey("total"), GetOptions{})
	if err != nil || !found || !total.Value.Equal(kv.Int(transactors*transacts)) {
		t.Fatalf("total = %v %v %v, want %d", total.Value, found, err, transactors*transacts)
	}
	if n, err := f.Len(ctx); err != nil || n != 1+transactors*transacts+setters*sets {
		t.Fatalf("Len = %d, %v; want %d", n, err, 1+transactors*transacts+setters*sets)
	}
}

// A wait for a turn that gathered no other write into its batch makes the
// next leaders that find the turn taken commit without one (writes that
// come one at a time gain nothing from waiting), all but one in turnRetry.
func TestCommitTurnsSkipWaitsThatGatherNothing(t *testing.T) {
	ctx := context.Background()
	f, waiting := gatedFanout(t)
	defer f.Close()
	k0, k1 := keysOf(f, 0, 1)[0], keysOf(f, 1, 1)[0]

	// holdTurn makes database 0 hold the only turn until the returned
	// function is called.
	holdTurn := func() (release func()) {
		rel, holding, held := make(chan struct{}), make(chan struct{}), make(chan error, 1)
		go func() {
			held <- f.Database(0).Transact(ctx, func(tx *Tx) error {
				close(holding)
				<-rel
				return tx.Set(k0, kv.Int(0), kv.SetOptions{})
			})
		}()
		<-holding
		return func() {
			close(rel)
			if err := <-held; err != nil {
				t.Error(err)
			}
		}
	}
	set := func(v int64) chan error {
		done := make(chan error, 1)
		go func() { done <- f.Set(ctx, k1, kv.Int(v), kv.SetOptions{}) }()
		return done
	}

	// A lone write waits for the turn once, and gathers nothing.
	release := holdTurn()
	done := set(0)
	select {
	case <-waiting:
	case err := <-done:
		t.Fatalf("the first write that found the turn taken did not wait for it (err %v)", err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// The next lone writes commit while database 0 holds the turn, but
	// every turnRetry-th, which waits again.
	release = holdTurn()
	defer func() { release() }()
	for i := 1; i < turnRetry; i++ {
		select {
		case err := <-set(int64(i)):
			if err != nil {
				t.Fatal(err)
			}
		case <-waiting:
			t.Fatalf("lone write %d waited for the turn after a wait that gathered nothing", i)
		}
	}
	done = set(turnRetry)
	select {
	case <-waiting:
	case err := <-done:
		t.Fatalf("write %d did not retry waiting for the turn (err %v)", turnRetry, err)
	}
	release()
	release = func() {}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
