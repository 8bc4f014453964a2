package wire_test

import (
	"bytes"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
)

// readAll reads a whole record stream: the records, their values, and the
// error that ended it (io.EOF for a clean end at a record boundary).
func readAll(t *testing.T, stream []byte) ([]wire.Record, [][]byte, error) {
	t.Helper()
	rr := wire.NewRecordReader(bytes.NewReader(stream))
	var recs []wire.Record
	var vals [][]byte
	for {
		rec, body, err := rr.Next()
		if err != nil {
			return recs, vals, err
		}
		v, err := io.ReadAll(body)
		if err != nil {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("a short value reads as %v, want io.ErrUnexpectedEOF", err)
			}
			return recs, vals, err
		}
		if int64(len(v)) != rec.Len {
			t.Fatalf("record %q: read %d value bytes, len says %d", rec.Key, len(v), rec.Len)
		}
		recs = append(recs, rec)
		vals = append(vals, v)
		// Every record takes at least its header's newline: a reader that
		// returns more records than the stream has bytes is not advancing.
		if len(recs) > len(stream) {
			t.Fatalf("%d records from %d bytes", len(recs), len(stream))
		}
	}
}

// writeAll writes records with their values.
func writeAll(t *testing.T, recs []wire.Record, vals [][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	rw := wire.NewRecordWriter(&buf)
	for i, rec := range recs {
		if err := rw.Write(rec, vals[i]); err != nil {
			t.Fatalf("Write(%+v): %v", rec, err)
		}
	}
	return buf.Bytes()
}

// FuzzRecordReader feeds arbitrary bytes to the reader: it never panics,
// never loops, reports a value cut short as io.ErrUnexpectedEOF, and what
// it reads to a clean end re-encodes to a stream that reads back the same
// (and is the writer's fixed point).
func FuzzRecordReader(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("{\"key\":\"a\",\"type\":\"text\",\"len\":5}\nhello{\"key\":\"b\",\"found\":false,\"len\":0}\n"))
	f.Add([]byte("{\"key\":\"AAH/\",\"kt\":\"bytes\",\"type\":\"bytes\",\"len\":3,\"expire\":60,\"tag\":\"t\",\"tt\":\"text\"}\n\x00\x01\xff"))
	f.Add([]byte("{\"key\":\"7\",\"kt\":\"int\",\"type\":\"int\",\"len\":2,\"expire_time\":1767225600.25,\"index\":-1}\n42"))
	f.Add([]byte("{\"key\":\"a\",\"len\":5}\nab"))
	f.Add([]byte("{\"key\":\"a\",\"len\":-1}\n"))
	f.Add([]byte("{\"key\":\"a\",\"len\":1,\"bogus\":1}\nx"))
	f.Add([]byte("{\"key\":\"a\",\"len\":0}"))
	f.Add([]byte("\n"))
	f.Add([]byte("[1,2]\n"))
	f.Add([]byte("{\"key\":\"\\u00e9\\ud800\",\"len\":0}\n"))
	f.Add([]byte("{\"len\":9223372036854775807}\n"))
	f.Add([]byte(strings.Repeat("{\"key\":\"k\",\"len\":1}\nv", 50)))
	f.Fuzz(func(t *testing.T, stream []byte) {
		recs, vals, err := readAll(t, stream)
		if !errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return // rejected: fine, as long as nothing above panicked or looped
		}
		for _, r := range recs {
			if r.Len < 0 {
				t.Fatalf("accepted a negative len: %+v", r)
			}
		}
		again := writeAll(t, recs, vals)
		for i := range recs {
			recs[i].Keyed = true // the writer always writes "key"
		}
		recs2, vals2, err := readAll(t, again)
		if !errors.Is(err, io.EOF) {
			t.Fatalf("re-encoded stream does not read back: %v\n%q", err, again)
		}
		if !reflect.DeepEqual(recs, recs2) || !reflect.DeepEqual(vals, vals2) {
			t.Fatalf("re-encoded stream reads back differently:\n%+v\n%+v", recs, recs2)
		}
		if third := writeAll(t, recs2, vals2); !bytes.Equal(third, again) {
			t.Fatalf("writer is not a fixed point:\n%q\n%q", again, third)
		}
	})
}

