package engine

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// Tx is a write transaction (BEGIN IMMEDIATE) on a Cache. Every operation
// of the Cache is available on it; they all commit or roll back together.
// A Tx is used by one goroutine and only inside the function given to
// Cache.Transact.
type Tx struct {
	c       *Cache
	cn      *conn
	s       *Settings
	ctx     context.Context
	doomed  []string   // value files to remove once the transaction commits
	created []string   // value files to remove if it rolls back
	hot     []hotWrite // values to keep in memory once it commits
	// floor is Cache.expiryFloor as this transaction leaves it: lowered by
	// its writes of an expiry, set by its cull.
	floor float64
}

// noteExpiry records that the transaction gave a row the expiry expire
// (nil: none).
func (tx *Tx) noteExpiry(expire driver.Value) {
	if e, ok := toFloat(expire); ok && e < tx.floor {
		tx.floor = e
	}
}

// Transact runs fn in one write transaction: the changes of every operation
// fn makes on tx are committed together when fn returns nil, and rolled back
// when it returns an error or panics. Other writers wait; readers go on.
// Operations on c itself (rather than tx) inside fn would wait for the
// transaction and deadlock.
func (c *Cache) Transact(ctx context.Context, fn func(tx *Tx) error) error {
	return c.transact(ctx, "transact", fn)
}

// Writes of one process go through a single writer at a time. Writers that
// arrive while a transaction runs queue up, and the next of them leads the
// whole queue through ONE SQLite transaction, each write inside a savepoint
// of its own (group commit): a failing write rolls back only its savepoint,
// and BEGIN and COMMIT, the dearest statements of a write, are paid once per
// batch instead of once per write.
type writer struct {
	mu    sync.Mutex
	busy  bool
	queue []*writeJob
	// With Options.BatchYield: whether the last yield brought writes into
	// its batch (or the last batch found writes queued without one), and
	// lone writes since, for retrying now and then after a yield that
	// brought none.
	yieldPaid bool
	lone      int
	// batches counts the batches led (tests read it).
	batches int64
	// committed: the leader's batch committed (only the leader uses it).
	committed bool
	// bypass, with a commit gate, tells a leader waiting for a turn that a
	// write made inside a batch holding one has queued (see commitGate).
	bypass chan struct{}
	// turnPaid: whether the last wait for a turn brought writes into its
	// batch; unpaidTurns counts the waits skipped since one that did not
	// (see waitsForTurn).
	turnPaid    bool
	unpaidTurns int
}

// yieldRetry is how often a lone write yields when the last yield brought
// nothing: writes that come one at a time then seldom pay for a yield.
const yieldRetry = 8

// maxBatch bounds the writes committed together.
const maxBatch = 64

// writeJob is one transaction's work.
type writeJob struct {
	ctx      context.Context
	op       string
	fn       func(tx *Tx) error
	err      error
	panicked any
	done     chan struct{} // closed once the job has run (err is set)
	lead     chan struct{} // closed when the job's goroutine must lead the next batch
}

func (c *Cache) transact(ctx context.Context, op string, fn func(tx *Tx) error) error {
	if c.closed.Load() {
		return kv.ErrClosed
	}
	job := &writeJob{ctx: ctx, op: op, fn: fn, done: make(chan struct{}), lead: make(chan struct{})}
	c.w.mu.Lock()
	if c.w.busy {
		c.w.queue = append(c.w.queue, job)
		c.w.mu.Unlock()
		if c.gate != nil && c.gate.heldBy(ctx) {
			c.signalBypass()
		}
		if err := c.waitTurn(job); err != nil {
			return err
		}
	} else {
		c.w.busy = true
		c.w.mu.Unlock()
	}
	select {
	case <-job.done: // run by another goroutine's batch
	default:
		c.lead(job)
	}
	if job.panicked != nil {
		panic(job.panicked)
	}
	return job.err
}

// waitTurn waits until job has run or its goroutine must lead. A job still
// queued when the cache timeout or ctx ends is withdrawn.
func (c *Cache) waitTurn(job *writeJob) error {
	t := time.NewTimer(c.timeout) // a zero timeout fires at once: no waiting
	defer t.Stop()
	expired := t.C
	var err error
	select {
	case <-job.done:
		return nil
	case <-job.lead:
		return nil
	case <-expired:
		err = &kv.TimeoutError{Op: job.op}
	case <-job.ctx.Done():
		err = job.ctx.Err()
	case <-c.done:
		err = kv.ErrClosed
	}
	c.w.mu.Lock()
	for i, q := range c.w.queue {
		if q == job {
			c.w.queue = append(c.w.queue[:i], c.w.queue[i+1:]...)
			c.w.mu.Unlock()
			return err
		}
	}
	c.w.mu.Unlock()
	// Already taken into a batch, or made leader: see it through.
	select {
	case <-job.done:
	case <-job.lead:
	}
	return nil
}

