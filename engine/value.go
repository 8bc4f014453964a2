package engine

import (
	"bytes"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// Storage modes of the Cache.mode column.
const (
	modeNone   = 0
	modeRaw    = 1
	modeBinary = 2
	modeText   = 3
	modePickle = 4
)

// inDatabase reports whether python-diskcache would keep the value in the
// database rather than in a file, given disk_min_file_size.
func inDatabase(v kv.Value, minFileSize int64) bool {
	switch v.Type {
	case kv.ValueInt, kv.ValueFloat:
		return true
	case kv.ValueText:
		// python-diskcache compares the number of characters.
		if int64(len(v.Data)) < minFileSize {
			return true
		}
		return int64(utf8.RuneCount(v.Data)) < minFileSize
	default:
		return int64(len(v.Data)) < minFileSize
	}
}

// fileMode is the mode of a value stored in a file.
func fileMode(t kv.ValueType) int64 {
	switch t {
	case kv.ValueText:
		return modeText
	case kv.ValuePickle:
		return modePickle
	default:
		return modeBinary
	}
}

// pickledNone is Python's None as a pickle (protocol 2), how a raw NULL
// value reads.
var pickledNone = []byte{0x80, 0x02, 'N', '.'}

// valueFromDB rebuilds an in-database value from its mode and column.
func valueFromDB(mode int64, col any) (kv.Value, error) {
	switch mode {
	case modeRaw:
		switch t := col.(type) {
		case int64:
			return kv.Int(t), nil
		case float64:
			return kv.Float(t), nil
		case string:
			return kv.Value{Type: kv.ValueText, Data: []byte(t)}, nil
		case []byte:
			return kv.Bytes(t), nil
		case nil:
			// python-diskcache's float('nan'): SQLite stores NaN as NULL,
			// and python-diskcache reads it back as None.
			return kv.Pickle(bytes.Clone(pickledNone)), nil
		}
	case modePickle:
		if b, ok := col.([]byte); ok {
			return kv.Pickle(b), nil
		}
	case modeBinary:
		if b, ok := col.([]byte); ok { // written by hand; tolerate
			return kv.Bytes(b), nil
		}
	case modeText:
		if s, ok := col.(string); ok {
			return kv.Text(s), nil
		}
	}
	return kv.Value{}, fmt.Errorf("%w: mode %d with a %T value", ErrCorrupt, mode, col)
}

// typeOfMode maps a file mode to the value type it holds.
func typeOfMode(mode int64) kv.ValueType {
	switch mode {
	case modeText:
		return kv.ValueText
	case modePickle:
		return kv.ValuePickle
	default:
		return kv.ValueBytes
	}
}

// utf8Reader passes a streamed text value through and fails with
// kv.ErrInvalidValue at the first sequence that is not UTF-8 (or a rune cut
// off at the end), so that no text file python-diskcache cannot decode is
// ever committed.
type utf8Reader struct {
	r    io.Reader
	tail []byte // the start of a rune split across reads
}

func (u *utf8Reader) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	b := p[:n]
	for len(u.tail) > 0 && len(b) > 0 && !utf8.FullRune(u.tail) {
		u.tail, b = append(u.tail, b[0]), b[1:]
	}
	if utf8.FullRune(u.tail) {
		if r, size := utf8.DecodeRune(u.tail); r == utf8.RuneError && size <= 1 {
			return n, errInvalidText
		}
		u.tail = u.tail[:0]
	}
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		if !utf8.FullRune(b[i:]) {
			u.tail = append(u.tail[:0], b[i:]...)
			break
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			return n, errInvalidText
		}
		i += size
	}
	if err == io.EOF && len(u.tail) > 0 {
		return n, errInvalidText
	}
	return n, err
}

var errInvalidText = fmt.Errorf("%w: streamed text is not valid UTF-8", kv.ErrInvalidValue)
