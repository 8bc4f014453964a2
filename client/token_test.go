package client

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// TestTokenFileFollowsRotation: a client given a token file sends what the
// file holds when it changes, and on a 401 reads it again and sends the
// request once more, so a rotated token costs no failed call. The second
// rotation keeps the file's size and modification time, so only the 401
// can make the client notice it.
func TestTokenFileFollowsRotation(t *testing.T) {
	ctx := context.Background()
	serverFile := filepath.Join(t.TempDir(), "token")
	clientFile := filepath.Join(t.TempDir(), "token")
	write := func(path, tok string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(serverFile, "token-aaaa")
	write(clientFile, "token-aaaa")
	srv := testserver.Start(t, testserver.Options{Token: "token-aaaa", TokenFile: serverFile})
	c, err := New(srv.URL, Options{TokenFile: clientFile, DirectOnly: true, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	cache := c.Cache("")
	if err := cache.Set(ctx, kv.TextKey("k"), kv.Text("1"), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	// rotateServer gives the server tok alone and waits until it takes it.
	rotateServer := func(tok string) {
		t.Helper()
		write(serverFile, tok)
		deadline := time.Now().Add(30 * time.Second)
		for {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/info", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the server did not take %s: %s", tok, resp.Status)
			}
			time.Sleep(50 * time.Millisecond) // the server checks its file once a second
		}
	}

	rotateServer("token-bbbb")
	write(clientFile, "token-bbbb")
	if _, _, err := cache.Get(ctx, kv.TextKey("k")); err != nil {
		t.Fatalf("Get after the token file changed: %v", err)
	}

	st, err := os.Stat(clientFile)
	if err != nil {
		t.Fatal(err)
	}
	rotateServer("token-cccc")
	write(clientFile, "token-cccc")
	if err := os.Chtimes(clientFile, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := cache.Set(ctx, kv.TextKey("k"), kv.Text(fmt.Sprint(i)), kv.SetOptions{}); err != nil {
			t.Fatalf("Set %d after a rotation the client could only learn of from a 401: %v", i, err)
		}
	}
}