// lead runs a batch of first and the queued jobs, then hands the lead to
// the next queued job or frees the writer.
func (c *Cache) lead(first *writeJob) {
	// With a commit gate, take a turn first, waiting for one while that
	// pays: the writes queuing meanwhile join this batch.
	turn, waited := false, false
	if c.gate != nil && !c.gate.heldBy(first.ctx) {
		turn = c.gate.tryEnter()
		if !turn && c.waitsForTurn() {
			turn, waited = c.gate.enter(c.w.bypass), true
		}
	}
	batch := []*writeJob{first}
	c.w.mu.Lock()
	if waited {
		c.w.turnPaid = len(c.w.queue) > 0
	}
	if c.batchYield && len(c.w.queue) > 0 {
		c.w.yieldPaid = true // writes come together: keep yielding when alone
	}
	if c.batchYield && len(c.w.queue) == 0 {
		c.w.lone++
		if c.w.yieldPaid || c.w.lone%yieldRetry == 0 {
			// Alone so far: let the goroutines that are about to write
			// (other requests being parsed) queue up first, so that one
			// transaction commits them all. A commit costs about as much
			// as several small writes; with nothing else runnable this
			// returns at once, otherwise it waits for the others' turns, so
			// after a yield that brought nothing the next lone writes skip
			// it (but one in yieldRetry). While yielding brings more
			// writes, yield again (a few times at most).
			c.w.mu.Unlock()
			runtime.Gosched()
			c.w.mu.Lock()
			for i := 0; i < 3 && len(c.w.queue) > 0 && len(c.w.queue) < maxBatch-1; i++ {
				n := len(c.w.queue)
				c.w.mu.Unlock()
				runtime.Gosched()
				c.w.mu.Lock()
				if len(c.w.queue) == n {
					break
				}
			}
			c.w.yieldPaid = len(c.w.queue) > 0
		}
	}
	n := min(len(c.w.queue), maxBatch-1)
	c.w.batches++
	batch = append(batch, c.w.queue[:n]...)
	c.w.queue = append(c.w.queue[:0], c.w.queue[n:]...)
	if c.gate != nil {
		// A write of a turn's batch left for the next batch still needs
		// its leader to let it by.
		for _, job := range c.w.queue {
			if c.gate.heldBy(job.ctx) {
				c.signalBypass()
				break
			}
		}
	}
	c.w.mu.Unlock()

	func() {
		if turn {
			// Deferred: a turn kept by a panic would stall every database.
			defer c.gate.leave()
		}
		c.runBatch(batch)
	}()
	if c.w.committed { // its callers have their answers: checkpoint.go
		c.w.committed = false
		if c.autoCheckpoint == 0 {
			c.afterCommit()
		}
	}

	c.w.mu.Lock()
	if len(c.w.queue) > 0 {
		next := c.w.queue[0]
		c.w.queue = c.w.queue[1:]
		c.w.mu.Unlock()
		close(next.lead)
		return
	}
	c.w.busy = false
	c.w.mu.Unlock()
}

// turnRetry is how often a leader that finds the turns taken waits for one
// when the last wait brought no writes into its batch.
const turnRetry = 8

// waitsForTurn tells a leader that found every turn taken whether to wait
// for one. Waiting pays when writes come to this database while others
// commit (the wait then gathers them into its batch); when they come one at
// a time it only delays the write, so after a wait that gathered none the
// next leaders run without a turn (but one in turnRetry, to notice when
// waiting pays again).
func (c *Cache) waitsForTurn() bool {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	if c.w.turnPaid {
		return true
	}
	c.w.unpaidTurns++
	return c.w.unpaidTurns%turnRetry == 0
}

// signalBypass tells this database's leader, waiting for a turn of the
// commit gate, to run its batch without one.
func (c *Cache) signalBypass() {
	select {
	case c.w.bypass <- struct{}{}:
	default: // already signalled
	}
}

