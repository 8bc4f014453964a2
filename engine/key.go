package engine

import (
	"database/sql/driver"
	"encoding/binary"
	"hash/adler32"
	"math"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// The key columns of the Cache table. Keys themselves (kv.Key) are part of
// the contract shared with the server and the clients; how they are stored
// and which database of the fanout holds them is the engine's business.

// dbKey returns the column value and the raw flag for the key column.
func dbKey(k kv.Key) (driver.Value, int64) {
	switch k.Kind() {
	case kv.KeyText:
		return k.Text(), 1
	case kv.KeyInt:
		return k.Int(), 1
	case kv.KeyFloat:
		return k.Float(), 1
	case kv.KeyPickle:
		return k.Bytes(), 0
	default:
		return k.Bytes(), 1
	}
}

// dbTag returns the tag column value (NULL for KeyNone).
func dbTag(k kv.Key) driver.Value {
	if k.IsNone() {
		return nil
	}
	v, _ := dbKey(k)
	return v
}

// keyFromDB rebuilds a key from the key and raw columns.
func keyFromDB(v driver.Value, raw int64) kv.Key {
	if raw == 0 {
		b, _ := v.([]byte)
		return kv.PickleKey(b)
	}
	return tagFromDB(v)
}

// tagFromDB rebuilds a tag (or raw key) from a column value.
func tagFromDB(v driver.Value) kv.Key {
	switch t := v.(type) {
	case int64:
		return kv.IntKey(t)
	case float64:
		return kv.FloatKey(t)
	case string:
		return kv.TextKey(t)
	case []byte:
		return kv.BytesKey(t)
	default:
		return kv.Key{}
	}
}

// fanoutHash is python-diskcache's Disk.hash: the 32-bit value FanoutCache
// takes modulo its fanout (python-diskcache's shard count) to pick the
// database that holds a key.
func fanoutHash(k kv.Key) uint32 {
	const mask = 0xFFFFFFFF
	switch k.Kind() {
	case kv.KeyInt:
		// Python's % with a positive modulus is never negative.
		m := k.Int() % mask
		if m < 0 {
			m += mask
		}
		return uint32(m)
	case kv.KeyFloat:
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], math.Float64bits(k.Float()))
		return adler32.Checksum(b[:])
	case kv.KeyText: // hashed as UTF-8
		return adler32.Checksum([]byte(k.Text()))
	default: // bytes and pickles as they are
		return adler32.Checksum(k.Bytes())
	}
}
