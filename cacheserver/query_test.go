package cacheserver

import (
	"net/url"
	"testing"
)

// FuzzCheckQuery: checkQuery refuses exactly the query strings that
// url.ParseQuery (behind URL.Query) fails on.
func FuzzCheckQuery(f *testing.F) {
	for _, s := range []string{"", "expire=300", "expire=%ZZ", "expire=5&tag=%ZZ", "expire=1;tag=x",
		"tag=%", "tag=%4", "tag=%41", "a=%e2%82%ac", "%zz=1", "k=a%2", "&&=&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, want := url.ParseQuery(s)
		if got := checkQuery(s); (got == nil) != (want == nil) {
			t.Fatalf("checkQuery(%q) = %v; url.ParseQuery: %v", s, got, want)
		}
	})
}
