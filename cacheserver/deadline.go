package cacheserver

import (
	"context"
	"sync"
	"time"
)

// deadlineCtx bounds a request's work by a deadline like
// context.WithDeadline, but arms the timer only when someone waits on
// Done: most requests find a free database connection at once and never
// wait, and a timer plus a child registered with the connection's context
// on every request was about a seventh of the server's allocations under
// load. Err and Deadline answer correctly without the timer.
type deadlineCtx struct {
	context.Context // the parent
	deadline        time.Time
	// key and val are a value the context carries itself, as
	// context.WithValue would (nil key: none): a request's route resolver
	// rides here instead of in a context of its own.
	key, val any

	once   sync.Once
	armed  context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	ended  bool // release ran: Done answers an already-closed channel
}

// withLazyDeadline returns ctx bounded by deadline, carrying val under key
// if key is not nil. Call its release when done (a method, not a returned
// func: that would be one more allocation per request).
func withLazyDeadline(parent context.Context, deadline time.Time, key, val any) *deadlineCtx {
	c := &deadlineCtx{Context: parent, deadline: deadline, key: key, val: val}
	if d, ok := parent.Deadline(); ok && d.Before(c.deadline) {
		c.deadline = d
	}
	return c
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *deadlineCtx) arm() {
	c.once.Do(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.armed, c.cancel = context.WithDeadline(c.Context, c.deadline)
		if c.ended {
			c.cancel()
		}
	})
}

func (c *deadlineCtx) Done() <-chan struct{} {
	c.arm()
	return c.armed.Done()
}

func (c *deadlineCtx) Err() error {
	c.mu.Lock()
	armed, ended := c.armed, c.ended
	c.mu.Unlock()
	switch {
	case armed != nil:
		return armed.Err()
	case c.Context.Err() != nil:
		return c.Context.Err()
	case !time.Now().Before(c.deadline):
		return context.DeadlineExceeded
	case ended:
		return context.Canceled
	}
	return nil
}

func (c *deadlineCtx) Value(key any) any {
	if c.key != nil && key == c.key {
		return c.val
	}
	return c.Context.Value(key)
}

// release stops the timer once the request is done, like the CancelFunc
// of context.WithDeadline (after it, Done is closed and Err is Canceled
// unless the deadline or the parent ended it first).
func (c *deadlineCtx) release() {
	c.mu.Lock()
	c.ended = true
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// AfterFunc lets context.AfterFunc, and contexts derived from this one,
// register on the armed deadline instead of starting a goroutine per call
// that waits on Done (context's fallback for contexts it does not know):
// the frames client watches every forwarded request's context so.
func (c *deadlineCtx) AfterFunc(f func()) (stop func() bool) {
	c.arm()
	return context.AfterFunc(c.armed, f)
}
