package engine

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// Bounds on sub-collection names.
const (
	// MaxNameLength bounds a whole name, in bytes.
	MaxNameLength = 512
	// MaxNameSegmentLength bounds each "/"-separated segment, in bytes: a
	// segment becomes one directory name, which most file systems limit to
	// 255 bytes.
	MaxNameSegmentLength = 255
)

// ValidateName checks a sub-collection name. A name is one or more segments
// separated by "/", each of which becomes a nested directory, as in
// python-diskcache's FanoutCache.cache('a/b'). It rejects, with an error
// wrapping ErrInvalidName: the empty name; empty segments (a leading or
// trailing "/", "a//b"); the segments "." and ".."; backslashes (a path
// separator on Windows); NUL and every other control character; text that is
// not valid UTF-8; names longer than MaxNameLength bytes or with a segment
// longer than MaxNameSegmentLength bytes; and, after the first segment
// (a nested name's directory lies in the collection above it), a segment
// that is one of that collection's own files: its database ("cache.db" and
// every name starting so: the log, a set-aside copy) or a value-file
// directory (two lowercase hex digits). A valid name therefore always names
// a directory strictly inside the collection's parent directory, clear of
// another collection's files.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", kv.ErrInvalidName)
	}
	if len(name) > MaxNameLength {
		return fmt.Errorf("%w: name is %d bytes long, at most %d allowed", kv.ErrInvalidName, len(name), MaxNameLength)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: name %q is not valid UTF-8", kv.ErrInvalidName, name)
	}
	for _, r := range name {
		switch {
		case r == '\\':
			return fmt.Errorf("%w: name %q contains a backslash", kv.ErrInvalidName, name)
		case unicode.IsControl(r):
			return fmt.Errorf("%w: name %q contains control character %U", kv.ErrInvalidName, name, r)
		}
	}
	for i, seg := range strings.Split(name, "/") {
		switch {
		case i > 0 && (strings.HasPrefix(seg, DBName) || IsValueDirName(seg)):
			return fmt.Errorf("%w: segment %q of name %q is a file of the collection %q", kv.ErrInvalidName, seg, name, name[:strings.LastIndex(name, "/"+seg)])
		case seg == "":
			return fmt.Errorf("%w: name %q has an empty segment (leading, trailing or doubled \"/\")", kv.ErrInvalidName, name)
		case seg == "." || seg == "..":
			return fmt.Errorf("%w: name %q has a %q segment", kv.ErrInvalidName, name, seg)
		case len(seg) > MaxNameSegmentLength:
			return fmt.Errorf("%w: a segment of name %q is %d bytes long, at most %d allowed", kv.ErrInvalidName, name, len(seg), MaxNameSegmentLength)
		}
	}
	return nil
}

// IsValueDirName reports whether seg is the name of a directory of value
// files (python-diskcache's: the first two hex digits of a random name).
func IsValueDirName(seg string) bool {
	return len(seg) == 2 && isLowerHex(seg[0]) && isLowerHex(seg[1])
}

func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }
