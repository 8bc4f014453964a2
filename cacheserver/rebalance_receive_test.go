package cacheserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// moveStream writes a move stream (POST /v1/rebalance/receive) of text keys
// with bytes values; values from 32 KiB on travel as value files.
func moveStream(keys []string, value func(k string) []byte) *bytes.Buffer {
	var b bytes.Buffer
	for _, k := range keys {
		v := value(k)
		rec := map[string]any{"key": k, "store_time": 1.7e9, "access_time": 1.7e9, "access_count": 0, "len": len(v)}
		if len(v) >= 32<<10 {
			rec["file"], rec["mode"] = true, 2 // MODE_BINARY
		} else {
			rec["type"], rec["mode"] = "bytes", 1 // MODE_RAW
		}
		h, _ := json.Marshal(rec)
		b.Write(append(h, '\n'))
		b.Write(v)
	}
	return &b
}

func postReceive(t *testing.T, url, admin string, body io.Reader) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/rebalance/receive", body)
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set(wire.HeaderForwardedEpoch, "1")
	req.Header.Set("Content-Type", wire.RecordsContentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestReceiveBatchIsWholeAndRetriable: a received batch spread over several
// fanout databases, with a value file, is imported together: a stream that
// breaks after some of its rows imports none of them and leaves no value
// file; the same batch sent again imports every row, and once more skips
// them all.
func TestReceiveBatchIsWholeAndRetriable(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	b := c.Shards[1]
	keys := movingKeys("recv", 20, 1, 2, 1) // shard 1's keys
	value := func(k string) []byte {
		if k == keys[7] {
			return bytes.Repeat([]byte("F"), 40<<10)
		}
		return []byte("v-" + k)
	}
	cache := dataClient(t, b.URL, b.Token).Cache("")
	absent := func(when string) {
		t.Helper()
		for _, k := range keys {
			if _, ok, err := cache.Get(context.Background(), kv.TextKey(k)); err != nil || ok {
				t.Fatalf("%s: %s found=%v, %v; want absent", when, k, ok, err)
			}
		}
	}

	broken := moveStream(keys, value)
	broken.WriteString("{not json\n")
	if code, body := postReceive(t, b.URL, c.AdminToken, broken); code != http.StatusBadRequest {
		t.Fatalf("broken stream: %d %s, want 400", code, body)
	}
	absent("after a broken batch")
	if f := valueFiles(t, b.DataDir); len(f) != 0 {
		t.Fatalf("a broken batch left value files %v", f)
	}

	for _, want := range []string{`{"imported":20,"skipped":0}`, `{"imported":0,"skipped":20}`} {
		if code, body := postReceive(t, b.URL, c.AdminToken, moveStream(keys, value)); code != http.StatusOK || body != want {
			t.Fatalf("batch: %d %s, want 200 %s", code, body, want)
		}
	}
	for _, k := range keys {
		it, ok, err := cache.Get(context.Background(), kv.TextKey(k))
		if err != nil || !ok || !bytes.Equal(it.Value.Data, value(k)) {
			t.Fatalf("%s after the batch: %d bytes, %v, %v", k, len(it.Value.Data), ok, err)
		}
	}
	if f := valueFiles(t, b.DataDir); len(f) != 1 {
		t.Fatalf("value files %v after the batch twice, want 1", f)
	}
}

// TestMoveRequestWithoutAnEpochIsABadRequest: a move request whose
// sender's epoch is missing or not a number is the caller's mistake (400),
// not a wrong epoch (409, which a sender answers by learning the topology).
func TestMoveRequestWithoutAnEpochIsABadRequest(t *testing.T) {
	c := testserver.StartCluster(t, 2, testserver.Options{})
	for _, epoch := range []string{"", "x", "0", "-3"} {
		for _, route := range []string{"POST /v1/rebalance/receive", "GET /v1/rebalance/export"} {
			method, path, _ := strings.Cut(route, " ")
			req, _ := http.NewRequest(method, c.Shards[1].URL+path, strings.NewReader(""))
			req.Header.Set("Authorization", "Bearer "+c.AdminToken)
			if epoch != "" {
				req.Header.Set(wire.HeaderForwardedEpoch, epoch)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var e wire.Error
			_ = json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || e.Code != wire.CodeBadRequest {
				t.Errorf("%s with epoch %q: %d %s %s; want 400 bad_request", route, epoch, resp.StatusCode, e.Code, e.Message)
			}
		}
	}
}
