package engine

import (
	"errors"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// t0 is the fake clock's start in epoch seconds.
const t0 = 1_700_000_000.0

func TestKeyKindsAndEquality(t *testing.T) {
	c, _ := openTest(t, nil)
	utSet(t, c, kv.IntKey(1), kv.Text("int"), kv.SetOptions{})
	// 1 and 1.0 are the same row.
	utWant(t, c, kv.FloatKey(1), kv.Text("int"))
	utSet(t, c, kv.FloatKey(1.0), kv.Text("float"), kv.SetOptions{})
	utWant(t, c, kv.IntKey(1), kv.Text("float"))
	// '1', b'1' and a pickle of the same bytes are three rows.
	utSet(t, c, kv.TextKey("1"), kv.Text("text"), kv.SetOptions{})
	utSet(t, c, kv.BytesKey([]byte("1")), kv.Text("bytes"), kv.SetOptions{})
	utSet(t, c, kv.PickleKey([]byte("1")), kv.Text("pickle"), kv.SetOptions{})
	utWant(t, c, kv.TextKey("1"), kv.Text("text"))
	utWant(t, c, kv.BytesKey([]byte("1")), kv.Text("bytes"))
	utWant(t, c, kv.PickleKey([]byte("1")), kv.Text("pickle"))
	if n := utLen(t, c); n != 4 {
		t.Fatalf("Len = %d, want 4", n)
	}
	if r := utMustRow(t, c, kv.PickleKey([]byte("1"))); r.value == nil {
		t.Fatal("pickle row has no value")
	}
	if n := utQueryInt(t, c, `SELECT COUNT(*) FROM Cache WHERE raw = 0`); n != 1 {
		t.Fatalf("pickled keys = %d, want 1", n)
	}
	// Extreme and empty keys round-trip.
	for _, k := range []kv.Key{kv.IntKey(math.MinInt64), kv.IntKey(math.MaxInt64), kv.FloatKey(-0.5), kv.FloatKey(math.Inf(1)), kv.TextKey(""), kv.BytesKey(nil), kv.TextKey("ünï©ødé")} {
		utSet(t, c, k, kv.Int(7), kv.SetOptions{})
		utWant(t, c, k, kv.Int(7))
	}
}

func TestInvalidKeysAndValues(t *testing.T) {
	c, _ := openTest(t, nil)
	for _, k := range []kv.Key{{}, kv.FloatKey(math.NaN())} {
		if err := c.Set(utCtx, k, kv.Int(1), kv.SetOptions{}); !errors.Is(err, kv.ErrInvalidKey) {
			t.Errorf("Set(%v) = %v, want ErrInvalidKey", k, err)
		}
		if _, _, err := c.Get(utCtx, k, GetOptions{}); !errors.Is(err, kv.ErrInvalidKey) {
			t.Errorf("Get(%v) = %v, want ErrInvalidKey", k, err)
		}
		if _, err := c.Add(utCtx, k, kv.Int(1), kv.SetOptions{}); !errors.Is(err, kv.ErrInvalidKey) {
			t.Errorf("Add(%v) = %v, want ErrInvalidKey", k, err)
		}
		if _, err := c.Delete(utCtx, k); !errors.Is(err, kv.ErrInvalidKey) {
			t.Errorf("Delete(%v) = %v, want ErrInvalidKey", k, err)
		}
		if _, err := c.Contains(utCtx, k); !errors.Is(err, kv.ErrInvalidKey) {
			t.Errorf("Contains(%v) = %v, want ErrInvalidKey", k, err)
		}
		if _, err := c.Incr(utCtx, k, kv.Int(1), kv.Int(0)); !errors.Is(err, kv.ErrInvalidKey) {
			t.Errorf("Incr(%v) = %v, want ErrInvalidKey", k, err)
		}
	}
	if err := c.Set(utCtx, kv.TextKey("k"), kv.Int(1), kv.SetOptions{Tag: kv.FloatKey(math.NaN())}); !errors.Is(err, kv.ErrInvalidKey) {
		t.Errorf("NaN tag: %v, want ErrInvalidKey", err)
	}
	if err := c.Set(utCtx, kv.TextKey("k"), kv.Value{}, kv.SetOptions{}); !errors.Is(err, kv.ErrInvalidValue) {
		t.Errorf("untyped value: %v, want ErrInvalidValue", err)
	}
	if err := c.Set(utCtx, kv.TextKey("k"), kv.Value{Type: kv.ValueText, Data: []byte{0xff, 0xfe}}, kv.SetOptions{}); !errors.Is(err, kv.ErrInvalidValue) {
		t.Errorf("invalid UTF-8: %v, want ErrInvalidValue", err)
	}
	if err := c.Set(utCtx, kv.TextKey("k"), kv.Int(1), kv.SetOptions{Body: strings.NewReader("1")}); !errors.Is(err, kv.ErrInvalidValue) {
		t.Errorf("streamed int: %v, want ErrInvalidValue", err)
	}
	// SQLite would store NaN as NULL, which reads back as a corrupt row.
	if err := c.Set(utCtx, kv.TextKey("k"), kv.Float(math.NaN()), kv.SetOptions{}); !errors.Is(err, kv.ErrInvalidValue) {
		t.Errorf("NaN value: %v, want ErrInvalidValue", err)
	}
	if _, err := c.Incr(utCtx, kv.TextKey("k"), kv.Float(math.NaN()), kv.Int(0)); !errors.Is(err, kv.ErrInvalidValue) {
		t.Errorf("NaN delta: %v, want ErrInvalidValue", err)
	}
	if _, err := c.Incr(utCtx, kv.TextKey("k"), kv.Float(math.Inf(-1)), kv.Float(math.Inf(1))); !errors.Is(err, kv.ErrInvalidValue) {
		t.Errorf("Inf - Inf: %v, want ErrInvalidValue", err)
	}
	if _, err := c.Push(utCtx, kv.Float(math.NaN()), QueueOptions{}, kv.SetOptions{}); !errors.Is(err, kv.ErrInvalidValue) {
		t.Errorf("NaN push: %v, want ErrInvalidValue", err)
	}
	if n := utLen(t, c); n != 0 {
		t.Fatalf("Len = %d after rejected writes", n)
	}
	if files := utValFiles(t, c); len(files) != 0 {
		t.Fatalf("files left by rejected writes: %v", files)
	}
}

func TestValueTypesRoundTrip(t *testing.T) {
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 64})
	for i, v := range []kv.Value{
		kv.Int(0), kv.Int(-1), kv.Int(math.MaxInt64), kv.Int(math.MinInt64),
		kv.Float(0.25), kv.Float(-1e300), kv.Float(math.Inf(-1)),
		kv.Text(""), kv.Text("héllo"), kv.Text(strings.Repeat("ж", 100)),
		kv.Bytes(nil), kv.Bytes([]byte{0, 1, 2}), kv.Bytes(utBig(1000, 'b')),
		kv.Pickle([]byte("\x80\x05N.")), kv.Pickle(utBig(200, 'p')),
	} {
		k := kv.IntKey(int64(i))
		utSet(t, c, k, v, kv.SetOptions{})
		it, ok := utGet(t, c, k)
		if !ok {
			t.Fatalf("%v: miss", v)
		}
		want := v
		if v.Type == kv.ValueBytes && v.Data == nil {
			want = kv.Bytes([]byte{})
		}
		if !it.Value.Equal(want) {
			t.Fatalf("Get = %v (%v), want %v (%v)", it.Value, it.Value.Type, v, v.Type)
		}
	}
	if warns, err := c.Check(utCtx, false); err != nil || len(warns) != 0 {
		t.Fatalf("Check = %v, %v", warns, err)
	}
}

