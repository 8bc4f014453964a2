package topology

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"math"
	"os"
	"strconv"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/routing-vectors.json")

const vectorsFile = "testdata/routing-vectors.json"

// vector is one key of the shared test vectors: how to build the key in
// either language, its routing bytes, hash and owner for several counts.
type vector struct {
	Kind    string         `json:"kind"`    // text, bytes, int, float, pickle, name (a collection name)
	Key     string         `json:"key"`     // text and name: the string; int: decimal; float: Python repr; bytes and pickle: hex
	Routing string         `json:"routing"` // hex
	Hash    string         `json:"hash"`    // decimal uint64
	Owners  map[string]int `json:"owners"`  // shard count -> owner
}

type vectorFile struct {
	Comment string   `json:"comment"`
	Vectors []vector `json:"vectors"`
}

var shardCounts = []int{1, 2, 3, 4, 5, 8, 16, 128}

// routingOf builds the routing bytes of a vector's key the way the server
// does for a key of that kind.
func routingOf(t *testing.T, kind, key string) []byte {
	t.Helper()
	switch kind {
	case "text", "name":
		return []byte(key)
	case "bytes", "pickle":
		b, err := hex.DecodeString(key)
		if err != nil {
			t.Fatal(err)
		}
		return b
	case "int":
		i, err := strconv.ParseInt(key, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return IntRouting(i)
	case "float":
		f, err := strconv.ParseFloat(key, 64)
		if err != nil {
			t.Fatal(err)
		}
		return FloatRouting(f)
	}
	t.Fatalf("unknown kind %q", kind)
	return nil
}

func seedKeys() [][2]string {
	keys := [][2]string{
		{"text", ""}, {"text", "a"}, {"text", "greeting"}, {"text", "/"}, {"text", "."}, {"text", "ünïcødé ✓"},
		{"text", "key with spaces"}, {"text", ":1:django.views.decorators.cache"},
		{"bytes", ""}, {"bytes", "00"}, {"bytes", "ff00fe"}, {"bytes", hex.EncodeToString([]byte("a"))},
		{"int", "0"}, {"int", "1"}, {"int", "-1"}, {"int", "42"}, {"int", "9223372036854775807"}, {"int", "-9223372036854775808"},
		{"float", "0.0"}, {"float", "-0.0"}, {"float", "1.0"}, {"float", "0.5"}, {"float", "-2.25"}, {"float", "1234567.5"},
		{"float", "1e+20"}, {"float", "1.5e-07"}, {"float", "inf"}, {"float", "-inf"}, {"float", "9.223372036854776e+18"},
		{"float", "-9.223372036854776e+18"},
		// pickletools.optimize(pickle.dumps((1, 'a'), protocol=5)), and of ('tuple', 'x').
		{"pickle", "80059507000000000000004b018c0161862e"}, {"pickle", "8005950c000000000000008c057475706c658c0178862e"},
		{"name", "sessions"}, {"name", "queue"}, {"name", "idx/with/slashes"},
	}
	for i := 0; i < 40; i++ {
		keys = append(keys, [2]string{"text", "key-" + strconv.Itoa(i)})
	}
	return keys
}

func makeVector(t *testing.T, kind, key string) vector {
	r := routingOf(t, kind, key)
	v := vector{Kind: kind, Key: key, Routing: hex.EncodeToString(r), Hash: strconv.FormatUint(Hash(r), 10), Owners: map[string]int{}}
	for _, n := range shardCounts {
		v.Owners[strconv.Itoa(n)] = Owner(r, n)
	}
	return v
}

func TestRoutingVectors(t *testing.T) {
	if *update {
		f := vectorFile{Comment: "Shared key-ownership vectors: routing bytes (hex) -> BLAKE2b-8 little-endian hash -> jump hash owner per shard count. Read by topology/vectors_test.go and clients/python/tests/test_routing.py; regenerate with go test ./topology -run TestRoutingVectors -update."}
		for _, k := range seedKeys() {
			f.Vectors = append(f.Vectors, makeVector(t, k[0], k[1]))
		}
		b, err := json.MarshalIndent(f, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) < 50 {
		t.Fatalf("only %d vectors", len(f.Vectors))
	}
	for _, want := range f.Vectors {
		got := makeVector(t, want.Kind, want.Key)
		if got.Routing != want.Routing || got.Hash != want.Hash {
			t.Errorf("%s %q: routing %s hash %s, want %s %s", want.Kind, want.Key, got.Routing, got.Hash, want.Routing, want.Hash)
		}
		for n, o := range want.Owners {
			if got.Owners[n] != o {
				t.Errorf("%s %q: owner of %s shards = %d, want %d", want.Kind, want.Key, n, got.Owners[n], o)
			}
		}
	}
}

// Fixed points that do not depend on the file: the BLAKE2b digest of ""
// (as Python's hashlib computes it) and the jump hash paper's
// property that growing by one shard moves keys only to the new shard.
func TestHashAndJump(t *testing.T) {
	if got := Hash(nil); got != 0xb4b2797457a0a6e4 {
		// blake2b(b'', digest_size=8).hexdigest() == 'e4a6a0577479b2b4', read little-endian
		t.Errorf("Hash(\"\") = %#x", got)
	}
	for i := 0; i < 10000; i++ {
		h := Hash(IntRouting(int64(i)))
		for n := 1; n < 20; n++ {
			a, b := Jump(h, n), Jump(h, n+1)
			if a != b && b != n {
				t.Fatalf("key %d moved from %d to %d going %d -> %d shards", i, a, b, n, n+1)
			}
		}
	}
	if Owner([]byte("x"), 0) != -1 || Owner([]byte("x"), 1) != 0 {
		t.Error("Owner with 0 or 1 shards")
	}
	if string(FloatRouting(1.0)) != "1" || string(FloatRouting(math.Copysign(0, -1))) != "0" {
		t.Error("integral floats must route as ints")
	}
}
