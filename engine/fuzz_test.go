package engine

// Fuzz tests: keys and values of every kind through a real Cache, and the
// FanoutCache fanout hash against python-diskcache's Disk.hash. The seed
// corpora run as ordinary tests.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/big"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// fzKey builds a key of one of the five kinds from fuzz input.
func fzKey(kind uint8, data []byte, n int64, x float64) kv.Key {
	switch kind % 5 {
	case 0:
		return kv.BytesKey(data)
	case 1:
		return kv.TextKey(string(data))
	case 2:
		return kv.IntKey(n)
	case 3:
		return kv.FloatKey(x)
	default:
		return kv.PickleKey(data)
	}
}

// fzKeyValid reports whether a key must be accepted: text must be UTF-8
// (python-diskcache could not read anything else) and floats must not be
// NaN (SQLite would store NULL).
func fzKeyValid(k kv.Key) bool {
	switch k.Kind() {
	case kv.KeyText:
		return utf8.ValidString(k.Text())
	case kv.KeyFloat:
		return !math.IsNaN(k.Float())
	}
	return true
}

func fzAddKeySeeds(f *testing.F) {
	for _, s := range []struct {
		kind uint8
		data string
		n    int64
		x    float64
	}{
		{0, "", 0, 0},
		{0, "\x00", 0, 0},
		{0, "\xff\xfe\x00bytes", 0, 0},
		{1, "", 0, 0},
		{1, "text", 0, 0},
		{1, "ключ-é-€-𝄞", 0, 0},
		{1, "nul\x00inside", 0, 0},
		{1, "\xc3\x28", 0, 0},       // invalid UTF-8
		{1, "ok\xed\xa0\x80", 0, 0}, // a UTF-16 surrogate: invalid UTF-8
		{2, "", 0, 0},
		{2, "", -1, 0},
		{2, "", math.MaxInt64, 0},
		{2, "", math.MinInt64, 0},
		{2, "", 500000000000000, 0},
		{3, "", 0, 0},
		{3, "", 0, math.Copysign(0, -1)},
		{3, "", 0, 1},
		{3, "", 0, -2.5},
		{3, "", 0, 1e300},
		{3, "", 0, math.Inf(1)},
		{3, "", 0, math.Inf(-1)},
		{3, "", 0, math.NaN()},
		{3, "", 0, 9223372036854775807},
		{3, "", 0, 0x1p62},
		{4, "\x80\x05\x95\x08\x00\x00\x00\x00\x00\x00\x00K\x01K\x02\x86\x94.", 0, 0},
		{4, "", 0, 0},
	} {
		f.Add(s.kind, []byte(s.data), s.n, s.x)
	}
}