var valFileName = regexp.MustCompile(`^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val$`)

func TestDiskMinFileSizeBoundary(t *testing.T) {
	const min = 100
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: min})
	cases := []struct {
		name     string
		v        kv.Value
		mode     int64
		inFile   bool
		fileSize int64
	}{
		{"bytes-below", kv.Bytes(utBig(min-1, 'x')), modeRaw, false, 0},
		{"bytes-at", kv.Bytes(utBig(min, 'x')), modeBinary, true, min},
		{"bytes-above", kv.Bytes(utBig(min+1, 'x')), modeBinary, true, min + 1},
		{"text-below", kv.Text(strings.Repeat("t", min-1)), modeRaw, false, 0},
		{"text-at", kv.Text(strings.Repeat("t", min)), modeText, true, min},
		// Characters, not bytes: 99 two-byte characters stay in the database.
		{"text-multibyte-below", kv.Text(strings.Repeat("é", min-1)), modeRaw, false, 0},
		{"text-multibyte-at", kv.Text(strings.Repeat("é", min)), modeText, true, 2 * min},
		{"pickle-below", kv.Pickle(utBig(min-1, 'p')), modePickle, false, 0},
		{"pickle-at", kv.Pickle(utBig(min, 'p')), modePickle, true, min},
		{"int", kv.Int(1 << 62), modeRaw, false, 0},
		{"float", kv.Float(1.5), modeRaw, false, 0},
		{"empty-bytes", kv.Bytes(nil), modeRaw, false, 0},
	}
	var wantSize int64
	for _, tc := range cases {
		k := kv.TextKey(tc.name)
		utSet(t, c, k, tc.v, kv.SetOptions{})
		r := utMustRow(t, c, k)
		if r.mode != tc.mode {
			t.Errorf("%s: mode = %d, want %d", tc.name, r.mode, tc.mode)
		}
		if r.filename.Valid != tc.inFile {
			t.Errorf("%s: filename = %v, want in file %v", tc.name, r.filename, tc.inFile)
		}
		if r.size != tc.fileSize {
			t.Errorf("%s: size = %d, want %d", tc.name, r.size, tc.fileSize)
		}
		if tc.inFile {
			if r.value != nil {
				t.Errorf("%s: value column = %v, want NULL", tc.name, r.value)
			}
			if !valFileName.MatchString(r.filename.String) {
				t.Errorf("%s: filename %q is not ab/cd/<28 hex>.val", tc.name, r.filename.String)
			}
			data, err := os.ReadFile(utFileOf(t, c, k))
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != string(tc.v.Data) {
				t.Errorf("%s: file holds %d bytes, want the value", tc.name, len(data))
			}
		} else if r.value == nil {
			t.Errorf("%s: value column is NULL", tc.name)
		}
		wantSize += tc.fileSize
		utWant(t, c, k, normalised(tc.v))
	}
	if got := utQueryInt(t, c, `SELECT value FROM Settings WHERE key = 'size'`); got != wantSize {
		t.Fatalf("Settings.size = %d, want %d", got, wantSize)
	}
	if n := len(utValFiles(t, c)); n != 5 {
		t.Fatalf("%d value files, want 5", n)
	}
}

// normalised is v as it reads back (nil bytes come back empty).
func normalised(v kv.Value) kv.Value {
	if (v.Type == kv.ValueBytes || v.Type == kv.ValueText || v.Type == kv.ValuePickle) && v.Data == nil {
		v.Data = []byte{}
	}
	return v
}

func TestStreamedWritesAndReads(t *testing.T) {
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 1000})
	// A streamed body always goes to a file, however small.
	utSet(t, c, kv.TextKey("small"), kv.Value{}, kv.SetOptions{Body: strings.NewReader("abc")})
	r := utMustRow(t, c, kv.TextKey("small"))
	if r.mode != modeBinary || !r.filename.Valid || r.size != 3 {
		t.Fatalf("streamed row = %+v, want BINARY file of 3 bytes", r)
	}
	utSet(t, c, kv.TextKey("text"), kv.Value{Type: kv.ValueText}, kv.SetOptions{Body: strings.NewReader("héllo")})
	if r := utMustRow(t, c, kv.TextKey("text")); r.mode != modeText || r.size != 6 {
		t.Fatalf("streamed text row = %+v, want TEXT file of 6 bytes", r)
	}
	utWant(t, c, kv.TextKey("text"), kv.Text("héllo"))

	big := utBig(5000, 'z')
	utSet(t, c, kv.TextKey("big"), kv.Bytes(big), kv.SetOptions{Tag: kv.TextKey("tg")})

	// Stream: the value stays in its file.
	it, ok, err := c.Get(utCtx, kv.TextKey("big"), GetOptions{Stream: true})
	if err != nil || !ok {
		t.Fatalf("Get stream = %v, %v", ok, err)
	}
	if it.Body == nil || it.Value.Data != nil || it.Value.Type != kv.ValueBytes || it.Size != 5000 || !it.Tag.Equal(kv.TextKey("tg")) {
		t.Fatalf("streamed item = %+v", it)
	}
	data, err := io.ReadAll(it.Body)
	if err != nil || string(data) != string(big) {
		t.Fatalf("streamed body: %d bytes, %v", len(data), err)
	}
	if err := it.Close(); err != nil || it.Body != nil {
		t.Fatalf("Close = %v, body %v", err, it.Body)
	}
	if err := it.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}

	// Not streamed: read into memory.
	it, ok, err = c.Get(utCtx, kv.TextKey("big"), GetOptions{})
	if err != nil || !ok || it.Body != nil || string(it.Value.Data) != string(big) || it.Size != 5000 {
		t.Fatalf("Get = %+v, %v, %v", it, ok, err)
	}

	// A value in the database comes back as a value even when streaming.
	utSet(t, c, kv.TextKey("db"), kv.Bytes([]byte("inline")), kv.SetOptions{})
	it, ok, err = c.Get(utCtx, kv.TextKey("db"), GetOptions{Stream: true})
	if err != nil || !ok || it.Body != nil || string(it.Value.Data) != "inline" || it.Size != 0 {
		t.Fatalf("Get stream of db value = %+v, %v, %v", it, ok, err)
	}

	// A streamed body that is still open keeps its data after the item is
	// replaced and its file removed.
	it, _, err = c.Get(utCtx, kv.TextKey("big"), GetOptions{Stream: true})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	utSet(t, c, kv.TextKey("big"), kv.Int(1), kv.SetOptions{})
	if data, err := io.ReadAll(it.Body); err != nil || len(data) != 5000 {
		t.Fatalf("open body after replace: %d bytes, %v", len(data), err)
	}

	// Pop can stream too.
	utSet(t, c, kv.TextKey("pop"), kv.Bytes(big), kv.SetOptions{})
	it, ok, err = c.Pop(utCtx, kv.TextKey("pop"), GetOptions{Stream: true})
	if err != nil || !ok || it.Body == nil {
		t.Fatalf("Pop stream = %+v, %v, %v", it, ok, err)
	}
	data, _ = io.ReadAll(it.Body)
	it.Close()
	if string(data) != string(big) {
		t.Fatalf("popped body has %d bytes", len(data))
	}
	if _, ok := utRowOf(t, c, kv.TextKey("pop")); ok {
		t.Fatal("popped row still there")
	}
}

