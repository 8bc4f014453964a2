package kv

import (
	"fmt"
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

// Validate rejects values that cannot be stored.
func (v Value) Validate() error {
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
