package wire_test

import (
	"encoding/json"
	"math"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

var keyKinds = []string{"", "text", "bytes", "int", "float", "pickle"}

// FuzzParseFormatKey checks that every key ParseKey accepts survives
// FormatKey → ParseKey, the JSON encoding of batch bodies and record
// headers, and the percent-encoding of paths and headers.
func FuzzParseFormatKey(f *testing.F) {
	for _, raw := range []string{"", "a", "with/slash and space?&#%", "ünï", "\x00\xff", "-42", "9223372036854775807",
		"-9223372036854775808", "9223372036854775808", "2.5", "-0", "1e308", "1e-320", "inf", "-Inf", "nan", "0x1p-2", "1_0", " 1", "."} {
		for _, kind := range keyKinds {
			f.Add(raw, kind)
		}
	}
	f.Add("x", "weird")
	f.Fuzz(func(t *testing.T, raw, kind string) {
		k, err := wire.ParseKey(raw, kind)
		switch kind {
		case "", "text":
			if (err == nil) != utf8.ValidString(raw) {
				t.Fatalf("ParseKey(%q, %q) error %v; valid UTF-8: %v", raw, kind, err, utf8.ValidString(raw))
			}
		case "bytes", "pickle":
			if err != nil {
				t.Fatalf("ParseKey(%q, %q): %v", raw, kind, err)
			}
		case "int", "float":
		default:
			if err == nil {
				t.Fatalf("ParseKey(%q, %q) accepted an unknown kind", raw, kind)
			}
		}
		if err != nil {
			return
		}
		checkKeyRoundTrip(t, k)
		raw2, kind2 := wire.FormatKey(k)
		switch kind {
		case "", "text", "bytes", "pickle":
			if raw2 != raw {
				t.Fatalf("FormatKey(ParseKey(%q, %q)) = %q", raw, kind, raw2)
			}
		case "int":
			if n, err := strconv.ParseInt(raw, 10, 64); err != nil || n != k.Int() || kind2 != "int" {
				t.Fatalf("int key %q parsed as %s", raw, k)
			}
		case "float":
			if kind2 != "float" || math.IsNaN(k.Float()) {
				t.Fatalf("float key %q parsed as %s", raw, k)
			}
		}
	})
}

// FuzzKeyRoundTrip builds keys of every kind from Go values and checks
// they survive every encoding of the wire format.
func FuzzKeyRoundTrip(f *testing.F) {
	f.Add(int64(0), 0.0, []byte(nil), "")
	f.Add(int64(-1), -0.0, []byte{0, 0xff, '/', '%'}, "a/b c?d#e%f")
	f.Add(int64(math.MaxInt64), math.Inf(1), []byte("\x80\x05\x95"), "ünïcødé")
	f.Add(int64(math.MinInt64), math.SmallestNonzeroFloat64, []byte{'\r', '\n'}, "\r\n\t")
	f.Add(int64(1), 1e21, []byte("."), "..")
	f.Fuzz(func(t *testing.T, i int64, fl float64, b []byte, s string) {
		keys := []kv.Key{kv.IntKey(i), kv.BytesKey(b), kv.PickleKey(b)}
		if !math.IsNaN(fl) {
			keys = append(keys, kv.FloatKey(fl))
		}
		if utf8.ValidString(s) {
			keys = append(keys, kv.TextKey(s))
		}
		for _, k := range keys {
			checkKeyRoundTrip(t, k)
		}
	})
}

func checkKeyRoundTrip(t *testing.T, k kv.Key) {
	t.Helper()
	raw, kind := wire.FormatKey(k)
	k2, err := wire.ParseKey(raw, kind)
	if err != nil || !k2.Equal(k) || (k.Kind() == kv.KeyFloat && math.Signbit(k.Float()) != math.Signbit(k2.Float())) {
		t.Fatalf("ParseKey(FormatKey(%s)) = %s, %v", k, k2, err)
	}
	// Batch bodies and record headers: KeyToJSON, through encoding/json.
	b, err := json.Marshal(wire.KeyToJSON(k))
	if err != nil {
		t.Fatal(err)
	}
	var j wire.EncodeKeyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	if k3, err := wire.KeyFromJSON(j); err != nil || !k3.Equal(k) {
		t.Fatalf("KeyFromJSON(%s) = %s, %v; want %s", b, k3, err, k)
	}
	// Paths: one segment that decodes back.
	seg := wire.EscapePath(raw)
	if strings.ContainsAny(seg, "/?#") {
		t.Fatalf("EscapePath(%q) = %q is not one path segment", raw, seg)
	}
	if back, err := url.PathUnescape(seg); err != nil || back != raw {
		t.Fatalf("PathUnescape(EscapePath(%q)) = %q, %v", raw, back, err)
	}
	// Headers: printable ASCII only, and back.
	h := wire.EscapeHeader(raw)
	for i := 0; i < len(h); i++ {
		if h[i] < 0x21 || h[i] > 0x7e {
			t.Fatalf("EscapeHeader(%q) = %q has byte %#x", raw, h, h[i])
		}
	}
	if back, err := wire.UnescapeHeader(h); err != nil || back != raw {
		t.Fatalf("UnescapeHeader(EscapeHeader(%q)) = %q, %v", raw, back, err)
	}
	// Tags are keys without pickles.
	if kind != "pickle" {
		if tag, err := wire.ParseTag(raw, kind); err != nil || !tag.Equal(k) {
			t.Fatalf("ParseTag(%q, %q) = %s, %v", raw, kind, tag, err)
		}
	}
}

// FuzzParseFormatNumber checks that every number ParseNumber accepts is
// written by FormatNumber so that it reads back with the same type and
// value (bit for bit, sign of zero included), and that FormatNumber's
// output is a number Python's int() or float() reads.
func FuzzParseFormatNumber(f *testing.F) {
	for _, s := range []string{"0", "-0", "+3", " 12 ", "1.5", "-2.25", ".5", "5.", "1e21", "1E-7", "3.0",
		"inf", "-inf", "+Inf", "infinity", "nan", "NaN", "9223372036854775807", "-9223372036854775808",
		"9223372036854775808", "1e400", "0x10", "0x1p-2", "1_000", "", "abc", "4.9e-324", "2.2250738585072014e-308"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := wire.ParseNumber(s)
		if err != nil {
			return
		}
		if v.Type != kv.ValueInt && v.Type != kv.ValueFloat {
			t.Fatalf("ParseNumber(%q) = %s", s, v)
		}
		checkNumberRoundTrip(t, v)
	})
}