// FuzzRecordRoundTrip writes records built from arbitrary fields and
// checks that they read back exactly, and that every truncation of the
// stream either ends cleanly at a record boundary with exactly the records
// before it, or is rejected with the records before the cut intact.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add("a", "", "text", []byte("hello"), uint8(1), 60.0, "t", "")
	f.Add("AAH/", "bytes", "bytes", []byte{0, 1, 0xff, '\n'}, uint8(3), -1.5, "", "none")
	f.Add("", "", "", []byte(nil), uint8(0), 0.0, "\n", "bytes")
	f.Add("line\nbreak \"quoted\" \u2028", "text", "pickle", []byte("{\"key\":\"x\",\"len\":0}\n"), uint8(7), math.MaxFloat64, "ünï", "int")
	f.Add("\xff\xfe", "pickle", "int", []byte("42"), uint8(2), math.Inf(1), "x", "float")
	f.Fuzz(func(t *testing.T, key, kind, typ string, value []byte, n uint8, expire float64, tag, tagKind string) {
		var recs []wire.Record
		var vals [][]byte
		for i := 0; i <= int(n%5); i++ {
			idx := int64(i) - 1
			rec := wire.Record{Key: key, Kind: kind, Type: typ, Index: &idx}
			if i%2 == 1 {
				exp := expire
				rec.Expire, rec.ExpireTime = &exp, &exp
				tg := tag
				rec.Tag, rec.TagKind = &tg, tagKind
			}
			if i == 3 {
				found := false
				rec.Found = &found
			}
			recs = append(recs, rec)
			vals = append(vals, value[:len(value)*i/5])
		}
		var buf bytes.Buffer
		rw := wire.NewRecordWriter(&buf)
		var boundaries []int
		for i, rec := range recs {
			if err := rw.Write(rec, vals[i]); err != nil {
				if math.IsNaN(expire) || math.IsInf(expire, 0) {
					return // JSON has no NaN or infinity: the writer refuses
				}
				t.Fatalf("Write: %v", err)
			}
			boundaries = append(boundaries, buf.Len())
		}
		stream := buf.Bytes()

		got, gotVals, err := readAll(t, stream)
		if !errors.Is(err, io.EOF) {
			t.Fatalf("reading what the writer wrote: %v\n%q", err, stream)
		}
		if len(got) != len(recs) {
			t.Fatalf("read %d records, wrote %d", len(got), len(recs))
		}
		for i := range recs {
			want := recs[i]
			want.Len = int64(len(vals[i]))
			want.Keyed = true // the writer always writes "key"
			if !utf8.ValidString(key) {
				// JSON strings are UTF-8: invalid bytes come back as U+FFFD.
				// (That is why bytes and pickle keys travel in base64.)
				if !utf8.ValidString(got[i].Key) {
					t.Fatalf("read key %q is not UTF-8", got[i].Key)
				}
				want.Key = got[i].Key
			}
			if !utf8.ValidString(tag) && want.Tag != nil && got[i].Tag != nil {
				want.Tag = got[i].Tag
			}
			if !utf8.ValidString(kind) || !utf8.ValidString(typ) || !utf8.ValidString(tagKind) {
				want.Kind, want.Type, want.TagKind = got[i].Kind, got[i].Type, got[i].TagKind
			}
			if !reflect.DeepEqual(got[i], want) {
				t.Fatalf("record %d: read %+v, wrote %+v", i, got[i], want)
			}
			if !bytes.Equal(gotVals[i], vals[i]) {
				t.Fatalf("record %d: value %q, wrote %q", i, gotVals[i], vals[i])
			}
		}

		// Truncations: at every boundary a clean end; just before and after
		// each boundary, and at a spread of other points, an error.
		cuts := map[int]bool{0: true}
		for _, b := range boundaries {
			for _, c := range []int{b - 1, b, b + 1} {
				if c >= 0 && c < len(stream) {
					cuts[c] = true
				}
			}
		}
		for c := 0; c < len(stream); c += 1 + len(stream)/32 {
			cuts[c] = true
		}
		for c := range cuts {
			whole := 0 // records wholly before the cut
			for whole < len(boundaries) && boundaries[whole] <= c {
				whole++
			}
			atBoundary := c == 0 || (whole > 0 && boundaries[whole-1] == c)
			part, _, err := readAll(t, stream[:c])
			if len(part) > whole || len(part) < whole-1 {
				t.Fatalf("cut at %d of %d: read %d records, %d lie before the cut", c, len(stream), len(part), whole)
			}
			switch {
			case atBoundary && (!errors.Is(err, io.EOF) || len(part) != whole):
				t.Fatalf("cut at record boundary %d: %d records, %v; want %d and a clean end", c, len(part), err, whole)
			case !atBoundary && errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
				t.Fatalf("cut inside a record at %d of %d read as a clean end (%d records)\n%q", c, len(stream), len(part), stream[:c])
			}
		}
	})
}