func TestSetReplacesEverything(t *testing.T) {
	c, clk := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 100, settings.NameEvictionPolicy: string(settings.PolicyLeastFrequentlyUsed)})
	utSet(t, c, kv.TextKey("first"), kv.Int(1), kv.SetOptions{})
	utSet(t, c, kv.TextKey("k"), kv.Bytes(utBig(500, 'a')), kv.SetOptions{Tag: kv.TextKey("old"), Expire: kv.ExpireAfter(time.Hour)})
	utSet(t, c, kv.TextKey("last"), kv.Int(3), kv.SetOptions{})
	before := utMustRow(t, c, kv.TextKey("k"))
	oldFile := utFileOf(t, c, kv.TextKey("k"))
	utGet(t, c, kv.TextKey("k"))
	utGet(t, c, kv.TextKey("k"))
	if r := utMustRow(t, c, kv.TextKey("k")); r.accessCount != 2 {
		t.Fatalf("access_count = %d, want 2", r.accessCount)
	}

	clk.Advance(5 * time.Second)
	utSet(t, c, kv.TextKey("k"), kv.Text("small"), kv.SetOptions{})
	after := utMustRow(t, c, kv.TextKey("k"))
	if after.rowid != before.rowid {
		t.Fatalf("rowid changed %d -> %d", before.rowid, after.rowid)
	}
	if after.expireTime.Valid || after.tag != nil || after.filename.Valid || after.size != 0 || after.mode != modeRaw || after.accessCount != 0 {
		t.Fatalf("row after set = %+v, want no expiry, no tag, no file, count 0", after)
	}
	if after.storeTime != t0+5 || after.accessTime != t0+5 {
		t.Fatalf("store/access time = %v/%v, want %v", after.storeTime, after.accessTime, t0+5)
	}
	if _, err := os.Stat(oldFile); !os.IsNotExist(err) {
		t.Fatalf("old value file still there: %v", err)
	}
	if files := utValFiles(t, c); len(files) != 0 {
		t.Fatalf("value files left: %v (empty directories must be pruned too)", files)
	}
	if ents, _ := os.ReadDir(c.Directory()); len(ents) > 3 { // cache.db, -wal, -shm
		t.Fatalf("directory entries left: %v", ents)
	}
	if got := utQueryInt(t, c, `SELECT value FROM Settings WHERE key = 'size'`); got != 0 {
		t.Fatalf("Settings.size = %d, want 0", got)
	}
	it, _ := utGet(t, c, kv.TextKey("k"))
	if !it.Tag.IsNone() || it.ExpireTime != 0 || !it.Value.Equal(kv.Text("small")) {
		t.Fatalf("item = %+v", it)
	}
	// Iteration order unchanged: the replaced key keeps its place.
	utSameKeys(t, utKeys(t, c.Keys(utCtx, false)), []kv.Key{kv.TextKey("first"), kv.TextKey("k"), kv.TextKey("last")})

	// Setting a file-backed value over an in-database one.
	utSet(t, c, kv.TextKey("first"), kv.Bytes(utBig(300, 'f')), kv.SetOptions{Tag: kv.IntKey(9)})
	it, _ = utGet(t, c, kv.TextKey("first"))
	if !it.Tag.Equal(kv.IntKey(9)) || len(it.Value.Data) != 300 {
		t.Fatalf("item = %+v", it)
	}
}

func TestGetReturnsTagAndExpireTime(t *testing.T) {
	c, _ := openTest(t, nil)
	for _, tag := range []kv.Key{kv.TextKey("t"), kv.BytesKey([]byte("b")), kv.IntKey(-3), kv.FloatKey(2.5)} {
		utSet(t, c, kv.TextKey("k"), kv.Int(1), kv.SetOptions{Tag: tag, Expire: kv.ExpireAfter(90 * time.Second)})
		it, ok := utGet(t, c, kv.TextKey("k"))
		if !ok || !it.Tag.Equal(tag) || it.ExpireTime != t0+90 || !it.Key.Equal(kv.TextKey("k")) {
			t.Fatalf("item = %+v, want tag %v expire %v", it, tag, t0+90)
		}
	}
	utSet(t, c, kv.TextKey("k"), kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfterSeconds(1.5)})
	if it, _ := utGet(t, c, kv.TextKey("k")); it.ExpireTime != t0+1.5 {
		t.Fatalf("ExpireTime = %v, want %v", it.ExpireTime, t0+1.5)
	}
}

