package kv

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSmallAPI(t *testing.T) {
	for _, n := range []string{"bytes", "text", "int", "float", "pickle"} {
		k, err := ParseKeyKind(n)
		if err != nil || k.String() != n {
			t.Errorf("ParseKeyKind(%q) = %v, %v", n, k, err)
		}
		v, err := ParseValueType(n)
		if err != nil || v.String() != n {
			t.Errorf("ParseValueType(%q) = %v, %v", n, v, err)
		}
	}
	if _, err := ParseKeyKind("none"); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("ParseKeyKind(none) = %v", err)
	}
	if _, err := ParseValueType("none"); !errors.Is(err, ErrInvalidValue) {
		t.Errorf("ParseValueType(none) = %v", err)
	}
	keys := map[string]Key{
		`"a"`: TextKey("a"), `b"a"`: BytesKey([]byte("a")), "-3": IntKey(-3), "2.5": FloatKey(2.5),
		"pickle(80)": PickleKey([]byte{0x80}), "<none>": {},
	}
	for want, k := range keys {
		if k.String() != want {
			t.Errorf("String() = %s, want %s", k.String(), want)
		}
	}
	if TextKey("x").Text() != "x" || string(BytesKey([]byte("y")).Bytes()) != "y" || FloatKey(1.5).Float() != 1.5 || IntKey(4).Int() != 4 {
		t.Error("key accessors")
	}
	if IntKey(1).Equal(FloatKey(1)) {
		t.Error("Equal compares kinds")
	}
	if e := ExpireAfter(time.Minute); !e.IsSet() || e.Duration() != time.Minute {
		t.Error("ExpireAfter")
	}
	if (Expiry{}).IsSet() {
		t.Error("zero Expiry is set")
	}
	te := &TimeoutError{Op: "clear", Removed: 3}
	if !errors.Is(te, ErrTimeout) || !strings.Contains(te.Error(), "clear") || !strings.Contains(te.Error(), "3") {
		t.Errorf("TimeoutError = %q", te.Error())
	}
}