// TestRecordReaderRejects lists malformed streams the reader must reject.
func TestRecordReaderRejects(t *testing.T) {
	long := "{\"key\":\"" + strings.Repeat("k", wire.MaxRecordHeader) + "\",\"len\":0}\n"
	for name, stream := range map[string]string{
		"negative len":            "{\"key\":\"a\",\"len\":-1}\n",
		"unknown field":           "{\"key\":\"a\",\"len\":0,\"extra\":1}\n",
		"not JSON":                "key=a len=0\n",
		"not an object":           "[\"a\",0]\n",
		"header without newline":  "{\"key\":\"a\",\"len\":0}",
		"value cut short":         "{\"key\":\"a\",\"len\":5}\nabc",
		"header over the limit":   long,
		"len not a number":        "{\"key\":\"a\",\"len\":\"5\"}\nabcde",
		"fractional len":          "{\"key\":\"a\",\"len\":1.5}\nab",
		"len beyond int64":        "{\"key\":\"a\",\"len\":9223372036854775808}\n",
		"second record cut short": "{\"key\":\"a\",\"len\":1}\nA{\"key\":\"b\",\"len\":2}\nB",
	} {
		if _, _, err := readAll(t, []byte(stream)); errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: accepted %q", name, truncateForLog(stream))
		}
	}
}

// TestRecordReaderRejectsMalformedHeaders: a header line holds exactly one
// JSON object. Two objects on a line, trailing garbage and null must not
// pass, and an empty line must not read as the end of the stream (a stray
// "\n" in a batch set body would otherwise drop every record after it).
func TestRecordReaderRejectsMalformedHeaders(t *testing.T) {
	for name, stream := range map[string]string{
		"two objects on one line": "{\"key\":\"a\",\"len\":0}{\"key\":\"b\",\"len\":0}\n",
		"garbage after object":    "{\"key\":\"a\",\"len\":1} garbage\nA",
		"null header":             "null\n",
		"empty header line":       "\n",
		"blank line mid-stream":   "{\"key\":\"a\",\"len\":1}\nA\n{\"key\":\"b\",\"len\":1}\nB",
	} {
		if _, _, err := readAll(t, []byte(stream)); errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: accepted %q", name, stream)
		}
	}
}

func truncateForLog(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

// A value cut short is told as the record before's: the caller numbers
// the record it asked for.
func TestRecordValueCutShort(t *testing.T) {
	rr := wire.NewRecordReader(strings.NewReader("{\"key\":\"a\",\"len\":5}\nab"))
	if _, _, err := rr.Next(); err != nil {
		t.Fatal(err)
	}
	_, _, err := rr.Next()
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), "the value before ends 3 bytes short") {
		t.Fatalf("after a cut value: %v", err)
	}
}
