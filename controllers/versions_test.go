package controllers

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestVersionsAgree: the Makefile's VERSION is the one release number; the
// chart (version, appVersion), the manager's built-in version, the Python
// package and the image builds' defaults carry it too, and were kept in
// step by hand.
func TestVersionsAgree(t *testing.T) {
	find := func(path, pattern string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("..", path))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)` + pattern).FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s: no match for %s", path, pattern)
		}
		return string(m[1])
	}
	release := find("Makefile", `^VERSION \?= (\S+)$`)
	bare := strings.TrimPrefix(release, "v")
	for _, c := range []struct{ what, got, want string }{
		{"charts/diskcache-operator/Chart.yaml version", find("charts/diskcache-operator/Chart.yaml", `^version: (\S+)$`), bare},
		{"charts/diskcache-operator/Chart.yaml appVersion", find("charts/diskcache-operator/Chart.yaml", `^appVersion: (\S+)$`), release},
		{"cmd/manager version", find("cmd/manager/main.go", `^var version = "([^"]+)"$`), release},
		{"clients/python/pyproject.toml version", find("clients/python/pyproject.toml", `^version = "([^"]+)"$`), bare},
		{"diskcache_client.__version__", find("clients/python/diskcache_client/__init__.py", `^__version__ = '([^']+)'$`), bare},
		{"the Dockerfile's VERSION", find("Dockerfile", `^ARG VERSION=(\S+)$`), release},
		{"hack/image/build.sh's default image", find("hack/image/build.sh", `^IMG="\$\{IMG:-\S+:(v[^}]+)\}"$`), release},
	} {
		if c.got != c.want {
			t.Errorf("%s is %s; the Makefile's VERSION %s wants %s", c.what, c.got, release, c.want)
		}
	}
}
