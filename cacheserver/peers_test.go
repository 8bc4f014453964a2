package cacheserver

import (
	"bytes"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

// Over TLS the shards speak HTTP/1.1 to each other, as over plain TCP,
// though the peer offers HTTP/2: a forward given up on then closes its
// connection, which the owner sees before it applies the write; over
// HTTP/2 it would only reset the stream. Both the plain HTTP calls (moves,
// the topology) and forwards too large for a frame (the frames transport's
// fallback) are checked.
func TestPeersSpeakHTTP1OverTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := newPeers(Config{PeerCAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	large := bytes.Repeat([]byte("x"), 2<<20) // over a frame
	for name, c := range map[string]*http.Client{"client": p.client, "forward": p.forward} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, srv.URL+"/v1/keys/k", bytes.NewReader(large))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		proto, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(proto) != "HTTP/1.1" {
			t.Errorf("%s: the peer served the call as %s, want HTTP/1.1", name, proto)
		}
	}
}