// FuzzFormatNumber checks FormatNumber on every int and float.
func FuzzFormatNumber(f *testing.F) {
	f.Add(int64(0), 0.0)
	f.Add(int64(math.MaxInt64), math.Copysign(0, -1))
	f.Add(int64(math.MinInt64), math.MaxFloat64)
	f.Add(int64(3), 3.0)
	f.Add(int64(-7), 1e21)
	f.Add(int64(1), math.SmallestNonzeroFloat64)
	f.Add(int64(2), math.Inf(-1))
	f.Add(int64(4), math.NaN())
	f.Fuzz(func(t *testing.T, i int64, fl float64) {
		checkNumberRoundTrip(t, kv.Int(i))
		checkNumberRoundTrip(t, kv.Float(fl))
	})
}

func checkNumberRoundTrip(t *testing.T, v kv.Value) {
	t.Helper()
	s := wire.FormatNumber(v)
	back, err := wire.ParseNumber(s)
	if err != nil || back.Type != v.Type {
		t.Fatalf("ParseNumber(FormatNumber(%s) = %q) = %s, %v", v, s, back, err)
	}
	switch v.Type {
	case kv.ValueInt:
		if back.Int != v.Int || s != strconv.FormatInt(v.Int, 10) {
			t.Fatalf("int %d written %q, read %d", v.Int, s, back.Int)
		}
	case kv.ValueFloat:
		same := math.Float64bits(back.Float) == math.Float64bits(v.Float) || (math.IsNaN(back.Float) && math.IsNaN(v.Float))
		if !same {
			t.Fatalf("float %v written %q, read %v", v.Float, s, back.Float)
		}
		if !pythonFloatLiteral(s) {
			t.Fatalf("FormatNumber(%v) = %q is not a literal Python's float() reads as a float", v.Float, s)
		}
	}
}

// pythonFloatLiteral reports whether s is one of the float spellings
// FormatNumber promises: a decimal with '.' or an exponent, or inf/-inf/nan.
func pythonFloatLiteral(s string) bool {
	switch s {
	case "inf", "-inf", "nan":
		return true
	}
	if !strings.ContainsAny(s, ".e") {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789.e+-", r) {
			return false
		}
	}
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}
