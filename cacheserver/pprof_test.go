package cacheserver_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func getWithToken(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// Profiles open to the operator's token only: not to the apps' data token,
// and not at all on a server without an admin token.
func TestPprofNeedsAdminToken(t *testing.T) {
	adminFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(adminFile, []byte("the-admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, _ := startServer(t, "--admin-token-file", adminFile)
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {srv.Token, http.StatusUnauthorized}, {"the-admin", http.StatusOK}} {
		code, body := getWithToken(t, srv.URL+"/debug/pprof/heap?debug=1", tc.token)
		if code != tc.want {
			t.Fatalf("token %q: %d %s; want %d", tc.token, code, body, tc.want)
		}
		if code == http.StatusOK && !strings.Contains(body, "heap profile") {
			t.Fatalf("admin token: body %.200q is not a heap profile", body)
		}
	}
	if code, body := getWithToken(t, srv.URL+"/debug/pprof/", "the-admin"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("the profiles' index: %d %.200q", code, body)
	}
	if code, body := getWithToken(t, srv.URL+"/debug/pprof/profile?seconds=1", "the-admin"); code != http.StatusOK || len(body) == 0 {
		t.Fatalf("CPU profile: %d, %d bytes", code, len(body))
	}

	plain, _ := startServer(t)
	if code, body := getWithToken(t, plain.URL+"/debug/pprof/heap", plain.Token); code != http.StatusNotFound {
		t.Fatalf("without --admin-token-file: %d %s; want 404", code, body)
	}
}