// TestExpiryBoundary checks both liveness rules at expire_time == now:
// get, contains, delete, touch, add, pop see the item as dead; incr, pull,
// peek, peekitem and culling see it as live.
func TestExpiryBoundary(t *testing.T) {
	setup := func(t *testing.T) (*Cache, *fakeClock) {
		c, clk := openTest(t, nil)
		utSet(t, c, kv.TextKey("k"), kv.Int(10), kv.SetOptions{Expire: kv.ExpireAfter(10 * time.Second), Tag: kv.TextKey("tg")})
		clk.Advance(10 * time.Second) // now == expire_time
		return c, clk
	}
	t.Run("just-before", func(t *testing.T) {
		c, clk := openTest(t, nil)
		utSet(t, c, kv.TextKey("k"), kv.Int(10), kv.SetOptions{Expire: kv.ExpireAfter(10 * time.Second)})
		clk.Advance(10*time.Second - time.Millisecond)
		utWant(t, c, kv.TextKey("k"), kv.Int(10))
		if ok, _ := c.Contains(utCtx, kv.TextKey("k")); !ok {
			t.Fatal("Contains = false before expiry")
		}
	})
	t.Run("get", func(t *testing.T) {
		c, _ := setup(t)
		utMiss(t, c, kv.TextKey("k"))
		if n := utLen(t, c); n != 1 {
			t.Fatalf("Len = %d: get must not delete expired rows", n)
		}
	})
	t.Run("get-statistics", func(t *testing.T) {
		c, _ := setup(t)
		if _, _, err := c.Stats(utCtx, true, false); err != nil {
			t.Fatal(err)
		}
		utMiss(t, c, kv.TextKey("k"))
		if h, m, _ := c.Stats(utCtx, true, false); h != 0 || m != 1 {
			t.Fatalf("hits, misses = %d, %d; want 0, 1", h, m)
		}
	})
	t.Run("contains", func(t *testing.T) {
		c, _ := setup(t)
		if ok, err := c.Contains(utCtx, kv.TextKey("k")); ok || err != nil {
			t.Fatalf("Contains = %v, %v", ok, err)
		}
	})
	t.Run("delete", func(t *testing.T) {
		c, _ := setup(t)
		if ok, err := c.Delete(utCtx, kv.TextKey("k")); ok || err != nil {
			t.Fatalf("Delete = %v, %v", ok, err)
		}
		if n := utLen(t, c); n != 1 {
			t.Fatalf("Len = %d: delete of a dead row must leave it", n)
		}
	})
	t.Run("touch", func(t *testing.T) {
		c, _ := setup(t)
		if ok, err := c.Touch(utCtx, kv.TextKey("k"), kv.ExpireAfter(time.Hour)); ok || err != nil {
			t.Fatalf("Touch = %v, %v", ok, err)
		}
		if r := utMustRow(t, c, kv.TextKey("k")); r.expireTime.Float64 != t0+10 {
			t.Fatalf("expire_time = %v, touch must not change a dead row", r.expireTime)
		}
	})
	t.Run("add", func(t *testing.T) {
		c, _ := setup(t)
		rowid := utMustRow(t, c, kv.TextKey("k")).rowid
		if ok, err := c.Add(utCtx, kv.TextKey("k"), kv.Int(20), kv.SetOptions{}); !ok || err != nil {
			t.Fatalf("Add = %v, %v", ok, err)
		}
		it, _ := utGet(t, c, kv.TextKey("k"))
		if !it.Value.Equal(kv.Int(20)) || !it.Tag.IsNone() || it.ExpireTime != 0 {
			t.Fatalf("item = %+v", it)
		}
		if r := utMustRow(t, c, kv.TextKey("k")); r.rowid != rowid {
			t.Fatalf("rowid %d -> %d", rowid, r.rowid)
		}
	})
	t.Run("pop", func(t *testing.T) {
		c, _ := setup(t)
		if _, ok, err := c.Pop(utCtx, kv.TextKey("k"), GetOptions{}); ok || err != nil {
			t.Fatalf("Pop = %v, %v", ok, err)
		}
	})
	t.Run("incr", func(t *testing.T) {
		c, _ := setup(t)
		v, err := c.Incr(utCtx, kv.TextKey("k"), kv.Int(1), kv.Value{})
		if err != nil || !v.Equal(kv.Int(11)) {
			t.Fatalf("Incr = %v, %v; want 11 (live at the boundary)", v, err)
		}
		r := utMustRow(t, c, kv.TextKey("k"))
		if r.expireTime.Float64 != t0+10 || r.tag != "tg" {
			t.Fatalf("row = %+v, incr on a live key keeps expiry and tag", r)
		}
	})
	t.Run("expire-and-cull", func(t *testing.T) {
		c, _ := setup(t)
		if n, err := c.Expire(utCtx, 0); n != 0 || err != nil {
			t.Fatalf("Expire = %d, %v", n, err)
		}
		if n, err := c.Cull(utCtx); n != 0 || err != nil {
			t.Fatalf("Cull = %d, %v", n, err)
		}
		utSet(t, c, kv.TextKey("other"), kv.Int(1), kv.SetOptions{}) // cull on write
		if _, ok := utRowOf(t, c, kv.TextKey("k")); !ok {
			t.Fatal("cull on write removed a row with expire_time == now")
		}
	})
	t.Run("peekitem", func(t *testing.T) {
		c, _ := setup(t)
		it, err := c.PeekItem(utCtx, true, GetOptions{})
		if err != nil || !it.Key.Equal(kv.TextKey("k")) || !it.Value.Equal(kv.Int(10)) {
			t.Fatalf("PeekItem = %+v, %v", it, err)
		}
	})
	t.Run("after", func(t *testing.T) {
		c, clk := setup(t)
		clk.Advance(time.Millisecond)
		v, err := c.Incr(utCtx, kv.TextKey("k"), kv.Int(1), kv.Int(100))
		if err != nil || !v.Equal(kv.Int(101)) {
			t.Fatalf("Incr on expired = %v, %v; want 101", v, err)
		}
	})
}

func TestZeroAndNegativeExpire(t *testing.T) {
	// expire=0: expire_time == now, dead for get and contains, but not
	// expired for culling, so the row stays.
	c, _ := openTest(t, nil)
	utSet(t, c, kv.TextKey("k"), kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfter(0)})
	utMiss(t, c, kv.TextKey("k"))
	if ok, _ := c.Contains(utCtx, kv.TextKey("k")); ok {
		t.Fatal("expire 0: Contains = true")
	}
	if n := utLen(t, c); n != 1 {
		t.Fatalf("expire 0: Len = %d, want 1 (dead rows are counted)", n)
	}
	if r := utMustRow(t, c, kv.TextKey("k")); r.expireTime.Float64 != t0 {
		t.Fatalf("expire 0: expire_time = %v", r.expireTime)
	}
	if ok, err := c.Add(utCtx, kv.TextKey("k"), kv.Int(2), kv.SetOptions{Expire: kv.ExpireAfter(0)}); !ok || err != nil {
		t.Fatalf("expire 0: Add = %v, %v", ok, err)
	}
	if n, err := c.Expire(utCtx, 0); n != 0 || err != nil {
		t.Fatalf("expire 0: Expire = %d, %v; want 0", n, err)
	}

	// Negative expire: already expired (expire_time < now), so the cull of
	// the very write that stored it removes it, as python-diskcache does.
	c, _ = openTest(t, nil)
	utSet(t, c, kv.TextKey("k"), kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfter(-5 * time.Second)})
	utMiss(t, c, kv.TextKey("k"))
	if n := utLen(t, c); n != 0 {
		t.Fatalf("negative expire: Len = %d, want 0", n)
	}
	if got := c.Counters().Expired; got != 1 {
		t.Fatalf("Counters().Expired = %d, want 1", got)
	}
	// With culling off it stays, dead.
	c, _ = openTest(t, map[settings.Name]any{settings.NameCullLimit: 0})
	utSet(t, c, kv.TextKey("k"), kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfterSeconds(-5)})
	utMiss(t, c, kv.TextKey("k"))
	if r := utMustRow(t, c, kv.TextKey("k")); r.expireTime.Float64 != t0-5 {
		t.Fatalf("negative expire: expire_time = %v", r.expireTime)
	}
	if ok, err := c.Add(utCtx, kv.TextKey("k"), kv.Int(2), kv.SetOptions{}); !ok || err != nil {
		t.Fatalf("negative expire: Add = %v, %v", ok, err)
	}
	utWant(t, c, kv.TextKey("k"), kv.Int(2))

	// The zero Expiry never expires.
	c, clk := openTest(t, nil)
	utSet(t, c, kv.TextKey("k"), kv.Int(1), kv.SetOptions{Expire: kv.Expiry{}})
	clk.Advance(1000 * time.Hour)
	utWant(t, c, kv.TextKey("k"), kv.Int(1))
	if r := utMustRow(t, c, kv.TextKey("k")); r.expireTime.Valid {
		t.Fatalf("expire_time = %v, want NULL", r.expireTime)
	}
}