func FuzzKeyRoundTrip(f *testing.F) {
	fzAddKeySeeds(f)
	ctx := context.Background()
	c, err := Open(ctx, f.TempDir(), Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = c.Close() })
	f.Fuzz(func(t *testing.T, kind uint8, data []byte, n int64, x float64) {
		if _, err := c.Clear(ctx); err != nil { // whatever a failed input left
			t.Fatal(err)
		}
		key := fzKey(kind, data, n, x)
		if !fzKeyValid(key) {
			if err := c.Set(ctx, key, kv.Int(1), kv.SetOptions{}); !errors.Is(err, kv.ErrInvalidKey) {
				t.Fatalf("Set(%v) = %v, want ErrInvalidKey", key, err)
			}
			if _, _, err := c.Get(ctx, key, GetOptions{}); !errors.Is(err, kv.ErrInvalidKey) {
				t.Fatalf("Get(%v) = %v, want ErrInvalidKey", key, err)
			}
			if err := c.Set(ctx, kv.TextKey("k"), kv.Int(1), kv.SetOptions{Tag: key}); !errors.Is(err, kv.ErrInvalidKey) {
				t.Fatalf("Set with tag %v = %v, want ErrInvalidKey", key, err)
			}
			if key.Kind() == kv.KeyText {
				if _, err := c.Push(ctx, kv.Int(1), QueueOptions{Prefix: key.Text()}, kv.SetOptions{}); !errors.Is(err, kv.ErrInvalidKey) {
					t.Fatalf("Push with prefix %v = %v, want ErrInvalidKey", key, err)
				}
			}
			if n := cxLen(t, c); n != 0 {
				t.Fatalf("a rejected write left %d items", n)
			}
			return
		}
		// The key as its own tag; a tag column holds a pickle as a plain BLOB.
		wantTag := key
		if key.Kind() == kv.KeyPickle {
			wantTag = kv.BytesKey(key.Bytes())
		}
		if err := c.Set(ctx, key, kv.Int(n), kv.SetOptions{Tag: key}); err != nil {
			t.Fatalf("Set(%v): %v", key, err)
		}
		it, ok, err := c.Get(ctx, key, GetOptions{})
		if err != nil || !ok || !it.Value.Equal(kv.Int(n)) || !it.Tag.Equal(wantTag) || it.Tag.Kind() != wantTag.Kind() {
			t.Fatalf("Get(%v) = %v (tag %v), %v, %v", key, it.Value, it.Tag, ok, err)
		}
		// The key comes back from the database with its kind and data.
		if it, err := c.PeekItem(ctx, true, GetOptions{}); err != nil || !it.Key.Equal(key) {
			t.Fatalf("PeekItem = %v, %v; want key %v", it.Key, err, key)
		}
		keys := cxCollect(t, c.Keys(ctx, false))
		sorted := cxCollect(t, c.SortedKeys(ctx, true))
		if len(keys) != 1 || !keys[0].Equal(key) || len(sorted) != 1 || !sorted[0].Equal(key) {
			t.Fatalf("Keys = %v, SortedKeys = %v; want [%v]", keys, sorted, key)
		}
		if n := cxLen(t, c); n != 1 {
			t.Fatalf("Len = %d, want 1", n)
		}
		// Keys compare as SQLite compares them: a whole float is the int.
		if key.Kind() == kv.KeyFloat && x == math.Trunc(x) && math.Abs(x) < 0x1p63 {
			if ok, err := c.Contains(ctx, kv.IntKey(int64(x))); err != nil || !ok {
				t.Fatalf("Contains(IntKey(%d)) = %v, %v after setting FloatKey(%v)", int64(x), ok, err, x)
			}
		}
		// Bytes, text and pickle with the same data are distinct keys.
		if key.Kind() == kv.KeyBytes || key.Kind() == kv.KeyPickle {
			other := kv.PickleKey(data)
			if key.Kind() == kv.KeyPickle {
				other = kv.BytesKey(data)
			}
			if ok, err := c.Contains(ctx, other); err != nil || ok {
				t.Fatalf("Contains(%v) = %v, %v: raw flag ignored", other, ok, err)
			}
		}
		if ok, err := c.Delete(ctx, key); err != nil || !ok {
			t.Fatalf("Delete(%v) = %v, %v", key, ok, err)
		}
		if _, ok, err := c.Get(ctx, key, GetOptions{}); err != nil || ok {
			t.Fatalf("Get(%v) after Delete = %v, %v", key, ok, err)
		}
		if n := cxLen(t, c); n != 0 {
			t.Fatalf("Len = %d after Delete", n)
		}
	})
}

// fzMinFileSize is the disk_min_file_size of the value fuzz cache: small, so
// that fuzzed values land both in the database and in files.
const fzMinFileSize = 64

