package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// The workload of python-diskcache's tests/benchmark_core.py: every worker
// draws a key str(randrange(100)).encode(), a value str(i).encode() *
// randrange(1, 100) and an operation (90% get, 9% set, 1% delete); the
// first warm-up operations of each worker are not timed. Before the workers
// start, every key is set to itself, as dispatch() there does.
const (
	keyRange   = 100
	getShare   = 0.900 // choice < 0.900: get
	setShare   = 0.990 // choice < 0.990: set, else delete
	opGet      = "get"
	opSet      = "set"
	opDelete   = "delete"
	maxRepeats = 100 // randrange(1, 100) repeats: 1..99
)

var opNames = []string{opGet, opSet, opDelete}

// store is one system under test, opened on a fresh directory.
type store interface {
	// handle returns what one worker goroutine uses (the engine shares one
	// Cache; raw SQLite gives each worker its own connection).
	handle(i int) (handle, error)
	close() error
}

// handle runs the three operations. get and del report whether the key
// was there, set whether it stored the value (only a FanoutCache, which
// swallows timeouts, can fail to).
type handle interface {
	get(key []byte) (bool, error)
	set(key, value []byte) (bool, error)
	del(key []byte) (bool, error)
	close() error
}

// keys holds the encoded keys "0".."99".
var keys = func() [][]byte {
	out := make([][]byte, keyRange)
	for i := range out {
		out[i] = []byte(strconv.Itoa(i))
	}
	return out
}()

// prepopulate sets every key to itself, as benchmark_core.py's dispatch().
func prepopulate(h handle) error {
	for _, k := range keys {
		stored, err := h.set(k, k)
		if err != nil {
			return fmt.Errorf("prepopulate: %w", err)
		}
		if !stored {
			return fmt.Errorf("prepopulate: set %s failed", k)
		}
	}
	return nil
}

// samples are one worker's (or a merged run's) per-operation durations
// and misses: a get or delete that found no key, a set that did not store.
type samples struct {
	d      map[string][]time.Duration
	misses map[string]int
}

func newSamples(capacity int) *samples {
	s := &samples{d: map[string][]time.Duration{}, misses: map[string]int{}}
	s.d[opGet] = make([]time.Duration, 0, capacity*95/100+16)
	s.d[opSet] = make([]time.Duration, 0, capacity*12/100+16)
	s.d[opDelete] = make([]time.Duration, 0, capacity*3/100+16)
	return s
}

func (s *samples) merge(o *samples) {
	for op, d := range o.d {
		s.d[op] = append(s.d[op], d...)
	}
	for op, n := range o.misses {
		s.misses[op] += n
	}
}

// runWorker runs ops operations of the workload on h, timing those after
// the warm-up. seed makes each worker's sequence differ, as random.seed(num)
// does in benchmark_core.py.
func runWorker(h handle, seed uint64, ops, warmup int) (*samples, error) {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	s := newSamples(ops - warmup)
	for count := 0; count < ops; count++ {
		key := keys[rng.IntN(keyRange)]
		unit := strconv.Itoa(count)
		n := 1 + rng.IntN(maxRepeats-1)
		value := make([]byte, 0, len(unit)*n)
		for range n {
			value = append(value, unit...)
		}
		choice := rng.Float64()

		var (
			op    string
			found = true
			err   error
			start time.Time
			d     time.Duration
		)
		switch {
		case choice < getShare:
			op = opGet
			start = time.Now()
			found, err = h.get(key)
			d = time.Since(start)
		case choice < setShare:
			op = opSet
			start = time.Now()
			found, err = h.set(key, value)
			d = time.Since(start)
		default:
			op = opDelete
			start = time.Now()
			found, err = h.del(key)
			d = time.Since(start)
		}
		if err != nil {
			return nil, fmt.Errorf("op %d (%s %s): %w", count, op, key, err)
		}
		if count >= warmup {
			s.d[op] = append(s.d[op], d)
			if !found {
				s.misses[op]++
			}
		}
	}
	return s, nil
}

// runStore runs workers goroutines on st, all starting together, and
// returns their merged samples and the wall time of the whole run.
func runStore(ctx context.Context, st store, workers, ops, warmup int) (*samples, time.Duration, error) {
	handles := make([]handle, workers)
	defer func() {
		for _, h := range handles {
			if h != nil {
				_ = h.close()
			}
		}
	}()
	for i := range handles {
		h, err := st.handle(i)
		if err != nil {
			return nil, 0, err
		}
		handles[i] = h
	}
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		results = make([]*samples, workers)
		errs    = make([]error, workers)
	)
	for i := range handles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i], errs[i] = runWorker(handles[i], uint64(i), ops, warmup)
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	wall := time.Since(t0)
	all := newSamples(0)
	for i := range results {
		if errs[i] != nil {
			return nil, 0, fmt.Errorf("worker %d: %w", i, errs[i])
		}
		all.merge(results[i])
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	return all, wall, nil
}