func TestAdd(t *testing.T) {
	c, clk := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 100})
	// Missing: inserted.
	if ok, err := c.Add(utCtx, kv.TextKey("k"), kv.Int(1), kv.SetOptions{Tag: kv.TextKey("a"), Expire: kv.ExpireAfter(10 * time.Second)}); !ok || err != nil {
		t.Fatalf("Add missing = %v, %v", ok, err)
	}
	// Live: unchanged, and a file written for the rejected value is removed.
	if ok, err := c.Add(utCtx, kv.TextKey("k"), kv.Bytes(utBig(200, 'x')), kv.SetOptions{Tag: kv.TextKey("b")}); ok || err != nil {
		t.Fatalf("Add live = %v, %v", ok, err)
	}
	it, _ := utGet(t, c, kv.TextKey("k"))
	if !it.Value.Equal(kv.Int(1)) || !it.Tag.Equal(kv.TextKey("a")) || it.ExpireTime != t0+10 {
		t.Fatalf("item after rejected Add = %+v", it)
	}
	if files := utValFiles(t, c); len(files) != 0 {
		t.Fatalf("rejected Add left %v", files)
	}
	rowid := utMustRow(t, c, kv.TextKey("k")).rowid
	// Expired: replaced in place.
	clk.Advance(11 * time.Second)
	if ok, err := c.Add(utCtx, kv.TextKey("k"), kv.Bytes(utBig(200, 'y')), kv.SetOptions{Tag: kv.TextKey("c")}); !ok || err != nil {
		t.Fatalf("Add expired = %v, %v", ok, err)
	}
	r := utMustRow(t, c, kv.TextKey("k"))
	if r.rowid != rowid || r.tag != "c" || r.expireTime.Valid || r.mode != modeBinary || r.storeTime != t0+11 {
		t.Fatalf("row after Add on expired = %+v", r)
	}
	if n := utLen(t, c); n != 1 {
		t.Fatalf("Len = %d", n)
	}
	// Expired file-backed item replaced by Add: the old file goes.
	clk.Advance(time.Second)
	if ok, _ := c.Touch(utCtx, kv.TextKey("k"), kv.ExpireAfter(time.Second)); !ok {
		t.Fatal("Touch failed")
	}
	clk.Advance(2 * time.Second)
	if ok, err := c.Add(utCtx, kv.TextKey("k"), kv.Int(5), kv.SetOptions{}); !ok || err != nil {
		t.Fatalf("Add over expired file = %v, %v", ok, err)
	}
	if files := utValFiles(t, c); len(files) != 0 {
		t.Fatalf("Add over expired file left %v", files)
	}
	utWant(t, c, kv.TextKey("k"), kv.Int(5))
}

func TestTouch(t *testing.T) {
	c, clk := openTest(t, nil)
	if ok, err := c.Touch(utCtx, kv.TextKey("missing"), kv.ExpireAfter(time.Second)); ok || err != nil {
		t.Fatalf("Touch missing = %v, %v", ok, err)
	}
	utSet(t, c, kv.TextKey("k"), kv.Text("v"), kv.SetOptions{Tag: kv.TextKey("t")})
	before := utMustRow(t, c, kv.TextKey("k"))
	clk.Advance(time.Second)
	if ok, err := c.Touch(utCtx, kv.TextKey("k"), kv.ExpireAfter(30*time.Second)); !ok || err != nil {
		t.Fatalf("Touch = %v, %v", ok, err)
	}
	after := utMustRow(t, c, kv.TextKey("k"))
	if after.expireTime.Float64 != t0+31 || after.storeTime != before.storeTime || after.tag != "t" {
		t.Fatalf("row after Touch = %+v (only expire_time may change)", after)
	}
	// The zero Expiry clears the expiry.
	if ok, _ := c.Touch(utCtx, kv.TextKey("k"), kv.Expiry{}); !ok {
		t.Fatal("Touch(no expiry) = false")
	}
	if r := utMustRow(t, c, kv.TextKey("k")); r.expireTime.Valid {
		t.Fatalf("expire_time = %v, want NULL", r.expireTime)
	}
	// Touch with zero duration kills it.
	if ok, _ := c.Touch(utCtx, kv.TextKey("k"), kv.ExpireAfter(0)); !ok {
		t.Fatal("Touch(0) = false")
	}
	utMiss(t, c, kv.TextKey("k"))
	if ok, _ := c.Touch(utCtx, kv.TextKey("k"), kv.ExpireAfter(time.Hour)); ok {
		t.Fatal("Touch of an expired key = true")
	}
}

func TestDelete(t *testing.T) {
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 10})
	if ok, err := c.Delete(utCtx, kv.TextKey("missing")); ok || err != nil {
		t.Fatalf("Delete missing = %v, %v", ok, err)
	}
	utSet(t, c, kv.TextKey("k"), kv.Bytes(utBig(50, 'd')), kv.SetOptions{})
	utSet(t, c, kv.TextKey("keep"), kv.Int(1), kv.SetOptions{})
	if ok, err := c.Delete(utCtx, kv.TextKey("k")); !ok || err != nil {
		t.Fatalf("Delete = %v, %v", ok, err)
	}
	if ok, _ := c.Delete(utCtx, kv.TextKey("k")); ok {
		t.Fatal("second Delete = true")
	}
	utMiss(t, c, kv.TextKey("k"))
	utWant(t, c, kv.TextKey("keep"), kv.Int(1))
	if files := utValFiles(t, c); len(files) != 0 {
		t.Fatalf("Delete left %v", files)
	}
	if n := utLen(t, c); n != 1 {
		t.Fatalf("Len = %d", n)
	}
}

