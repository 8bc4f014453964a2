package cacheserver

import (
	"net/url"
	"path"
	"testing"
)

// FuzzPlainPath: whenever plainPath lets a request's path skip the
// dot-segment check of Handler, that check would have passed it too (the
// escaped path ServeMux matches is already clean).
func FuzzPlainPath(f *testing.F) {
	for _, target := range []string{
		"/", "/v1/keys/a", "/v1/keys/%3A1%3Akey", "/v1/keys/a.b", "/v1/keys/%2E", "/v1/keys/%2E%2E",
		"/v1/keys/.", "/v1/keys/..", "/v1/keys//a", "/v1/keys/a/", "/v1/keys/a%2F..", "/v1/keys/a%2F%2E%2E",
		"/v1/keys/%2F", "/v1/keys/a|%3A", "/v1/keys/a%7C%2E%2E/", "/v1/keys/%2e./x", "//", "/.",
		"/v1/keys/a?x=/../", "/v1/caches/c/keys/%2F%2F", "/v1/keys/%E2%82%AC", "/v1/keys/\xff%2F",
	} {
		f.Add(target)
	}
	f.Fuzz(func(t *testing.T, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !plainPath(u.Path) {
			return
		}
		if p := u.EscapedPath(); p != "/" && path.Clean(p) != p {
			t.Fatalf("%q: plainPath(%q) but the escaped path %q is not clean", target, u.Path, p)
		}
	})
}