func FuzzValueRoundTrip(f *testing.F) {
	for _, s := range []struct {
		typ    uint8
		data   string
		n      int64
		x      float64
		stream bool
	}{
		{0, "", 0, 0, false},
		{0, "\x00\xff", 0, 0, false},
		{0, strings.Repeat("b", fzMinFileSize-1), 0, 0, false},
		{0, strings.Repeat("b", fzMinFileSize), 0, 0, false},
		{0, "streamed", 0, 0, true},
		{0, "", 0, 0, true},
		{1, "", 0, 0, false},
		{1, "héllo", 0, 0, false},
		{1, strings.Repeat("€", fzMinFileSize-1), 0, 0, false}, // bytes over, characters under the threshold
		{1, strings.Repeat("€", fzMinFileSize), 0, 0, false},
		{1, strings.Repeat("a", fzMinFileSize), 0, 0, false},
		{1, "\xc3\x28", 0, 0, false},
		{1, "streamed é", 0, 0, true},
		{1, "\xff streamed", 0, 0, true},
		{1, strings.Repeat("é", 40) + "\xe2\x82", 0, 0, true}, // truncated at the end
		{1, "€𝄞é split one byte per read", 1, 0, true},
		{1, "é\xe2\x82(", 1, 0, true}, // broken across reads
		{1, "\xe2\x82", 1, 0, true},
		{2, "", 0, 0, false},
		{2, "", math.MinInt64, 0, false},
		{2, "", math.MaxInt64, 0, false},
		{3, "", 0, 0.1, false},
		{3, "", 0, math.Copysign(0, -1), false},
		{3, "", 0, math.Inf(1), false},
		{3, "", 0, math.NaN(), false},
		{3, "", 0, math.SmallestNonzeroFloat64, false},
		{4, "\x80\x05N.", 0, 0, false},
		{4, strings.Repeat("p", 100), 0, 0, false},
		{4, "\x80\x05N.", 0, 0, true},
	} {
		f.Add(s.typ, []byte(s.data), s.n, s.x, s.stream)
	}
	ctx := context.Background()
	c, err := Open(ctx, f.TempDir(), Options{Settings: map[settings.Name]any{settings.NameDiskMinFileSize: fzMinFileSize}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = c.Close() })
	key := kv.TextKey("value")
	f.Fuzz(func(t *testing.T, typ uint8, data []byte, n int64, x float64, stream bool) {
		var v kv.Value
		switch typ % 5 {
		case 0:
			v = kv.Bytes(data)
		case 1:
			v = kv.Text(string(data))
		case 2:
			v = kv.Int(n)
		case 3:
			v = kv.Float(x)
		default:
			v = kv.Pickle(data)
		}
		if v.Type == kv.ValueInt || v.Type == kv.ValueFloat {
			stream = false
		}
		opts := kv.SetOptions{}
		set := v
		if stream {
			// Every other input one byte per read, so runes split across reads.
			opts.Body = bytes.NewReader(data)
			if n%2 != 0 {
				opts.Body = iotest.OneByteReader(opts.Body)
			}
			set = kv.Value{Type: v.Type}
		}
		valid := !(v.Type == kv.ValueText && !utf8.Valid(data)) && !(v.Type == kv.ValueFloat && math.IsNaN(x))
		err := c.Set(ctx, key, set, opts)
		if !valid {
			if !errors.Is(err, kv.ErrInvalidValue) {
				t.Fatalf("Set(%v, stream %v) = %v, want ErrInvalidValue", v, stream, err)
			}
			if n := cxLen(t, c); n != 0 {
				t.Fatalf("a rejected write left %d items", n)
			}
			cxGoCheck(t, c) // and no value file
			return
		}
		if err != nil {
			t.Fatalf("Set(%v, stream %v): %v", v, stream, err)
		}
		inFile := stream || !inDatabase(v, fzMinFileSize)
		wantSize := int64(0)
		if inFile {
			wantSize = int64(len(data))
		}
		it, ok, err := c.Get(ctx, key, GetOptions{})
		if err != nil || !ok || !it.Value.Equal(v) || it.Size != wantSize {
			t.Fatalf("Get = %v (size %d), %v, %v; want %v (size %d)", it.Value, it.Size, ok, err, v, wantSize)
		}
		it, ok, err = c.Get(ctx, key, GetOptions{Stream: true})
		if err != nil || !ok || it.Value.Type != v.Type || (it.Body != nil) != inFile {
			t.Fatalf("Get(Stream) = %v, body %v, %v, %v", it.Value, it.Body != nil, ok, err)
		}
		if it.Body != nil {
			got, err := io.ReadAll(it.Body)
			_ = it.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("streamed body = %q, %v; want %q", got, err, data)
			}
		} else if !it.Value.Equal(v) {
			t.Fatalf("Get(Stream) = %v, want %v", it.Value, v)
		}
		if it, ok, err := c.Pop(ctx, key, GetOptions{}); err != nil || !ok || !it.Value.Equal(v) {
			t.Fatalf("Pop = %v, %v, %v; want %v", it.Value, ok, err, v)
		}
		if _, ok, err := c.Get(ctx, key, GetOptions{}); err != nil || ok {
			t.Fatalf("Get after Pop = %v, %v", ok, err)
		}
		// Nothing left behind: no row, no value file, no directory.
		if n := cxLen(t, c); n != 0 {
			t.Fatalf("Len = %d after Pop", n)
		}
		cxGoCheck(t, c)
	})
}

// fzAdler32 is adler32 written out, independent of hash/adler32.
func fzAdler32(b []byte) uint32 {
	const mod = 65521
	a, s := uint32(1), uint32(0)
	for _, c := range b {
		a = (a + uint32(c)) % mod
		s = (s + a) % mod
	}
	return s<<16 | a
}

