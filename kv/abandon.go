package kv

import (
	"context"
	"errors"
)

// ErrAbandoned is the error of a write that was not made because the one
// who asked for it had stopped waiting (WithAbandoned).
var ErrAbandoned = errors.New("not done: its requester stopped waiting")

type abandonedKey struct{}

// WithAbandoned returns a copy of ctx that carries abandoned, which tells
// whether whoever waits for the work done under ctx has stopped waiting
// (a server's client that closed its connection). Writes are applied, and
// forwards sent, only while it says no.
//
// A context's cancellation says the same thing, but asynchronously: after
// a process was stopped (SIGSTOP, a frozen node) and runs again, the
// goroutines that would cancel the contexts of the requests given up
// meanwhile run in no set order with the ones serving them, and a write
// its client gave up on seconds ago would land over writes acknowledged
// since. abandoned is asked synchronously at the last moment instead.
func WithAbandoned(ctx context.Context, abandoned func() bool) context.Context {
	return context.WithValue(ctx, abandonedKey{}, abandoned)
}

// Abandoned reports whether the requester of the work done under ctx has
// stopped waiting for it, as WithAbandoned's function tells (false when
// ctx carries none). It does not look at ctx.Err.
func Abandoned(ctx context.Context) bool {
	f, _ := ctx.Value(abandonedKey{}).(func() bool)
	return f != nil && f()
}