// runBatch runs jobs in one transaction and marks each done.
func (c *Cache) runBatch(jobs []*writeJob) {
	txs := make([]*Tx, len(jobs))
	defer func() {
		for i, job := range jobs {
			if txs[i] != nil {
				c.unpend(txs[i].created...)
			}
			close(job.done)
		}
	}()
	fail := func(err error) {
		for _, job := range jobs {
			if job.err == nil && job.panicked == nil {
				job.err = err
			}
		}
	}
	cn, err := c.acquireWriter(context.WithoutCancel(jobs[0].ctx))
	if err != nil {
		fail(err)
		return
	}
	if c.hot != nil {
		// Until the transaction has ended, no read fills memory.
		c.hot.writeBegin()
		defer c.hot.writeEnd()
	}
	if err := cn.execCached("BEGIN IMMEDIATE"); err != nil {
		c.release(cn)
		if isBusy(err) {
			for _, job := range jobs {
				job.err = &kv.TimeoutError{Op: job.op, Err: err}
			}
			return
		}
		fail(fmt.Errorf("engine: %s: begin: %w", jobs[0].op, err))
		return
	}
	single := len(jobs) == 1
	broken := false
	s := c.settings.Load()
	// The expiry floor as the jobs that did not roll back leave it.
	floor := c.expiryFloor
	for i, job := range jobs {
		if err := job.ctx.Err(); err != nil {
			job.err = err
			continue
		}
		if kv.Abandoned(job.ctx) {
			// Asked now, not only when it queued: a process stopped and
			// run again would otherwise apply, in a batch it leads before
			// the cancellations of the requests given up meanwhile have
			// run, writes older than ones acknowledged elsewhere since.
			job.err = kv.ErrAbandoned
			continue
		}
		if !single {
			if _, err := cn.exec("SAVEPOINT job"); err != nil {
				job.err = fmt.Errorf("engine: %s: savepoint: %w", job.op, err)
				continue
			}
		}
		tx := &Tx{c: c, cn: cn, s: s, ctx: job.ctx, floor: floor}
		txs[i] = tx
		job.err, job.panicked = runJob(job.fn, tx)
		if job.err == nil && job.panicked == nil {
			if !single {
				if _, err := cn.exec("RELEASE job"); err != nil {
					job.err = fmt.Errorf("engine: %s: release savepoint: %w", job.op, err)
					broken = true
					break
				}
			}
			floor = tx.floor
			continue
		}
		// Undo this job only.
		if !single {
			_, err1 := cn.exec("ROLLBACK TO job")
			_, err2 := cn.exec("RELEASE job")
			if err1 != nil || err2 != nil {
				broken = true
			}
		}
		tx.discardFiles()
		txs[i] = nil
		c.unpend(tx.created...)
		if single || broken {
			break
		}
	}
	if single && (jobs[0].err != nil || jobs[0].panicked != nil) {
		broken = true // roll the whole (one-job) transaction back
	}
	if !broken {
		if c.hot != nil {
			c.hot.beforeCommit(func(yield func(hotWrite) bool) {
				for _, tx := range txs {
					if tx == nil {
						continue
					}
					for _, w := range tx.hot {
						if !yield(w) {
							return
						}
					}
				}
			})
		}
		if err := cn.execCached("COMMIT"); err != nil {
			if isBusy(err) {
				err = &kv.TimeoutError{Op: jobs[0].op, Err: err}
			} else {
				err = fmt.Errorf("engine: %s: commit: %w", jobs[0].op, err)
			}
			fail(err)
			broken = true
		}
	}
	if broken {
		if err := cn.execCached("ROLLBACK"); err != nil && !cn.sc.AutoCommit() {
			c.discard(cn)
		} else {
			c.release(cn)
		}
		for i, tx := range txs {
			if tx != nil {
				tx.discardFiles()
			}
			if jobs[i].err == nil && jobs[i].panicked == nil {
				jobs[i].err = fmt.Errorf("engine: %s: rolled back with its batch", jobs[i].op)
			}
		}
		return
	}
	c.w.committed = true // see lead: a WAL checkpoint may be due
	c.expiryFloor = floor
	c.release(cn)
	if c.hot != nil {
		for _, tx := range txs {
			if tx != nil && len(tx.hot) > 0 {
				c.hot.committed(tx.hot)
			}
		}
	}
	// Only now that no committed row names them may the files go.
	for _, tx := range txs {
		if tx != nil {
			for _, f := range tx.doomed {
				c.removeFile(f)
			}
		}
	}
}

// runJob runs fn, turning a panic into a value to re-raise in the goroutine
// that asked for the transaction.
func runJob(fn func(tx *Tx) error, tx *Tx) (err error, panicked any) {
	defer func() {
		if p := recover(); p != nil {
			panicked = p
		}
	}()
	return fn(tx), nil
}

// discardFiles removes the value files a rolled-back transaction created.
func (tx *Tx) discardFiles() {
	for _, f := range tx.created {
		tx.c.removeFile(f)
	}
}

// removeAfterCommit schedules a value file for removal after commit.
func (tx *Tx) removeAfterCommit(filename any) {
	if name, ok := filename.(string); ok && name != "" {
		tx.doomed = append(tx.doomed, name)
	}
}

// Now returns the time the transaction uses, in epoch seconds.
func (tx *Tx) now() float64 { return tx.c.nowSeconds() }

// Settings returns the settings the transaction runs under.
func (tx *Tx) Settings() Settings { return *tx.s }

// write runs fn in a transaction of its own.
func (c *Cache) write(ctx context.Context, op string, fn func(tx *Tx) error) error {
	err := c.transact(ctx, op, fn)
	if err != nil && !errors.Is(err, kv.ErrTimeout) && !isEngineError(err) {
		return fmt.Errorf("engine: %s: %w", op, err)
	}
	return err
}

// isEngineError reports errors that already say what went wrong.
func isEngineError(err error) bool {
	for _, e := range []error{kv.ErrNotFound, kv.ErrEmpty, kv.ErrQueueFull, kv.ErrNotNumeric, kv.ErrOverflow, kv.ErrInvalidKey, kv.ErrInvalidValue, kv.ErrInvalidSetting, kv.ErrClosed, kv.ErrAbandoned, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
