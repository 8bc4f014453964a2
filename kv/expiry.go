package kv

import (
	"io"
	"math"
	"time"
)

// Expiry is how long an item lives. The zero Expiry never expires;
// ExpireAfter(0) or a negative duration makes an item that is already dead.
// It holds float seconds, as python-diskcache does, so lifetimes beyond
// time.Duration's 292 years still work.
type Expiry struct {
	secs float64
	set  bool
}

// ExpireAfter returns an Expiry of d from the time of the write.
func ExpireAfter(d time.Duration) Expiry { return Expiry{secs: d.Seconds(), set: true} }

// ExpireAfterSeconds is ExpireAfter with python-diskcache's float seconds.
func ExpireAfterSeconds(s float64) Expiry { return Expiry{secs: s, set: true} }

// IsSet reports whether the Expiry expires at all.
func (e Expiry) IsSet() bool { return e.set }

// Seconds returns the lifetime in seconds (meaningful when IsSet).
func (e Expiry) Seconds() float64 { return e.secs }

// Duration returns the lifetime, capped at the largest time.Duration.
func (e Expiry) Duration() time.Duration {
	if e.secs >= float64(math.MaxInt64)/float64(time.Second) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(e.secs * float64(time.Second))
}

// SetOptions are the optional arguments of Set, Add and Push.
type SetOptions struct {
	Expire Expiry
	// Tag is stored with the item; the zero Key stores no tag.
	Tag Key
	// Body, when set, is streamed into a value file instead of Value.Data,
	// like python-diskcache's read=True. Value.Type still says what the
	// file holds: bytes (mode BINARY), text (TEXT) or pickle (PICKLE).
	Body io.Reader
}
