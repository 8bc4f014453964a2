package engine

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// Compatibility of FanoutCache, Deque and Index with python-diskcache, its
// oracle. The helper scripts are testdata/fanout_*.py; JSON manifests carry
// keys and values as {"t": type, "v": data} (see testdata/fanout_codec.py).

const foPython = "/usr/bin/python3"

// foRequirePython skips the test when python-diskcache is not installed,
// or fails it when DISKCACHE_REQUIRE_PYTHON is set.
func foRequirePython(t *testing.T) {
	t.Helper()
	out, err := exec.Command(foPython, "-c", "import diskcache").CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("%s with diskcache is not available: %v %s", foPython, err, out)
	if os.Getenv("DISKCACHE_REQUIRE_PYTHON") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// foRun runs a helper script and returns its standard output.
func foRun(t *testing.T, script string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(foPython, append([]string{filepath.Join("testdata", script)}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", script, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

// foEnc is an encoded key or value.
type foEnc struct {
	T string `json:"t"`
	V string `json:"v"`
}

func (e *foEnc) key() (kv.Key, error) {
	if e == nil {
		return kv.Key{}, nil
	}
	switch e.T {
	case "int":
		n, err := strconv.ParseInt(e.V, 10, 64)
		return kv.IntKey(n), err
	case "float":
		f, err := strconv.ParseFloat(e.V, 64)
		return kv.FloatKey(f), err
	case "text":
		return kv.TextKey(e.V), nil
	case "bytes":
		b, err := hex.DecodeString(e.V)
		return kv.BytesKey(b), err
	case "pickle":
		b, err := hex.DecodeString(e.V)
		return kv.PickleKey(b), err
	}
	return kv.Key{}, fmt.Errorf("unknown key type %q", e.T)
}

func (e *foEnc) value() (kv.Value, error) {
	switch e.T {
	case "int":
		n, err := strconv.ParseInt(e.V, 10, 64)
		return kv.Int(n), err
	case "float":
		f, err := strconv.ParseFloat(e.V, 64)
		return kv.Float(f), err
	case "text":
		return kv.Text(e.V), nil
	case "bytes":
		b, err := hex.DecodeString(e.V)
		return kv.Bytes(b), err
	case "pickle":
		b, err := hex.DecodeString(e.V)
		return kv.Pickle(b), err
	}
	return kv.Value{}, fmt.Errorf("unknown value type %q", e.T)
}

func foEncKey(k kv.Key) *foEnc {
	switch k.Kind() {
	case kv.KeyNone:
		return nil
	case kv.KeyInt:
		return &foEnc{"int", strconv.FormatInt(k.Int(), 10)}
	case kv.KeyFloat:
		return &foEnc{"float", strconv.FormatFloat(k.Float(), 'g', -1, 64)}
	case kv.KeyText:
		return &foEnc{"text", k.Text()}
	case kv.KeyBytes:
		return &foEnc{"bytes", hex.EncodeToString(k.Bytes())}
	default:
		return &foEnc{"pickle", hex.EncodeToString(k.Bytes())}
	}
}

func foEncValue(v kv.Value) *foEnc {
	switch v.Type {
	case kv.ValueInt:
		return &foEnc{"int", strconv.FormatInt(v.Int, 10)}
	case kv.ValueFloat:
		return &foEnc{"float", strconv.FormatFloat(v.Float, 'g', -1, 64)}
	case kv.ValueText:
		return &foEnc{"text", string(v.Data)}
	case kv.ValueBytes:
		return &foEnc{"bytes", hex.EncodeToString(v.Data)}
	default:
		return &foEnc{"pickle", hex.EncodeToString(v.Data)}
	}
}

type foItem struct {
	Key        *foEnc   `json:"key"`
	Shard      int      `json:"shard"`
	Value      *foEnc   `json:"value"`
	ExpireTime *float64 `json:"expire_time"`
	Tag        *foEnc   `json:"tag"`
}

type foManifest struct {
	Shards  int         `json:"shards"`
	Items   []foItem    `json:"items"`
	CacheAB [][2]*foEnc `json:"cache_ab"`
	DequeD  []*foEnc    `json:"deque_d"`
	IndexI  [][2]*foEnc `json:"index_i"`
}

func foKey(t *testing.T, e *foEnc) kv.Key {
	t.Helper()
	k, err := e.key()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func foValue(t *testing.T, e *foEnc) kv.Value {
	t.Helper()
	v, err := e.value()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// foOK returns v, failing the test on err.
func foOK[T any](t *testing.T) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func TestFanoutCompatPythonWritesGoReads(t *testing.T) {
	foRequirePython(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "fc")
	var m foManifest
	if err := json.Unmarshal(foRun(t, "fanout_write.py", dir), &m); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFanout(ctx, dir, FanoutOptions{Fanout: m.Shards, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	kinds := map[kv.KeyKind]bool{}
	for _, item := range m.Items {
		key := foKey(t, item.Key)
		want := foValue(t, item.Value)
		kinds[key.Kind()] = true
		if got := f.DatabaseIndex(key); got != item.Shard {
			t.Errorf("key %s: Go database %d, python-diskcache shard %d", key, got, item.Shard)
			continue
		}
		it, ok, err := f.Database(item.Shard).Get(ctx, key, GetOptions{})
		if err != nil || !ok {
			t.Errorf("key %s: not in database %d: %v %v", key, item.Shard, ok, err)
			continue
		}
		if !it.Value.Equal(want) {
			t.Errorf("key %s: value %.80s, want %.80s", key, it.Value, want)
		}
		wantExp := 0.0
		if item.ExpireTime != nil {
			wantExp = *item.ExpireTime
		}
		if it.ExpireTime != wantExp {
			t.Errorf("key %s: expire time %v, want %v", key, it.ExpireTime, wantExp)
		}
		if wantTag := foKey(t, item.Tag); !it.Tag.Equal(wantTag) {
			t.Errorf("key %s: tag %s, want %s", key, it.Tag, wantTag)
		}
		if _, ok, err := f.Get(ctx, key, GetOptions{}); !ok || err != nil {
			t.Errorf("key %s: FanoutCache.Get = %v %v", key, ok, err)
		}
	}
	for _, k := range []kv.KeyKind{kv.KeyText, kv.KeyBytes, kv.KeyInt, kv.KeyFloat, kv.KeyPickle} {
		if !kinds[k] {
			t.Errorf("the manifest has no %s key", k)
		}
	}
	if n, err := f.Len(ctx); err != nil || n != int64(len(m.Items)) {
		t.Errorf("Len = %d %v, want %d", n, err, len(m.Items))
	}
	if warns, err := f.Check(ctx, false); err != nil || len(warns) != 0 {
		t.Errorf("Check = %v %v", warns, err)
	}

	sub := foOK[*Cache](t)(f.Cache(ctx, "a/b"))
	for _, pair := range m.CacheAB {
		key, want := foKey(t, pair[0]), foValue(t, pair[1])
		it, ok, err := sub.Get(ctx, key, GetOptions{})
		if err != nil || !ok || !it.Value.Equal(want) {
			t.Errorf("cache a/b key %s = %.80s %v %v, want %.80s", key, it.Value, ok, err, want)
		}
	}

	d := foOK[*Deque](t)(f.Deque(ctx, "d", 0))
	var wantD []kv.Value
	for _, e := range m.DequeD {
		wantD = append(wantD, foValue(t, e))
	}
	if got := foOK[[]kv.Value](t)(d.Slice(ctx)); !slices.EqualFunc(got, wantD, kv.Value.Equal) {
		t.Errorf("deque d = %.300v, want %.300v", got, wantD)
	}

	x := foOK[*Index](t)(f.Index(ctx, "i"))
	var gotI, wantI []string
	for it, err := range x.Items(ctx, false) {
		if err != nil {
			t.Fatal(err)
		}
		gotI = append(gotI, it.Key.String()+"="+it.Value.String())
	}
	for _, pair := range m.IndexI {
		wantI = append(wantI, foKey(t, pair[0]).String()+"="+foValue(t, pair[1]).String())
	}
	if !slices.Equal(gotI, wantI) {
		t.Errorf("index i = %v, want %v", gotI, wantI)
	}

	// The deque and index keep working on python's layout.
	if err := d.AppendLeft(ctx, kv.Text("go")); err != nil {
		t.Fatal(err)
	}
	if v, err := d.PeekLeft(ctx); err != nil || !v.Equal(kv.Text("go")) {
		t.Fatalf("PeekLeft = %v %v", v, err)
	}
	if k, _, err := x.PopItem(ctx, true); err != nil || !k.Equal(foKey(t, m.IndexI[len(m.IndexI)-1][0])) {
		t.Fatalf("PopItem = %v %v", k, err)
	}
}

func TestFanoutCompatGoWritesPythonReads(t *testing.T) {
	foRequirePython(t)
	ctx := context.Background()
	var pickles struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	}
	if err := json.Unmarshal(foRun(t, "fanout_pickles.py"), &pickles); err != nil {
		t.Fatal(err)
	}
	pickleKey := kv.PickleKey(foOK[[]byte](t)(hex.DecodeString(pickles.Key)))
	pickleValue := kv.Pickle(foOK[[]byte](t)(hex.DecodeString(pickles.Value)))

	dir := filepath.Join(t.TempDir(), "fc")
	f, err := OpenFanout(ctx, dir, FanoutOptions{Fanout: 4, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := foManifest{Shards: 4}
	type entry struct {
		key   kv.Key
		value kv.Value
		opts  kv.SetOptions
	}
	entries := []entry{
		{kv.TextKey("text-key"), kv.Text("small text"), kv.SetOptions{}},
		{kv.TextKey("ключ"), kv.Text("значение"), kv.SetOptions{}},
		{kv.BytesKey([]byte("bytes-key")), kv.Bytes([]byte{0, 1, 0xff}), kv.SetOptions{}},
		{kv.IntKey(12345), kv.Float(3.25), kv.SetOptions{}},
		{kv.IntKey(-7), kv.Int(-7), kv.SetOptions{}},
		{kv.IntKey(1<<63 - 1), kv.Int(1 << 62), kv.SetOptions{}},
		{kv.FloatKey(1.5), kv.Text("float key"), kv.SetOptions{}},
		{kv.FloatKey(-0.25), kv.Bytes([]byte{}), kv.SetOptions{}},
		{pickleKey, pickleValue, kv.SetOptions{}},
		{kv.TextKey("big-text"), kv.Text(strings.Repeat("ü-large text-", 4000)), kv.SetOptions{}},
		{kv.TextKey("big-bytes"), kv.Bytes(bytes.Repeat([]byte{0, 1, 2, 0xfe}, 20000)), kv.SetOptions{}},
		{kv.TextKey("expiring"), kv.Text("tagged"), kv.SetOptions{Expire: kv.ExpireAfter(time.Hour), Tag: kv.TextKey("tag-1")}},
		{kv.TextKey("int-tag"), kv.Int(1), kv.SetOptions{Tag: kv.IntKey(42)}},
	}
	for i := range 60 {
		entries = append(entries, entry{kv.TextKey(fmt.Sprintf("k%03d", i)), kv.Int(int64(i)), kv.SetOptions{}})
	}
	for _, e := range entries {
		if err := f.Set(ctx, e.key, e.value, e.opts); err != nil {
			t.Fatal(err)
		}
		it, ok, err := f.Get(ctx, e.key, GetOptions{})
		if err != nil || !ok {
			t.Fatalf("Get(%s) = %v %v", e.key, ok, err)
		}
		item := foItem{Key: foEncKey(e.key), Shard: f.DatabaseIndex(e.key), Value: foEncValue(e.value), Tag: foEncKey(e.opts.Tag)}
		if it.ExpireTime != 0 {
			item.ExpireTime = &it.ExpireTime
		}
		m.Items = append(m.Items, item)
	}

	sub := foOK[*Cache](t)(f.Cache(ctx, "a/b"))
	for _, pair := range []struct {
		k kv.Key
		v kv.Value
	}{{kv.TextKey("x"), kv.Int(1)}, {kv.BytesKey([]byte("y")), kv.Bytes(bytes.Repeat([]byte("z"), 50000))}, {kv.IntKey(7), kv.Text("seven")}} {
		if err := sub.Set(ctx, pair.k, pair.v, kv.SetOptions{}); err != nil {
			t.Fatal(err)
		}
		m.CacheAB = append(m.CacheAB, [2]*foEnc{foEncKey(pair.k), foEncValue(pair.v)})
	}

	d := foOK[*Deque](t)(f.Deque(ctx, "d", 0))
	steps := []error{
		d.Extend(ctx, []kv.Value{kv.Text("a"), kv.Int(1), kv.Float(2.5), kv.Bytes([]byte("b")), kv.Text(strings.Repeat("c", 40000)), pickleValue, kv.Int(7)}),
		d.AppendLeft(ctx, kv.Text("first")),
		d.Rotate(ctx, 2),
		d.Rotate(ctx, -5),
		d.Reverse(ctx),
		d.Remove(ctx, kv.Float(1)),
		d.SetAt(ctx, 1, kv.Text("second")),
		d.DeleteAt(ctx, -2),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("deque step %d: %v", i, err)
		}
	}
	if _, err := d.Pop(ctx); err != nil {
		t.Fatal(err)
	}
	for _, v := range foOK[[]kv.Value](t)(d.Slice(ctx)) {
		m.DequeD = append(m.DequeD, foEncValue(v))
	}

	x := foOK[*Index](t)(f.Index(ctx, "i"))
	for _, err := range []error{
		x.Set(ctx, kv.TextKey("k1"), kv.Int(1)),
		x.Set(ctx, kv.TextKey("k2"), kv.Text("two")),
		x.Set(ctx, kv.IntKey(3), kv.Bytes([]byte("three"))),
		x.Set(ctx, kv.TextKey("k1"), kv.Int(11)),
		x.Set(ctx, pickleKey, pickleValue),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := x.Delete(ctx, kv.TextKey("k2")); err != nil {
		t.Fatal(err)
	}
	if err := x.Set(ctx, kv.TextKey("k2"), kv.Int(2)); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Push(ctx, kv.Text("queued"), "", Back); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Push(ctx, kv.Text("fruit"), "fruit", Front); err != nil {
		t.Fatal(err)
	}
	for it, err := range x.Items(ctx, false) {
		if err != nil {
			t.Fatal(err)
		}
		m.IndexI = append(m.IndexI, [2]*foEnc{foEncKey(it.Key), foEncValue(it.Value)})
	}
	if len(m.IndexI) != 6 { // k1, 3, the pickle key, k2, two queue items
		t.Fatalf("index has %d items", len(m.IndexI))
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	manifest := filepath.Join(t.TempDir(), "manifest.json")
	if err := os.WriteFile(manifest, foOK[[]byte](t)(json.Marshal(m)), 0o644); err != nil {
		t.Fatal(err)
	}
	foRun(t, "fanout_read.py", dir, manifest)
}

// python-diskcache stores float('nan') as a raw NULL (SQLite's NaN) and
// reads it back as None: the engine answers the same None, as a pickle,
// rather than calling the row corrupt.
func TestPythonNaNReadsAsNone(t *testing.T) {
	foRequirePython(t)
	dir := t.TempDir()
	script := `import sys, diskcache
c = diskcache.Cache(sys.argv[1])
c['nan'] = float('nan')
assert c['nan'] is None
c.close()`
	if out, err := exec.Command(foPython, "-c", script, dir).CombinedOutput(); err != nil {
		t.Fatalf("python-diskcache: %v\n%s", err, out)
	}
	ctx := context.Background()
	c, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	it, ok, err := c.Get(ctx, kv.TextKey("nan"), GetOptions{})
	if err != nil || !ok || it.Value.Type != kv.ValuePickle {
		t.Fatalf("Get(nan) = %+v %v %v, want a pickle", it.Value, ok, err)
	}
	check := `import pickle, sys
assert pickle.loads(bytes.fromhex(sys.argv[1])) is None`
	if out, err := exec.Command(foPython, "-c", check, hex.EncodeToString(it.Value.Data)).CombinedOutput(); err != nil {
		t.Fatalf("the value %x is not a pickled None: %v\n%s", it.Value.Data, err, out)
	}
}
