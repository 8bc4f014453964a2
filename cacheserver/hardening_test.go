package cacheserver_test

import (
	"net/http"
	"testing"
)

// authStatus sends GET path with the given Authorization header.
func authStatus(t *testing.T, url, authorization string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	srv, _ := startServer(t)
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"Bearer " + srv.Token, http.StatusNotFound},
		{"bearer " + srv.Token, http.StatusNotFound},
		{"BEARER " + srv.Token, http.StatusNotFound},
		{"bEaReR  " + srv.Token, http.StatusNotFound},
		{"Basic " + srv.Token, http.StatusUnauthorized},
		{"Bearer", http.StatusUnauthorized},
		{"Bearer wrong", http.StatusUnauthorized},
		{srv.Token, http.StatusUnauthorized},
	} {
		if got := authStatus(t, srv.URL+"/v1/keys/nothing", tc.auth); got != tc.want {
			t.Errorf("Authorization %q: %d, want %d", tc.auth, got, tc.want)
		}
	}
}
