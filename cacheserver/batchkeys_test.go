package cacheserver_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// TestBatchRequestsNeedKeys: a batch entry or record without a "key" is
// refused, never read as the empty key (a batch delete of [null] removed
// the "" item), and the 10,000-record limit stores nothing past it; on
// one server and through a shard of three.
func TestBatchRequestsNeedKeys(t *testing.T) {
	for _, tc := range oneAndThreeShards(t, 1) {
		t.Run(tc.name, func(t *testing.T) {
			records := map[string]string{"Content-Type": wire.RecordsContentType}
			post := func(path, body string, hdr map[string]string) (int, string) {
				st, _, b := do(t, "POST", tc.url+path, tc.token, []byte(body), hdr)
				return st, string(b)
			}
			if st, b := post("/v1/batch/set", "{\"key\":\"\",\"len\":8}\nprecious", records); st != 200 || !strings.Contains(b, `"stored":1`) {
				t.Fatalf("storing the empty key: %d %s", st, b)
			}
			for _, body := range []string{`{"keys":[null]}`, `{"keys":[{}]}`, `{"keys":[{"kt":"text"}]}`} {
				for _, path := range []string{"/v1/batch/delete", "/v1/batch/get"} {
					var e wire.Error
					st, b := post(path, body, nil)
					if st != http.StatusBadRequest || json.Unmarshal([]byte(b), &e) != nil || e.Code != wire.CodeBadKey {
						t.Errorf("%s %s = %d %s, want 400 bad_key", path, body, st, b)
					}
				}
			}
			found := func(key string) bool {
				t.Helper()
				st, b := post("/v1/batch/get", fmt.Sprintf(`{"keys":[{"key":%q}]}`, key), nil)
				if st != http.StatusOK {
					t.Fatalf("batch get %q: %d %s", key, st, b)
				}
				return !strings.Contains(b, `"found":false`)
			}
			if !found("") {
				t.Fatal("the empty key's item is gone")
			}

			// A record without a key fails alone; one without len is a
			// malformed stream.
			var res struct {
				Stored int `json:"stored"`
				Failed []struct {
					Index int    `json:"index"`
					Error string `json:"error"`
				} `json:"failed"`
			}
			st, b := post("/v1/batch/set", "{\"key\":\"a\",\"len\":1}\nA{\"len\":3}\nabc{\"key\":\"b\",\"len\":1}\nB", records)
			if st != 200 || json.Unmarshal([]byte(b), &res) != nil || res.Stored != 2 || len(res.Failed) != 1 || res.Failed[0].Index != 1 || res.Failed[0].Error != wire.CodeBadKey {
				t.Fatalf("batch set with a keyless record: %d %s", st, b)
			}
			if st, b := post("/v1/batch/set", "{\"key\":\"nolen\"}\n", records); st != http.StatusBadRequest || found("nolen") {
				t.Fatalf("a record without len: %d %s", st, b)
			}

			// 10,001 records: a 400, and nothing past the 10,000th stored.
			var many bytes.Buffer
			for i := range 10001 {
				fmt.Fprintf(&many, "{\"key\":\"z%d\",\"len\":1}\nx", i)
			}
			if st, b := post("/v1/batch/set", many.String(), records); st != http.StatusBadRequest || !strings.Contains(b, "more than 10000 records") {
				t.Fatalf("10,001 records: %d %s", st, b)
			}
			if !found("z9999") || found("z10000") {
				t.Fatalf("after 10,001 records: z9999 found %v, z10000 found %v; want true, false", found("z9999"), found("z10000"))
			}

			// 10,001 keys to get or delete: a 400 naming the limit, read
			// one entry at a time (a body of millions of entries was
			// decoded whole first); 10,000 are fine.
			var keyList bytes.Buffer
			keyList.WriteString(`{"keys":[`)
			for i := range 10001 {
				if i > 0 {
					keyList.WriteByte(',')
				}
				fmt.Fprintf(&keyList, `{"key":"z%d"}`, i)
			}
			keyList.WriteString(`]}`)
			for _, path := range []string{"/v1/batch/get", "/v1/batch/delete"} {
				if st, b := post(path, keyList.String(), nil); st != http.StatusBadRequest || !strings.Contains(b, "more than 10000 keys") {
					t.Errorf("%s of 10,001 keys: %d %.200s", path, st, b)
				}
			}
			tenThousand := strings.Replace(keyList.String(), `,{"key":"z10000"}`, "", 1)
			if st, b := post("/v1/batch/get", tenThousand, nil); st != http.StatusOK || strings.Count(b, `"key":`) != 10000 {
				t.Errorf("batch get of 10,000 keys: %d %.200s", st, b)
			}
			// More than 64 MiB of key list: 413, whatever the key size allows.
			huge := `{"keys":[{"key":"` + strings.Repeat("k", 65<<20) + `"}]}`
			if st, b := post("/v1/batch/get", huge, nil); st != http.StatusRequestEntityTooLarge {
				t.Errorf("a key list over 64 MiB: %d %.200s", st, b)
			}
			for _, body := range []string{`{"keys":null}`, `{}`} {
				if st, b := post("/v1/batch/get", body, nil); st != http.StatusOK {
					t.Errorf("batch get of %s: %d %.200s", body, st, b)
				}
			}
			for _, body := range []string{`{"keys":[{"key":"a"}],"x":1}`, `{"keys":{}}`, `[]`, `{"keys":[{"key":"a"}]} {}`, `{"keys":[{"key":"a","y":2}]}`} {
				if st, b := post("/v1/batch/get", body, nil); st != http.StatusBadRequest {
					t.Errorf("batch get of %s: %d %.200s, want 400", body, st, b)
				}
			}

			// A deque item takes no expire or tag: refused, nothing added.
			for _, rec := range []string{`{"len":1,"expire":1}`, `{"len":1,"tag":"t"}`} {
				if st, b := post("/v1/deques/dq/items", rec+"\nx", records); st != http.StatusBadRequest {
					t.Errorf("deque extend with %s: %d %s", rec, st, b)
				}
			}
			if st, _, b := do(t, "GET", tc.url+"/v1/deques/dq", tc.token, nil, nil); st != 200 || !strings.Contains(string(b), `"len":0`) {
				t.Errorf("the deque after refused extends: %d %s", st, b)
			}
		})
	}
}

