package engine

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"
)

// ValueType is the Python type a value stands for.
type ValueType uint8

// Value types. ValueNone is the zero value and is not storable.
const (
	ValueNone   ValueType = iota
	ValueBytes            // bytes
	ValueText             // str, UTF-8
	ValueInt              // int in the signed 64-bit range
	ValueFloat            // float
	ValuePickle           // anything else, as an opaque pickle
)

var valueTypeNames = [...]string{"none", "bytes", "text", "int", "float", "pickle"}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return "ValueType(" + strconv.Itoa(int(t)) + ")"
}

// ParseValueType maps a type name ("bytes", "text", "int", "float",
// "pickle") to its ValueType.
func ParseValueType(name string) (ValueType, error) {
	for i, n := range valueTypeNames {
		if i > 0 && n == name {
			return ValueType(i), nil
		}
	}
	return ValueNone, fmt.Errorf("%w: unknown value type %q", ErrInvalidValue, name)
}

// Storage modes of the Cache.mode column.
const (
	modeNone   = 0
	modeRaw    = 1
	modeBinary = 2
	modeText   = 3
	modePickle = 4
)

// Value is a cache value. Data holds the bytes of ValueBytes, the UTF-8 of
// ValueText and the pickle of ValuePickle.
type Value struct {
	Type  ValueType
	Int   int64
	Float float64
	Data  []byte
}

// Bytes returns a bytes value.
func Bytes(b []byte) Value { return Value{Type: ValueBytes, Data: b} }

// Text returns a text value.
func Text(s string) Value { return Value{Type: ValueText, Data: []byte(s)} }

// Int returns an integer value.
func Int(i int64) Value { return Value{Type: ValueInt, Int: i} }

// Float returns a float value.
func Float(f float64) Value { return Value{Type: ValueFloat, Float: f} }

// Pickle returns an opaque pickled value.
func Pickle(b []byte) Value { return Value{Type: ValuePickle, Data: b} }

// Equal reports whether two values have the same type and content.
func (v Value) Equal(o Value) bool {
	if v.Type != o.Type {
		return false
	}
	switch v.Type {
	case ValueInt:
		return v.Int == o.Int
	case ValueFloat:
		return v.Float == o.Float || (math.IsNaN(v.Float) && math.IsNaN(o.Float))
	default:
		return string(v.Data) == string(o.Data)
	}
}

func (v Value) String() string {
	switch v.Type {
	case ValueInt:
		return strconv.FormatInt(v.Int, 10)
	case ValueFloat:
		return strconv.FormatFloat(v.Float, 'g', -1, 64)
	case ValueText:
		return strconv.Quote(string(v.Data))
	case ValueBytes:
		return "b" + strconv.Quote(string(v.Data))
	case ValuePickle:
		return fmt.Sprintf("pickle(%d bytes)", len(v.Data))
	default:
		return "<none>"
	}
}

func (v Value) validate() error {
	switch v.Type {
	case ValueBytes, ValueInt, ValuePickle:
		return nil
	case ValueFloat:
		if math.IsNaN(v.Float) {
			// SQLite stores NaN as NULL, which no read could turn back into a value.
			return fmt.Errorf("%w: NaN cannot be stored", ErrInvalidValue)
		}
		return nil
	case ValueText:
		if !utf8.Valid(v.Data) {
			return fmt.Errorf("%w: text is not valid UTF-8", ErrInvalidValue)
		}
		return nil
	default:
		return fmt.Errorf("%w: value has no type", ErrInvalidValue)
	}
}

// inDatabase reports whether python-diskcache would keep the value in the
// database rather than in a file, given disk_min_file_size.
func (v Value) inDatabase(minFileSize int64) bool {
	switch v.Type {
	case ValueInt, ValueFloat:
		return true
	case ValueText:
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
func (t ValueType) fileMode() int64 {
	switch t {
	case ValueText:
		return modeText
	case ValuePickle:
		return modePickle
	default:
		return modeBinary
	}
}

// valueFromDB rebuilds an in-database value from its mode and column.
func valueFromDB(mode int64, col any) (Value, error) {
	switch mode {
	case modeRaw:
		switch t := col.(type) {
		case int64:
			return Int(t), nil
		case float64:
			return Float(t), nil
		case string:
			return Value{Type: ValueText, Data: []byte(t)}, nil
		case []byte:
			return Bytes(t), nil
		case nil:
			return Value{}, fmt.Errorf("%w: raw value is NULL", ErrCorrupt)
		}
	case modePickle:
		if b, ok := col.([]byte); ok {
			return Pickle(b), nil
		}
	case modeBinary:
		if b, ok := col.([]byte); ok { // written by hand; tolerate
			return Bytes(b), nil
		}
	case modeText:
		if s, ok := col.(string); ok {
			return Text(s), nil
		}
	}
	return Value{}, fmt.Errorf("%w: mode %d with a %T value", ErrCorrupt, mode, col)
}

// typeOfMode maps a file mode to the value type it holds.
func typeOfMode(mode int64) ValueType {
	switch mode {
	case modeText:
		return ValueText
	case modePickle:
		return ValuePickle
	default:
		return ValueBytes
	}
}

// utf8Reader passes a streamed text value through and fails with
// ErrInvalidValue at the first sequence that is not UTF-8 (or a rune cut
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

var errInvalidText = fmt.Errorf("%w: streamed text is not valid UTF-8", ErrInvalidValue)