func TestPop(t *testing.T) {
	c, clk := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 10})
	if _, ok, err := c.Pop(utCtx, kv.TextKey("missing"), GetOptions{}); ok || err != nil {
		t.Fatalf("Pop missing = %v, %v", ok, err)
	}
	utSet(t, c, kv.TextKey("k"), kv.Text("a value in a file"), kv.SetOptions{Tag: kv.IntKey(4), Expire: kv.ExpireAfter(time.Minute)})
	it, ok, err := c.Pop(utCtx, kv.TextKey("k"), GetOptions{})
	if err != nil || !ok || !it.Value.Equal(kv.Text("a value in a file")) || !it.Tag.Equal(kv.IntKey(4)) || it.ExpireTime != t0+60 {
		t.Fatalf("Pop = %+v, %v, %v", it, ok, err)
	}
	if n := utLen(t, c); n != 0 {
		t.Fatalf("Len = %d after Pop", n)
	}
	if files := utValFiles(t, c); len(files) != 0 {
		t.Fatalf("Pop left %v", files)
	}
	// Expired: a miss, the row stays.
	utSet(t, c, kv.TextKey("e"), kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	clk.Advance(2 * time.Second)
	if _, ok, err := c.Pop(utCtx, kv.TextKey("e"), GetOptions{}); ok || err != nil {
		t.Fatalf("Pop expired = %v, %v", ok, err)
	}
	if n := utLen(t, c); n != 1 {
		t.Fatalf("Len = %d", n)
	}
}

func TestMissingValueFileIsAMiss(t *testing.T) {
	for _, stats := range []bool{false, true} {
		c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 10, settings.NameStatistics: stats})
		utSet(t, c, kv.TextKey("k"), kv.Bytes(utBig(100, 'm')), kv.SetOptions{})
		if err := os.Remove(utFileOf(t, c, kv.TextKey("k"))); err != nil {
			t.Fatal(err)
		}
		utMiss(t, c, kv.TextKey("k"))
		if _, ok, err := c.Get(utCtx, kv.TextKey("k"), GetOptions{Stream: true}); ok || err != nil {
			t.Fatalf("stats=%v: streamed Get = %v, %v", stats, ok, err)
		}
		if stats {
			if h, m, _ := c.Stats(utCtx, true, false); h != 0 || m != 2 {
				t.Fatalf("hits, misses = %d, %d; want 0, 2", h, m)
			}
		}
		// Pop: a miss, and the row is gone.
		if _, ok, err := c.Pop(utCtx, kv.TextKey("k"), GetOptions{}); ok || err != nil {
			t.Fatalf("stats=%v: Pop = %v, %v", stats, ok, err)
		}
		if _, ok := utRowOf(t, c, kv.TextKey("k")); ok {
			t.Fatalf("stats=%v: Pop left the row of a missing file", stats)
		}
	}
}

func TestIncrDecr(t *testing.T) {
	c, clk := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 10})
	// Missing key: default + delta, no tag, no expiry.
	v, err := c.Incr(utCtx, kv.TextKey("n"), kv.Int(1), kv.Int(0))
	if err != nil || !v.Equal(kv.Int(1)) {
		t.Fatalf("Incr missing = %v, %v", v, err)
	}
	v, _ = c.Incr(utCtx, kv.TextKey("n"), kv.Int(5), kv.Int(0))
	if !v.Equal(kv.Int(6)) {
		t.Fatalf("Incr = %v, want 6", v)
	}
	v, _ = c.Decr(utCtx, kv.TextKey("n"), kv.Int(10), kv.Int(0))
	if !v.Equal(kv.Int(-4)) {
		t.Fatalf("Decr = %v, want -4", v)
	}
	utWant(t, c, kv.TextKey("n"), kv.Int(-4))
	if r := utMustRow(t, c, kv.TextKey("n")); r.mode != modeRaw || r.value != int64(-4) {
		t.Fatalf("row = %+v, want RAW integer -4", r)
	}
	v, _ = c.Decr(utCtx, kv.TextKey("d"), kv.Int(3), kv.Int(10))
	if !v.Equal(kv.Int(7)) {
		t.Fatalf("Decr missing = %v, want 7", v)
	}

	// Default None: KeyError.
	if _, err := c.Incr(utCtx, kv.TextKey("none"), kv.Int(1), kv.Value{}); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Incr without default = %v, want ErrNotFound", err)
	}
	if _, err := c.Decr(utCtx, kv.TextKey("none"), kv.Int(1), kv.Value{}); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Decr without default = %v, want ErrNotFound", err)
	}
	if _, ok := utRowOf(t, c, kv.TextKey("none")); ok {
		t.Fatal("failed Incr inserted a row")
	}

	// Float deltas and defaults.
	v, _ = c.Incr(utCtx, kv.TextKey("n"), kv.Float(0.5), kv.Int(0))
	if !v.Equal(kv.Float(-3.5)) {
		t.Fatalf("Incr float delta = %v, want -3.5", v)
	}
	utWant(t, c, kv.TextKey("n"), kv.Float(-3.5))
	v, _ = c.Incr(utCtx, kv.TextKey("f"), kv.Int(2), kv.Float(0.25))
	if !v.Equal(kv.Float(2.25)) {
		t.Fatalf("Incr float default = %v, want 2.25", v)
	}
	v, _ = c.Decr(utCtx, kv.TextKey("f"), kv.Float(0.25), kv.Int(0))
	if !v.Equal(kv.Float(2)) {
		t.Fatalf("Decr float = %v, want 2.0", v)
	}

	// Live key keeps expiry and tag, updates store_time.
	utSet(t, c, kv.TextKey("live"), kv.Int(10), kv.SetOptions{Tag: kv.TextKey("t"), Expire: kv.ExpireAfter(time.Minute)})
	clk.Advance(7 * time.Second)
	if v, _ := c.Incr(utCtx, kv.TextKey("live"), kv.Int(1), kv.Value{}); !v.Equal(kv.Int(11)) {
		t.Fatalf("Incr live = %v", v)
	}
	r := utMustRow(t, c, kv.TextKey("live"))
	if r.tag != "t" || r.expireTime.Float64 != t0+60 || r.storeTime != t0+7 {
		t.Fatalf("row after Incr on live key = %+v", r)
	}
	rowid := r.rowid

	// Expired key: starts from the default, tag and expiry cleared, rowid kept.
	clk.Advance(time.Minute)
	if _, err := c.Incr(utCtx, kv.TextKey("live"), kv.Int(1), kv.Value{}); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Incr expired without default = %v, want ErrNotFound", err)
	}
	if r := utMustRow(t, c, kv.TextKey("live")); r.value != int64(11) || r.tag != "t" {
		t.Fatalf("failed Incr changed the row: %+v", r)
	}
	if v, _ := c.Incr(utCtx, kv.TextKey("live"), kv.Int(1), kv.Int(100)); !v.Equal(kv.Int(101)) {
		t.Fatalf("Incr expired = %v, want 101", v)
	}
	r = utMustRow(t, c, kv.TextKey("live"))
	if r.tag != nil || r.expireTime.Valid || r.rowid != rowid {
		t.Fatalf("row after Incr on expired key = %+v", r)
	}

	// Expired file-backed value: replaced by the number, file removed.
	utSet(t, c, kv.TextKey("file"), kv.Bytes(utBig(100, 'x')), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)})
	clk.Advance(2 * time.Second)
	if v, err := c.Incr(utCtx, kv.TextKey("file"), kv.Int(1), kv.Int(0)); err != nil || !v.Equal(kv.Int(1)) {
		t.Fatalf("Incr over expired file = %v, %v", v, err)
	}
	if files := utValFiles(t, c); len(files) != 0 {
		t.Fatalf("files left: %v", files)
	}
	if got := utQueryInt(t, c, `SELECT value FROM Settings WHERE key = 'size'`); got != 0 {
		t.Fatalf("Settings.size = %d", got)
	}
}

