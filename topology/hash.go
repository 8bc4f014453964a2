// Package topology decides which shard owns a key and describes the set of
// shards that serve one cache: the document behind /v1/topology.
//
// A key's owner is jump consistent hash (Lamping & Veach) of a 64-bit hash of
// the key's routing bytes over the shard count. Shard i is StatefulSet
// ordinal i. The Python client (diskcache_client) mirrors this exactly; both
// languages' tests read testdata/routing-vectors.json.
package topology

import (
	"encoding/binary"
	"math"
	"strconv"

	"golang.org/x/crypto/blake2b"
)

// Hash is the 64-bit routing hash of a key: BLAKE2b (unkeyed, 8-byte
// digest) of its routing bytes, read little-endian.
func Hash(routing []byte) uint64 {
	h, _ := blake2b.New(8, nil) // cannot fail: 8 is a valid size and there is no key
	h.Write(routing)
	var sum [8]byte
	return binary.LittleEndian.Uint64(h.Sum(sum[:0]))
}

// Jump maps a 64-bit hash to a bucket in [0, buckets): Lamping and Veach's
// jump consistent hash. Growing from n to n+1 buckets moves about 1/(n+1) of
// the keys, all of them to the new bucket. buckets < 1 gives -1.
func Jump(key uint64, buckets int) int {
	b, j := int64(-1), int64(0)
	for j < int64(buckets) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}

// Owner returns the shard, of n, that owns the item with these routing
// bytes.
func Owner(routing []byte, n int) int {
	if n <= 1 {
		return n - 1 // 0 for one shard, -1 for none
	}
	return Jump(Hash(routing), n)
}

// The routing bytes of a key are the bytes the wire carries for it (text as
// UTF-8, bytes and pickles as they are, ints in decimal), except floats:
// SQLite and python-diskcache treat 1 and 1.0 as the same item, so an
// integral float routes as the int of the same value, and any other float
// as its IEEE 754 binary64 big-endian bytes (text forms of floats differ
// between languages).

// IntRouting returns the routing bytes of an int key.
func IntRouting(i int64) []byte { return strconv.AppendInt(nil, i, 10) }

// FloatRouting returns the routing bytes of a float key.
func FloatRouting(f float64) []byte {
	if f == math.Trunc(f) && f >= -(1<<63) && f < 1<<63 {
		return IntRouting(int64(f))
	}
	return binary.BigEndian.AppendUint64(nil, math.Float64bits(f))
}
