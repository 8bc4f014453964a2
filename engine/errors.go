package engine

import (
	"errors"
	"fmt"
)

// Errors returned by the engine; test with errors.Is.
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
	// ErrCorrupt reports a row whose columns contradict each other.
	ErrCorrupt = errors.New("corrupt row")
	// ErrClosed is returned by calls on a closed cache.
	ErrClosed = errors.New("cache is closed")
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