func TestIncrErrors(t *testing.T) {
	c, _ := openTest(t, map[settings.Name]any{settings.NameDiskMinFileSize: 10})
	utSet(t, c, kv.TextKey("text"), kv.Text("5"), kv.SetOptions{})
	utSet(t, c, kv.TextKey("bytes"), kv.Bytes([]byte("5")), kv.SetOptions{})
	utSet(t, c, kv.TextKey("pickle"), kv.Pickle([]byte("\x80\x05K\x05.")), kv.SetOptions{})
	utSet(t, c, kv.TextKey("file"), kv.Bytes(utBig(100, '5')), kv.SetOptions{})
	utSet(t, c, kv.TextKey("textfile"), kv.Text(strings.Repeat("5", 100)), kv.SetOptions{})
	for _, k := range []string{"text", "bytes", "pickle", "file", "textfile"} {
		before := utMustRow(t, c, kv.TextKey(k))
		if _, err := c.Incr(utCtx, kv.TextKey(k), kv.Int(1), kv.Int(0)); !errors.Is(err, kv.ErrNotNumeric) {
			t.Errorf("Incr %s = %v, want ErrNotNumeric", k, err)
		}
		if after := utMustRow(t, c, kv.TextKey(k)); !reflect.DeepEqual(after, before) {
			t.Errorf("Incr %s changed the row: %+v -> %+v", k, before, after)
		}
	}
	// Bad delta and default types.
	if _, err := c.Incr(utCtx, kv.TextKey("n"), kv.Text("1"), kv.Int(0)); !errors.Is(err, kv.ErrNotNumeric) {
		t.Errorf("text delta = %v", err)
	}
	if _, err := c.Incr(utCtx, kv.TextKey("n"), kv.Int(1), kv.Bytes([]byte("0"))); !errors.Is(err, kv.ErrNotNumeric) {
		t.Errorf("bytes default = %v", err)
	}
	if _, err := c.Decr(utCtx, kv.TextKey("n"), kv.Bytes(nil), kv.Int(0)); !errors.Is(err, kv.ErrNotNumeric) {
		t.Errorf("bytes decr delta = %v", err)
	}
	// Overflow both ways leaves the value alone.
	utSet(t, c, kv.TextKey("max"), kv.Int(math.MaxInt64), kv.SetOptions{})
	if _, err := c.Incr(utCtx, kv.TextKey("max"), kv.Int(1), kv.Int(0)); !errors.Is(err, kv.ErrOverflow) {
		t.Errorf("Incr MaxInt64 = %v, want ErrOverflow", err)
	}
	utWant(t, c, kv.TextKey("max"), kv.Int(math.MaxInt64))
	utSet(t, c, kv.TextKey("min"), kv.Int(math.MinInt64), kv.SetOptions{})
	if _, err := c.Decr(utCtx, kv.TextKey("min"), kv.Int(1), kv.Int(0)); !errors.Is(err, kv.ErrOverflow) {
		t.Errorf("Decr MinInt64 = %v, want ErrOverflow", err)
	}
	if _, err := c.Decr(utCtx, kv.TextKey("x"), kv.Int(math.MinInt64), kv.Int(0)); !errors.Is(err, kv.ErrOverflow) {
		t.Errorf("Decr by MinInt64 = %v, want ErrOverflow", err)
	}
	if _, err := c.Incr(utCtx, kv.TextKey("x"), kv.Int(math.MaxInt64), kv.Int(1)); !errors.Is(err, kv.ErrOverflow) {
		t.Errorf("default + delta overflow = %v, want ErrOverflow", err)
	}
	if _, ok := utRowOf(t, c, kv.TextKey("x")); ok {
		t.Error("overflowing Incr inserted a row")
	}
	// Big but in range is fine.
	if v, err := c.Incr(utCtx, kv.TextKey("min"), kv.Int(math.MaxInt64), kv.Int(0)); err != nil || !v.Equal(kv.Int(-1)) {
		t.Errorf("MinInt64 + MaxInt64 = %v, %v", v, err)
	}
}

