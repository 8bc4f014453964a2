package kv

import (
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// KeyKind says how a key (or a tag) is stored in the database.
type KeyKind uint8

// Key kinds. KeyNone is the zero value: it is not a valid key and, used as a
// tag, means "no tag".
const (
	KeyNone   KeyKind = iota
	KeyBytes          // BLOB, raw=1
	KeyText           // TEXT, raw=1
	KeyInt            // INTEGER, raw=1
	KeyFloat          // REAL, raw=1
	KeyPickle         // BLOB, raw=0: a Python pickle kept as opaque bytes
)

var keyKindNames = [...]string{"none", "bytes", "text", "int", "float", "pickle"}

func (k KeyKind) String() string {
	if int(k) < len(keyKindNames) {
		return keyKindNames[k]
	}
	return "KeyKind(" + strconv.Itoa(int(k)) + ")"
}

// ParseKeyKind maps a kind name ("bytes", "text", "int", "float", "pickle")
// to its KeyKind.
func ParseKeyKind(name string) (KeyKind, error) {
	for i, n := range keyKindNames {
		if i > 0 && n == name {
			return KeyKind(i), nil
		}
	}
	return KeyNone, fmt.Errorf("%w: unknown key kind %q", ErrInvalidKey, name)
}

// Key is a cache key or tag: bytes, text, a 64-bit integer, a float, or an
// opaque pickle. Keys compare the way SQLite compares them: IntKey(1) and
// FloatKey(1) name the same item, TextKey("1") and BytesKey([]byte("1")) do
// not.
type Key struct {
	kind KeyKind
	i    int64
	f    float64
	s    string // text, bytes and pickle data
}

// BytesKey returns a key stored as a BLOB.
func BytesKey(b []byte) Key { return Key{kind: KeyBytes, s: string(b)} }

// TextKey returns a key stored as TEXT.
func TextKey(s string) Key { return Key{kind: KeyText, s: s} }

// IntKey returns a key stored as INTEGER.
func IntKey(i int64) Key { return Key{kind: KeyInt, i: i} }

// FloatKey returns a key stored as REAL.
func FloatKey(f float64) Key { return Key{kind: KeyFloat, f: f} }

// PickleKey returns a key holding a Python pickle (raw=0). The bytes are
// stored as they are given; python-diskcache stores the
// pickletools-optimized pickle of the key.
func PickleKey(b []byte) Key { return Key{kind: KeyPickle, s: string(b)} }

// Kind reports how the key is stored.
func (k Key) Kind() KeyKind { return k.kind }

// IsNone reports whether k is the zero Key (no key, no tag).
func (k Key) IsNone() bool { return k.kind == KeyNone }

// Int returns the integer of a KeyInt.
func (k Key) Int() int64 { return k.i }

// Float returns the float of a KeyFloat.
func (k Key) Float() float64 { return k.f }

// Text returns the string of a KeyText.
func (k Key) Text() string { return k.s }

// Bytes returns the data of a KeyBytes or KeyPickle (a copy).
func (k Key) Bytes() []byte { return []byte(k.s) }

// Equal reports whether two keys are identical (same kind and data).
func (k Key) Equal(o Key) bool {
	if k.kind != o.kind {
		return false
	}
	switch k.kind {
	case KeyInt:
		return k.i == o.i
	case KeyFloat:
		return k.f == o.f || (math.IsNaN(k.f) && math.IsNaN(o.f))
	default:
		return k.s == o.s
	}
}

func (k Key) String() string {
	switch k.kind {
	case KeyNone:
		return "<none>"
	case KeyInt:
		return strconv.FormatInt(k.i, 10)
	case KeyFloat:
		return strconv.FormatFloat(k.f, 'g', -1, 64)
	case KeyText:
		return strconv.Quote(k.s)
	case KeyBytes:
		return "b" + strconv.Quote(k.s)
	default:
		return fmt.Sprintf("pickle(%x)", k.s)
	}
}

// Validate rejects keys that cannot be stored.
func (k Key) Validate() error {
	switch k.kind {
	case KeyBytes, KeyInt, KeyPickle:
		return nil
	case KeyText:
		if !utf8.ValidString(k.s) {
			// python-diskcache could not decode it (nor find it).
			return fmt.Errorf("%w: text is not valid UTF-8", ErrInvalidKey)
		}
		return nil
	case KeyFloat:
		if math.IsNaN(k.f) {
			// SQLite stores NaN as NULL, which would make the key unfindable.
			return fmt.Errorf("%w: NaN cannot be a key", ErrInvalidKey)
		}
		return nil
	default:
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
}

// ValidateTag rejects tags that cannot be stored: text that is not UTF-8
// and NaN. The zero Key is a valid tag (no tag).
func (k Key) ValidateTag() error {
	if k.kind == KeyText {
		return k.Validate() // UTF-8 only
	}
	if k.kind == KeyFloat && math.IsNaN(k.f) {
		return fmt.Errorf("%w: NaN cannot be a tag", ErrInvalidKey)
	}
	return nil
}