// TestRecordStreamsCarryTheLargestKeys: a key of --max-key-bytes goes
// through batch set and batch get, on one server and forwarded between
// shards, even as a text key of control characters that JSON writes six
// times longer (a 64 KiB header limit cut such answers off).
func TestRecordStreamsCarryTheLargestKeys(t *testing.T) {
	keys := []string{strings.Repeat("q", 64<<10), strings.Repeat("\x01", 64<<10), strings.Repeat("é", 32<<10)}
	for _, tc := range oneAndThreeShards(t, 0) {
		t.Run(tc.name, func(t *testing.T) {
			var set bytes.Buffer
			rw := wire.NewRecordWriter(&set)
			ask := map[string]any{"keys": []wire.EncodeKeyJSON{}}
			for i, k := range keys {
				if err := rw.Write(wire.Record{Key: k, Type: "text"}, fmt.Appendf(nil, "value %d", i)); err != nil {
					t.Fatal(err)
				}
				ask["keys"] = append(ask["keys"].([]wire.EncodeKeyJSON), wire.EncodeKeyJSON{Key: k})
			}
			st, _, b := do(t, "POST", tc.url+"/v1/batch/set", tc.token, set.Bytes(), map[string]string{"Content-Type": wire.RecordsContentType})
			if st != http.StatusOK || !strings.Contains(string(b), fmt.Sprintf(`"stored":%d`, len(keys))) {
				t.Fatalf("batch set of the largest keys: %d %.300s", st, b)
			}
			body, _ := json.Marshal(ask)
			st, _, b = do(t, "POST", tc.url+"/v1/batch/get", tc.token, body, nil)
			if st != http.StatusOK {
				t.Fatalf("batch get of the largest keys: %d %.300s", st, b)
			}
			rr := wire.NewRecordReader(bytes.NewReader(b))
			for i, k := range keys {
				rec, val, err := rr.Next()
				if err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				v, _ := io.ReadAll(val)
				if rec.Key != k || string(v) != fmt.Sprintf("value %d", i) {
					t.Fatalf("record %d: key of %d bytes, value %q", i, len(rec.Key), v)
				}
			}
		})
	}
}

// target is where a test sends its requests.
type target struct{ name, url, token string }

// oneAndThreeShards starts one server and a cluster of three, and returns
// the server and the cluster's shard via as targets: every route answers
// the same through both.
func oneAndThreeShards(t *testing.T, via int) []target {
	t.Helper()
	one := testserver.Start(t, testserver.Options{})
	three := testserver.StartCluster(t, 3, testserver.Options{})
	return []target{{"one server", one.URL, one.Token}, {"3 shards", three.Shards[via].URL, three.Shards[via].Token}}
}