func TestIncrUpdatesAccessUnderPolicy(t *testing.T) {
	c, clk := openTest(t, map[settings.Name]any{settings.NameEvictionPolicy: string(settings.PolicyLeastFrequentlyUsed)})
	utSet(t, c, kv.TextKey("n"), kv.Int(1), kv.SetOptions{})
	c.Incr(utCtx, kv.TextKey("n"), kv.Int(1), kv.Int(0))
	c.Incr(utCtx, kv.TextKey("n"), kv.Int(1), kv.Int(0))
	if r := utMustRow(t, c, kv.TextKey("n")); r.accessCount != 2 {
		t.Fatalf("LFU access_count after 2 incr = %d", r.accessCount)
	}
	if err := c.Reset(utCtx, settings.NameEvictionPolicy, string(settings.PolicyLeastRecentlyUsed)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(9 * time.Second)
	c.Incr(utCtx, kv.TextKey("n"), kv.Int(1), kv.Int(0))
	if r := utMustRow(t, c, kv.TextKey("n")); r.accessTime != t0+9 {
		t.Fatalf("LRU access_time after incr = %v", r.accessTime)
	}
}

func TestContainsAndLen(t *testing.T) {
	c, clk := openTest(t, nil)
	if n := utLen(t, c); n != 0 {
		t.Fatalf("Len empty = %d", n)
	}
	for i := 0; i < 5; i++ {
		utSet(t, c, kv.IntKey(int64(i)), kv.Int(int64(i)), kv.SetOptions{Expire: kv.ExpireAfter(time.Duration(i+1) * time.Second)})
	}
	utSet(t, c, kv.IntKey(5), kv.Int(5), kv.SetOptions{})
	utSet(t, c, kv.IntKey(5), kv.Int(6), kv.SetOptions{}) // replace: not counted twice
	clk.Advance(3 * time.Second)
	want := map[int64]bool{0: false, 1: false, 2: false, 3: true, 4: true, 5: true}
	for k, live := range want {
		if ok, err := c.Contains(utCtx, kv.IntKey(k)); ok != live || err != nil {
			t.Errorf("Contains(%d) = %v, %v; want %v", k, ok, err, live)
		}
	}
	if n := utLen(t, c); n != 6 {
		t.Fatalf("Len = %d, want 6 (expired rows included)", n)
	}
	c.Delete(utCtx, kv.IntKey(5))
	if n := utLen(t, c); n != 5 {
		t.Fatalf("Len after delete = %d", n)
	}
}

func TestClosedCache(t *testing.T) {
	c, _ := openTest(t, nil)
	utSet(t, c, kv.TextKey("k"), kv.Int(1), kv.SetOptions{})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	checks := map[string]error{}
	checks["set"] = c.Set(utCtx, kv.TextKey("k"), kv.Int(1), kv.SetOptions{})
	_, _, checks["get"] = c.Get(utCtx, kv.TextKey("k"), GetOptions{})
	_, checks["add"] = c.Add(utCtx, kv.TextKey("k"), kv.Int(1), kv.SetOptions{})
	_, checks["contains"] = c.Contains(utCtx, kv.TextKey("k"))
	_, checks["delete"] = c.Delete(utCtx, kv.TextKey("k"))
	_, _, checks["pop"] = c.Pop(utCtx, kv.TextKey("k"), GetOptions{})
	_, checks["touch"] = c.Touch(utCtx, kv.TextKey("k"), kv.Expiry{})
	_, checks["incr"] = c.Incr(utCtx, kv.TextKey("k"), kv.Int(1), kv.Int(0))
	_, checks["push"] = c.Push(utCtx, kv.Int(1), QueueOptions{}, kv.SetOptions{})
	_, _, checks["pull"] = c.Pull(utCtx, QueueOptions{}, GetOptions{})
	_, checks["peekitem"] = c.PeekItem(utCtx, true, GetOptions{})
	_, checks["len"] = c.Len(utCtx)
	_, checks["volume"] = c.Volume(utCtx)
	_, checks["clear"] = c.Clear(utCtx)
	_, checks["expire"] = c.Expire(utCtx, 0)
	_, checks["cull"] = c.Cull(utCtx)
	_, checks["evict"] = c.Evict(utCtx, kv.TextKey("t"))
	_, checks["check"] = c.Check(utCtx, false)
	_, _, checks["stats"] = c.Stats(utCtx, true, false)
	checks["reset"] = c.Reset(utCtx, settings.NameCullLimit, 5)
	checks["transact"] = c.Transact(utCtx, func(*Tx) error { return nil })
	for _, k := range []bool{false, true} {
		for _, err := range c.Keys(utCtx, k) {
			checks["keys"] = err
			break
		}
		for _, err := range c.SortedKeys(utCtx, k) {
			checks["sortedkeys"] = err
			break
		}
	}
	for op, err := range checks {
		if !errors.Is(err, kv.ErrClosed) {
			t.Errorf("%s on a closed cache = %v, want ErrClosed", op, err)
		}
	}
}

func TestRowsWrittenByHand(t *testing.T) {
	c, _ := openTest(t, nil)
	ins := `INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, filename, value) VALUES (?, 1, 0, NULL, 0, 0, NULL, 0, ?, NULL, ?)`
	utExec(t, c, ins, "binary-in-db", modeBinary, []byte("bin"))
	utExec(t, c, ins, "text-in-db", modeText, "txt")
	utExec(t, c, ins, "raw-null", modeRaw, nil)
	utExec(t, c, ins, "pickle-text", modePickle, "not a blob")
	utWant(t, c, kv.TextKey("binary-in-db"), kv.Bytes([]byte("bin")))
	utWant(t, c, kv.TextKey("text-in-db"), kv.Text("txt"))
	// A raw NULL is python-diskcache's NaN, which it reads as None.
	utWant(t, c, kv.TextKey("raw-null"), kv.Pickle(pickledNone))
	if _, _, err := c.Get(utCtx, kv.TextKey("pickle-text"), GetOptions{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Get(pickle-text) = %v, want ErrCorrupt", err)
	}
	utSet(t, c, kv.TextKey("pickle-text"), kv.Int(1), kv.SetOptions{})
	utWant(t, c, kv.TextKey("pickle-text"), kv.Int(1))
}

func TestSmallAPI(t *testing.T) {
	for _, s := range []string{"front", "back"} {
		side, err := ParseSide(s)
		if err != nil || side.String() != s {
			t.Errorf("ParseSide(%q) = %v, %v", s, side, err)
		}
	}
	if _, err := ParseSide("middle"); err == nil {
		t.Error("ParseSide(middle) succeeded")
	}
	if Side(0).String() != "default" {
		t.Error("Side(0).String()")
	}
	if c, _ := openTest(t, nil); c.Timeout() != DefaultTimeout {
		t.Errorf("Timeout() = %v", c.Timeout())
	}
}

// Replace stores only over a live item (Redis's SET XX): a missing or
// expired key stays as it was, a file written for the refused value goes,
// and with hot values the refused value never reaches memory.
func TestReplace(t *testing.T) {
	for _, hot := range []int64{0, 1 << 20} {
		clk := newClock()
		c, err := Open(utCtx, t.TempDir(), Options{Settings: map[settings.Name]any{settings.NameDiskMinFileSize: 100}, Now: clk.Now, HotBytes: hot})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		k := kv.TextKey("k")
		if ok, err := c.Replace(utCtx, k, kv.Bytes(utBig(200, 'x')), kv.SetOptions{}); ok || err != nil {
			t.Fatalf("hot %d: Replace missing = %v, %v", hot, ok, err)
		}
		if _, ok, _ := c.Get(utCtx, k, GetOptions{}); ok {
			t.Fatalf("hot %d: a refused Replace stored", hot)
		}
		if files := utValFiles(t, c); len(files) != 0 {
			t.Fatalf("hot %d: refused Replace left %v", hot, files)
		}
		if err := c.Set(utCtx, k, kv.Int(1), kv.SetOptions{Expire: kv.ExpireAfter(10 * time.Second)}); err != nil {
			t.Fatal(err)
		}
		if ok, err := c.Replace(utCtx, k, kv.Int(2), kv.SetOptions{Tag: kv.TextKey("t")}); !ok || err != nil {
			t.Fatalf("hot %d: Replace live = %v, %v", hot, ok, err)
		}
		it, ok, err := c.Get(utCtx, k, GetOptions{})
		if !ok || err != nil || !it.Value.Equal(kv.Int(2)) || !it.Tag.Equal(kv.TextKey("t")) || it.ExpireTime != 0 {
			t.Fatalf("hot %d: after Replace = %+v, %v, %v", hot, it, ok, err)
		}
		if err := c.Set(utCtx, k, kv.Int(3), kv.SetOptions{Expire: kv.ExpireAfter(10 * time.Second)}); err != nil {
			t.Fatal(err)
		}
		clk.Advance(11 * time.Second)
		if ok, err := c.Replace(utCtx, k, kv.Int(4), kv.SetOptions{}); ok || err != nil {
			t.Fatalf("hot %d: Replace expired = %v, %v", hot, ok, err)
		}
		if _, ok, _ := c.Get(utCtx, k, GetOptions{}); ok {
			t.Fatalf("hot %d: a Replace of an expired item stored", hot)
		}
	}
}