func FuzzFanoutHash(f *testing.F) {
	fzAddKeySeeds(f)
	f.Add(uint8(0), bytes.Repeat([]byte{0xff}, 6000), int64(0), 0.0)
	f.Add(uint8(2), []byte{}, int64(math.MaxUint32), 0.0)
	f.Add(uint8(2), []byte{}, int64(-math.MaxUint32), 0.0)
	mask := big.NewInt(math.MaxUint32)
	f.Fuzz(func(t *testing.T, kind uint8, data []byte, n int64, x float64) {
		key := fzKey(kind, data, n, x)
		got := fanoutHash(key)
		var want uint32
		switch key.Kind() {
		case kv.KeyInt:
			// Python: key % 0xFFFFFFFF, never negative.
			m := new(big.Int).Mod(big.NewInt(n), mask) // Euclidean: 0 <= m < mask
			want = uint32(m.Uint64())
			if got == math.MaxUint32 {
				t.Fatalf("int hash %d out of range", got)
			}
		case kv.KeyFloat:
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], math.Float64bits(x))
			want = fzAdler32(b[:])
		default:
			want = fzAdler32(data)
		}
		if got != want {
			t.Fatalf("fanoutHash(%v) = %d, want %d", key, got, want)
		}
		// Text hashes as its UTF-8, so bytes, text and pickle of the same
		// data share a database.
		if h := fanoutHash(kv.BytesKey(data)); h != fanoutHash(kv.TextKey(string(data))) || h != fanoutHash(kv.PickleKey(data)) {
			t.Fatalf("bytes, text and pickle hashes of %q differ", data)
		}
	})
}

// TestFanoutHashMatchesPython compares fanoutHash with python-diskcache's
// Disk.hash (what FanoutCache takes modulo its fanout) on a table of
// keys of every kind, pickled keys pickled by python-diskcache itself.
func TestFanoutHashMatchesPython(t *testing.T) {
	py := cxRequireOracle(t)
	keys := []kv.Key{
		kv.IntKey(0), kv.IntKey(1), kv.IntKey(-1), kv.IntKey(42), kv.IntKey(math.MaxUint32 - 1), kv.IntKey(math.MaxUint32), kv.IntKey(math.MaxUint32 + 1),
		kv.IntKey(-math.MaxUint32), kv.IntKey(math.MaxInt64), kv.IntKey(math.MinInt64), kv.IntKey(500000000000000),
		kv.FloatKey(0), kv.FloatKey(math.Copysign(0, -1)), kv.FloatKey(1), kv.FloatKey(1.5), kv.FloatKey(-2.25), kv.FloatKey(1e300),
		kv.FloatKey(math.SmallestNonzeroFloat64), kv.FloatKey(math.Inf(1)), kv.FloatKey(math.Inf(-1)),
		kv.TextKey(""), kv.TextKey("a"), kv.TextKey("héllo"), kv.TextKey("𝄞€ключ"), kv.TextKey("nul\x00"), kv.TextKey(strings.Repeat("long é ", 3000)),
		kv.BytesKey(nil), kv.BytesKey([]byte{0}), kv.BytesKey([]byte("\xff\xfe\x00")), kv.BytesKey(bytes.Repeat([]byte{0xff}, 6000)),
	}
	exprs := []string{`(1, 2)`, `2**64`, `-2**63 - 1`, `True`, `None`, `('a', b'b', 1.5, None)`, `frozenset()`}
	var in []cxEnc
	for _, k := range keys {
		in = append(in, cxKeyIn(k))
	}
	for _, e := range exprs {
		in = append(in, cxExpr(e))
	}
	var resp []struct {
		Hash uint32 `json:"hash"`
		Raw  bool   `json:"raw"`
		DB   cxEnc  `json:"db"`
	}
	py.run(t, "hash", map[string]any{"keys": in}, &resp)
	if len(resp) != len(in) {
		t.Fatalf("%d hashes for %d keys", len(resp), len(in))
	}
	for i, r := range resp {
		var k kv.Key
		if i < len(keys) {
			k = keys[i]
			if !r.Raw || r.DB != cxKeyIn(k) {
				t.Errorf("python stores %v as %s (raw %v)", k, r.DB, r.Raw)
			}
		} else {
			if r.Raw || r.DB.T != "pickle" {
				t.Errorf("python does not pickle %s", exprs[i-len(keys)])
				continue
			}
			k = kv.PickleKey(cxDecode(t, r.DB.B64))
		}
		if got := fanoutHash(k); got != r.Hash {
			t.Errorf("fanoutHash(%v) = %d, python Disk.hash = %d", k, got, r.Hash)
		}
	}
}
