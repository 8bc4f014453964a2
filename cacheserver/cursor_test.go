package cacheserver

import (
	"encoding/base64"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/engine"
)

// FuzzIndexCursor: any cursor text is parsed or refused without a panic,
// and what the server gives out reads back as it was.
func FuzzIndexCursor(f *testing.F) {
	f.Add("")
	f.Add(formatCursor(engine.PagePosition{After: 7, Bound: 40}))
	f.Add(base64.RawURLEncoding.EncodeToString([]byte("ix1.7"))) // an older server's
	f.Add(base64.RawURLEncoding.EncodeToString([]byte("ix1.-1.3")))
	f.Fuzz(func(t *testing.T, s string) {
		at, err := parseCursor(s)
		if err != nil {
			return
		}
		if at.After < 0 || at.Bound < 0 {
			t.Fatalf("parseCursor(%q) = %+v", s, at)
		}
		if back, err := parseCursor(formatCursor(at)); err != nil || back != at {
			t.Fatalf("%+v given out reads back as %+v, %v", at, back, err)
		}
	})
}
