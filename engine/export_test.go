package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// exportAll copies every row of src into dst with ExportRow/Rows and
// ImportRow, value files streamed.
func utCopyRows(t *testing.T, src, dst *Cache) int {
	t.Helper()
	n := 0
	for after := int64(0); ; {
		rows, err := src.Rows(utCtx, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			var body io.Reader
			if r.Filename != "" {
				f, err := src.OpenValue(r)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				body = f
			}
			ok, err := dst.ImportRow(utCtx, r, body)
			if err != nil || !ok {
				t.Fatalf("ImportRow(%v) = %v, %v", r.Key, ok, err)
			}
			n++
		}
		if len(rows) < 3 {
			return n
		}
		after = rows[len(rows)-1].Rowid()
	}
}

// TestExportImportKeepsEveryColumn: rows moved to another cache keep their
// value (database or file), mode, expire time, tag, store and access time
// and access count; python-diskcache reads the copy.
func TestExportImportKeepsEveryColumn(t *testing.T) {
	src, clk := openTest(t, map[settings.Name]any{settings.NameEvictionPolicy: string(settings.PolicyLeastFrequentlyUsed)})
	big := bytes.Repeat([]byte("v"), 40000)
	items := []struct {
		k    kv.Key
		v    kv.Value
		opts kv.SetOptions
	}{
		{kv.TextKey("int"), kv.Int(-42), kv.SetOptions{Tag: kv.TextKey("t")}},
		{kv.IntKey(7), kv.Float(2.5), kv.SetOptions{Expire: kv.ExpireAfter(time.Hour)}},
		{kv.BytesKey([]byte{0, 1}), kv.Text("héllo"), kv.SetOptions{Tag: kv.IntKey(3)}},
		{kv.FloatKey(1.5), kv.Bytes([]byte("small")), kv.SetOptions{}},
		{kv.TextKey("file"), kv.Bytes(big), kv.SetOptions{Tag: kv.BytesKey([]byte("b"))}},
		{kv.TextKey("textfile"), kv.Text(strings.Repeat("é", 40000)), kv.SetOptions{}},
		{kv.PickleKey([]byte("\x80\x04K\x01.")), kv.Pickle([]byte("\x80\x04K\x02.")), kv.SetOptions{}},
	}
	for _, it := range items {
		if err := src.Set(utCtx, it.k, it.v, it.opts); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	for i := 0; i < 3; i++ { // LFU counts gets
		if _, ok, err := src.Get(utCtx, kv.TextKey("int"), GetOptions{}); err != nil || !ok {
			t.Fatal(ok, err)
		}
	}
	dst, _ := openTest(t, nil)
	if n := utCopyRows(t, src, dst); n != len(items) {
		t.Fatalf("copied %d rows, want %d", n, len(items))
	}
	for _, it := range items {
		a, _, err := src.ExportRow(utCtx, it.k)
		if err != nil {
			t.Fatal(err)
		}
		b, ok, err := dst.ExportRow(utCtx, it.k)
		if err != nil || !ok {
			t.Fatalf("%v not imported: %v", it.k, err)
		}
		if (a.Filename == "") != (b.Filename == "") {
			t.Errorf("%v: file %q vs %q", it.k, a.Filename, b.Filename)
		}
		a.Filename, b.Filename, a.rowid, b.rowid = "", "", 0, 0
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%v: exported %+v, imported %+v", it.k, a, b)
		}
		got, ok, err := dst.Get(utCtx, it.k, GetOptions{})
		if err != nil || !ok || !got.Value.Equal(it.v) {
			t.Errorf("Get(%v) after import = %v, %v, %v", it.k, got.Value, ok, err)
		}
	}
	if a, _, _ := dst.ExportRow(utCtx, kv.TextKey("int")); a.AccessCount != 3 {
		t.Errorf("access count %d, want 3", a.AccessCount)
	}

	// Import never replaces a row that is there, live or not.
	r, _, _ := src.ExportRow(utCtx, kv.TextKey("int"))
	if err := dst.Set(utCtx, kv.TextKey("int"), kv.Int(1), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := dst.ImportRow(utCtx, r, nil); ok || err != nil {
		t.Fatalf("ImportRow over a row = %v, %v", ok, err)
	}
	if got, _, _ := dst.Get(utCtx, kv.TextKey("int"), GetOptions{}); !got.Value.Equal(kv.Int(1)) {
		t.Fatalf("import replaced a newer value: %v", got.Value)
	}

	// DeleteRow removes the row as read, not one written since.
	if err := src.Set(utCtx, kv.TextKey("int"), kv.Int(9), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if ok, err := src.DeleteRow(utCtx, r); ok || err != nil {
		t.Fatalf("DeleteRow of a rewritten row = %v, %v", ok, err)
	}
	f, _, _ := src.ExportRow(utCtx, kv.TextKey("file"))
	if ok, err := src.DeleteRow(utCtx, f); !ok || err != nil {
		t.Fatalf("DeleteRow = %v, %v", ok, err)
	}
	if _, err := src.OpenValue(f); err == nil {
		t.Fatal("the value file of a deleted row is still there")
	}

	// python-diskcache reads what was imported (the fake clock is in the
	// past, so only items without expiry are asked for).
	if _, err := exec.LookPath("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	dst.Close()
	script := `
import diskcache, json, sys
c = diskcache.Cache(sys.argv[1])
out = {}
for k in ["file", "textfile"]:
    v, tag = c.get(k, tag=True)
    out[k] = [len(v), tag.decode() if isinstance(tag, bytes) else tag]
out["int"] = c.get("int")
print(json.dumps(out))
`
	cmd := exec.CommandContext(context.Background(), "/usr/bin/python3", "-c", script, dst.Directory())
	b, err := cmd.CombinedOutput()
	if err != nil {
		if strings.Contains(string(b), "No module named") {
			t.Skipf("python-diskcache: %s", b)
		}
		t.Fatalf("python-diskcache: %v %s", err, b)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("python: %s", b)
	}
	want := map[string]any{"file": []any{40000.0, "b"}, "textfile": []any{40000.0, nil}, "int": 1.0}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("python-diskcache read %v, want %v", got, want)
	}
}
