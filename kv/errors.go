package kv

import (
	"errors"
	"fmt"
)

// Errors of the cache; test with errors.Is. The cache server answers each
// with its own error code (cacheserver/wire), and the Go client's errors
// match them again by that code.
var (
	// ErrTimeout means the database stayed locked past the cache timeout.
	// The concrete error is a *TimeoutError.
	ErrTimeout = errors.New("database timeout")
	// ErrNotFound is returned by Incr without a default on a missing key.
	ErrNotFound = errors.New("key not found")
	// ErrEmpty is returned by PeekItem on an empty cache.
	ErrEmpty = errors.New("cache is empty")
	// ErrQueueFull is returned by Push when the queue's keys have reached
	// the end of their range on that side.
	ErrQueueFull = errors.New("queue is full")
	// ErrNotNumeric is returned by Incr on a value that is not a number.
	ErrNotNumeric = errors.New("value is not a number")
	// ErrOverflow is returned by Incr when the result leaves the int64 range.
	ErrOverflow = errors.New("integer overflow")
	// ErrInvalidKey rejects keys that cannot be stored.
	ErrInvalidKey = errors.New("invalid key")
	// ErrInvalidValue rejects values that cannot be stored.
	ErrInvalidValue = errors.New("invalid value")
	// ErrInvalidSetting rejects unknown settings and bad setting values.
	ErrInvalidSetting = errors.New("invalid setting")
	// ErrTooLarge refuses a value that the cull of its own write would
	// remove at once: larger than its database's size_limit can hold.
	// python-diskcache stores such a value and culls it; the engine refuses.
	ErrTooLarge = errors.New("value too large for the size limit")
	// ErrFull refuses a write to a cache that does not cull and has reached
	// its limit of bytes (the engine's Options.MaxBytes).
	ErrFull = errors.New("cache is full")
	// ErrInvalidName rejects a sub-collection name (a named cache, deque or
	// index) that could not safely become a directory below the fanout
	// directory.
	ErrInvalidName = errors.New("invalid name")
	// ErrClosed is returned by calls on a closed cache.
	ErrClosed = errors.New("cache is closed")
	// ErrIndexOutOfRange is returned by a deque's At, SetAt and DeleteAt
	// for an index outside the deque (python's IndexError).
	ErrIndexOutOfRange = errors.New("deque index out of range")
)

// Errors of the coordination recipes; test with errors.Is.
var (
	// ErrNotOwner is returned when a Lock or RLock is released or refreshed
	// by a caller that does not hold it (another owner or an unknown holder
	// holds it, or it is not held at all), and when a BoundedSemaphore
	// permit is refreshed by an owner that holds none. Python's RLock raises
	// AssertionError("cannot release un-acquired lock") in the same case.
	ErrNotOwner = errors.New("not the owner")
	// ErrOverRelease is returned when a BoundedSemaphore is released by an
	// owner that holds no permit (any more), where python's BoundedSemaphore
	// raises AssertionError("cannot release un-acquired semaphore").
	ErrOverRelease = errors.New("released more than acquired")
	// ErrWrongType is returned when the key of a BoundedSemaphore, Averager
	// or Throttler holds a live value that is not that recipe's state (in
	// python-diskcache the recipe would fail with a TypeError or
	// ValueError). Locks instead treat any foreign live value as held by an
	// unknown holder, which is what python-diskcache's Lock means by it.
	ErrWrongType = errors.New("key holds a value of another kind")
)

// TimeoutError is the error behind ErrTimeout. Removed counts the items that
// a bulk operation (expire, evict, cull, clear) had already removed and
// committed when it timed out.
type TimeoutError struct {
	Op      string
	Removed int64
	Err     error
}

func (e *TimeoutError) Error() string {
	msg := "engine: " + e.Op + ": database timeout"
	if e.Removed > 0 {
		msg += fmt.Sprintf(" after removing %d items", e.Removed)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is makes errors.Is(err, ErrTimeout) true.
func (e *TimeoutError) Is(target error) bool { return target == ErrTimeout }

func (e *TimeoutError) Unwrap() error { return e.Err }
