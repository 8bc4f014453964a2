package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os/exec"
	"reflect"
	"slices"
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

// utStage stages the rows of src (value files streamed) for dst.
func utStage(t *testing.T, src, dst *Cache, rows []Row) []StagedRow {
	t.Helper()
	var out []StagedRow
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
		sr, err := dst.StageRow(r, body)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sr)
	}
	return out
}

// TestImportRowsOneTransaction: a batch import inserts each row only if its
// key has no row (live, expired, or earlier in the same batch); a failure
// in the middle of the batch commits none of it and leaves no value file,
// and the batch can be sent again; DeleteRows removes only the rows that
// are still the items read, in one transaction.
func TestImportRowsOneTransaction(t *testing.T) {
	src, clk := openTest(t, nil)
	big := bytes.Repeat([]byte("f"), 40000)
	for i, k := range []string{"a", "b", "file", "expired", "dup"} {
		v := kv.Bytes([]byte(k))
		if k == "file" {
			v = kv.Bytes(big)
		}
		opts := kv.SetOptions{}
		if k == "expired" {
			opts.Expire = kv.ExpireAfter(time.Second)
		}
		if err := src.Set(utCtx, kv.TextKey(k), v, opts); err != nil {
			t.Fatal(i, err)
		}
		clk.Advance(time.Millisecond)
	}
	rows, err := src.Rows(utCtx, 0, 100)
	if err != nil || len(rows) != 5 {
		t.Fatalf("Rows = %d, %v", len(rows), err)
	}
	dst, dclk := openTest(t, nil)
	dclk.Advance(time.Hour)

	// A failure mid-batch: the third row cannot be stored (a value type
	// SQLite does not bind), after two rows (one with a file) were inserted
	// inside the transaction.
	bad := rows[0]
	bad.Key, bad.Value = kv.TextKey("bad"), struct{}{}
	batch := utStage(t, src, dst, []Row{rows[0], rows[2], bad, rows[1]})
	if len(utValFiles(t, dst)) != 1 {
		t.Fatalf("staging wrote %v, want the one value file", utValFiles(t, dst))
	}
	done, err := dst.ImportRows(utCtx, batch)
	if err == nil {
		t.Fatal("ImportRows with a row SQLite cannot store succeeded")
	}
	if slices.Contains(done, true) {
		t.Fatalf("failed ImportRows reports rows done: %v", done)
	}
	if n, _ := dst.Len(utCtx); n != 0 {
		t.Fatalf("a failed batch left %d rows", n)
	}
	if f := utValFiles(t, dst); len(f) != 0 {
		t.Fatalf("a failed batch left value files %v", f)
	}

	// Present keys are skipped: a live row, an expired one, and the second
	// copy of a key within the batch; the batch again after a partial
	// import skips what is there.
	if err := dst.Set(utCtx, kv.TextKey("a"), kv.Bytes([]byte("newer")), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := dst.Set(utCtx, kv.TextKey("expired"), kv.Bytes([]byte("dead")), kv.SetOptions{Expire: kv.ExpireAfter(time.Second)}); err != nil {
		t.Fatal(err)
	}
	dclk.Advance(time.Minute)
	dup := rows[4]
	dup.Value = []byte("second copy")
	done, err = dst.ImportRows(utCtx, utStage(t, src, dst, []Row{rows[0], rows[1], rows[2], rows[3], rows[4], dup}))
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{false, true, true, false, true, false}; !slices.Equal(done, want) {
		t.Fatalf("ImportRows done = %v, want %v", done, want)
	}
	for k, want := range map[string]string{"a": "newer", "b": "b", "dup": "dup"} {
		it, ok, err := dst.Get(utCtx, kv.TextKey(k), GetOptions{})
		if err != nil || !ok || string(it.Value.Data) != want {
			t.Errorf("Get(%s) = %q, %v, %v; want %q", k, it.Value.Data, ok, err, want)
		}
	}
	if it, ok, _ := dst.Get(utCtx, kv.TextKey("file"), GetOptions{}); !ok || !bytes.Equal(it.Value.Data, big) {
		t.Errorf("file value not imported whole (%d bytes)", len(it.Value.Data))
	}
	if f := utValFiles(t, dst); len(f) != 1 {
		t.Fatalf("value files %v, want the imported one only", f)
	}
	if _, ok, _ := dst.ExportRow(utCtx, kv.TextKey("expired")); ok {
		t.Fatal("the batch did not cull: the expired row is still there")
	}
	// (Not "expired": the cull after that batch removed the expired row
	// there, as after any write.)
	again := []Row{rows[0], rows[1], rows[2], rows[4]}
	done, err = dst.ImportRows(utCtx, utStage(t, src, dst, again))
	if err != nil || slices.Contains(done, true) {
		t.Fatalf("ImportRows again = %v, %v; want nothing imported", done, err)
	}
	if f := utValFiles(t, dst); len(f) != 1 {
		t.Fatalf("value files %v after a repeated batch, want the imported one only", f)
	}
	dst.DiscardStaged(utStage(t, src, dst, again)...)
	if f := utValFiles(t, dst); len(f) != 1 {
		t.Fatalf("value files %v after DiscardStaged, want the imported one only", f)
	}

	// DeleteRows: "a" rewritten and "dup" deleted and set again since they
	// were read stay, "expired" is gone already (culled by those writes);
	// the others go, the file after the commit.
	clk.Advance(time.Second)
	if err := src.Set(utCtx, kv.TextKey("a"), kv.Bytes([]byte("a2")), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Delete(utCtx, kv.TextKey("dup")); err != nil {
		t.Fatal(err)
	}
	if err := src.Set(utCtx, kv.TextKey("dup"), kv.Bytes([]byte("dup2")), kv.SetOptions{}); err != nil {
		t.Fatal(err)
	}
	done, err = src.DeleteRows(utCtx, rows)
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{false, true, true, false, false}; !slices.Equal(done, want) {
		t.Fatalf("DeleteRows done = %v, want %v", done, want)
	}
	left, _ := src.Rows(utCtx, 0, 100)
	var keys []string
	for _, r := range left {
		keys = append(keys, r.Key.Text())
	}
	if !slices.Equal(keys, []string{"a", "dup"}) && !slices.Equal(keys, []string{"dup", "a"}) {
		t.Fatalf("rows left %v, want a and dup", keys)
	}
	if f := utValFiles(t, src); len(f) != 0 {
		t.Fatalf("value files left %v", f)
	}
	if done, err := src.DeleteRows(utCtx, rows); err != nil || slices.Contains(done, true) {
		t.Fatalf("DeleteRows again = %v, %v", done, err)
	}
}
