package cacheserver

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

// The lazy deadline behaves as context.WithDeadline: Done closes at the
// deadline, Err says why, whether or not anyone waited before it passed.
func TestLazyDeadline(t *testing.T) {
	// Waited on: Done closes at the deadline.
	ctx := withLazyDeadline(context.Background(), time.Now().Add(20*time.Millisecond), nil, nil)
	<-ctx.Done()
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err after Done = %v; want DeadlineExceeded", ctx.Err())
	}
	ctx.release()

	// Never waited on: Err alone reports the deadline once past, and Done
	// asked for late is already closed.
	ctx = withLazyDeadline(context.Background(), time.Now().Add(-time.Millisecond), nil, nil)
	defer ctx.release()
	if d, ok := ctx.Deadline(); !ok || d.After(time.Now()) {
		t.Fatalf("Deadline() = %v, %v", d, ok)
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v; want DeadlineExceeded", ctx.Err())
	}
	<-ctx.Done()

	// The parent's cancellation and an earlier parent deadline carry over.
	parent, cancel := context.WithCancel(context.Background())
	ctx = withLazyDeadline(parent, time.Now().Add(time.Hour), nil, nil)
	defer ctx.release()
	cancel()
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("Err after parent cancel = %v", ctx.Err())
	}
	<-ctx.Done()
	early, cancelEarly := context.WithTimeout(context.Background(), time.Minute)
	defer cancelEarly()
	ctx = withLazyDeadline(early, time.Now().Add(time.Hour), nil, nil)
	defer ctx.release()
	if d, _ := ctx.Deadline(); d.After(time.Now().Add(2 * time.Minute)) {
		t.Fatalf("Deadline %v ignores the parent's", d)
	}

	// Released before anyone waited: Canceled, and Done is closed.
	ctx = withLazyDeadline(context.Background(), time.Now().Add(time.Hour), nil, nil)
	ctx.release()
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("Err after release = %v; want Canceled", ctx.Err())
	}
	<-ctx.Done()

	// Values pass through.
	type key struct{}
	ctx = withLazyDeadline(context.WithValue(context.Background(), key{}, 7), time.Now().Add(time.Hour), nil, nil)
	defer ctx.release()
	if ctx.Value(key{}) != 7 {
		t.Fatal("value lost")
	}
	// Its own value, over the parent's under the same key.
	type other struct{}
	ctx = withLazyDeadline(ctx, time.Now().Add(time.Hour), key{}, 8)
	defer ctx.release()
	if ctx.Value(key{}) != 8 || ctx.Value(other{}) != nil {
		t.Fatalf("own value: %v, other %v", ctx.Value(key{}), ctx.Value(other{}))
	}
}

// context.AfterFunc on a lazy deadline runs when it ends, and registers
// with it instead of starting a goroutine per call.
func TestLazyDeadlineAfterFunc(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	ctx := withLazyDeadline(parent, time.Now().Add(time.Hour), nil, nil)
	const n = 200
	before := runtime.NumGoroutine()
	ran := make(chan struct{}, n)
	stops := make([]func() bool, n)
	for i := range stops {
		stops[i] = context.AfterFunc(ctx, func() { ran <- struct{}{} })
	}
	if added := runtime.NumGoroutine() - before; added >= n/2 {
		t.Fatalf("%d goroutines for %d AfterFuncs: each waits on Done in a goroutine of its own", added, n)
	}
	if !stops[0]() {
		t.Fatal("stop before the context ended should report it stopped f")
	}
	cancel()
	for range n - 1 {
		<-ran
	}
	ctx.release()
}
