package cacheserver

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
)

// A move stream (POST /v1/rebalance/receive, GET /v1/rebalance/export)
// carries Cache rows with all their metadata between shards: per row one
// line of JSON (moveRecord) followed by exactly Len bytes of value, the
// value file streamed as it is.
type moveRecord struct {
	Key         string              `json:"key"`
	Kind        string              `json:"kt,omitempty"`
	StoreTime   float64             `json:"store_time"`
	ExpireTime  *float64            `json:"expire_time,omitempty"`
	AccessTime  float64             `json:"access_time"`
	AccessCount int64               `json:"access_count"`
	Tag         *wire.EncodeKeyJSON `json:"tag,omitempty"`
	Mode        int64               `json:"mode"`
	// Type is the type of a value kept in the database (int, float, text,
	// bytes; empty for NULL); File marks a value file.
	Type string `json:"type,omitempty"`
	File bool   `json:"file,omitempty"`
	Len  int64  `json:"len"`
}

// maxInlineValue bounds a value kept in the database when it is received
// (it is read into memory); value files stream.
const maxInlineValue = 64 << 20

// writeMoveRecord writes one row; open opens its value file. A file gone
// since the row was read is errGone (the row was deleted meanwhile).
func writeMoveRecord(w io.Writer, row engine.Row, open func(engine.Row) (io.ReadCloser, error)) error {
	kj := wire.KeyToJSON(row.Key)
	rec := moveRecord{Key: kj.Key, Kind: kj.Kind, StoreTime: row.StoreTime, ExpireTime: row.ExpireTime,
		AccessTime: row.AccessTime, AccessCount: row.AccessCount, Mode: row.Mode}
	if !row.Tag.IsNone() {
		t := wire.KeyToJSON(row.Tag)
		rec.Tag = &t
	}
	var body io.Reader
	if row.Filename != "" {
		f, err := open(row)
		if err != nil {
			return fmt.Errorf("%w: %v", errGone, err)
		}
		defer f.Close()
		rec.File, rec.Len, body = true, row.Size, f
	} else {
		var b []byte
		switch v := row.Value.(type) {
		case int64:
			rec.Type, b = "int", strconv.AppendInt(nil, v, 10)
		case float64:
			rec.Type, b = "float", strconv.AppendUint(nil, math.Float64bits(v), 10)
		case string:
			rec.Type, b = "text", []byte(v)
		case []byte:
			rec.Type, b = "bytes", v
		}
		rec.Len, body = int64(len(b)), bytes.NewReader(b)
	}
	hdr, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := w.Write(append(hdr, '\n')); err != nil {
		return err
	}
	if n, err := io.CopyN(w, body, rec.Len); err != nil {
		return fmt.Errorf("value of %q: %d of %d bytes: %w", rec.Key, n, rec.Len, err)
	}
	return nil
}

var errGone = errors.New("item gone")

// moveReader reads a move stream.
type moveReader struct {
	r    *bufio.Reader
	cur  *io.LimitedReader
	bufs *sync.Pool
}

// newMoveReader reads a move stream from r with a buffer of bufs (1 MiB:
// a header line must fit; allocating one per batch cost more than decoding
// the batch); release gives it back.
func newMoveReader(bufs *sync.Pool, r io.Reader) *moveReader {
	br, _ := bufs.Get().(*bufio.Reader)
	if br == nil {
		br = bufio.NewReaderSize(nil, 1<<20)
	}
	br.Reset(r)
	return &moveReader{r: br, bufs: bufs}
}

// release ends the use of m (and of the last value reader it returned).
func (m *moveReader) release() {
	if m.r != nil {
		m.r.Reset(nil)
		m.bufs.Put(m.r)
		m.r, m.cur = nil, nil
	}
}

// next returns the next row and, for a value file, a reader of exactly its
// bytes (valid until the next call); io.EOF after the last row.
func (m *moveReader) next() (engine.Row, io.Reader, error) {
	if m.cur != nil && m.cur.N > 0 {
		if _, err := io.Copy(io.Discard, m.cur); err != nil {
			return engine.Row{}, nil, err
		}
		if m.cur.N > 0 {
			return engine.Row{}, nil, io.ErrUnexpectedEOF
		}
	}
	line, err := m.r.ReadSlice('\n')
	if errors.Is(err, io.EOF) && len(line) == 0 {
		return engine.Row{}, nil, io.EOF
	}
	if err != nil {
		return engine.Row{}, nil, fmt.Errorf("move stream: header: %w", err)
	}
	var rec moveRecord
	if err := json.Unmarshal(line, &rec); err != nil {
		return engine.Row{}, nil, fmt.Errorf("move stream: bad header: %v", err)
	}
	if rec.Len < 0 || (!rec.File && rec.Len > maxInlineValue) {
		return engine.Row{}, nil, fmt.Errorf("move stream: bad len %d", rec.Len)
	}
	row := engine.Row{StoreTime: rec.StoreTime, ExpireTime: rec.ExpireTime, AccessTime: rec.AccessTime,
		AccessCount: rec.AccessCount, Mode: rec.Mode}
	if row.Key, err = wire.KeyFromJSON(wire.EncodeKeyJSON{Key: rec.Key, Kind: rec.Kind}); err != nil {
		return row, nil, fmt.Errorf("move stream: key: %v", err)
	}
	if rec.Tag != nil {
		if row.Tag, err = wire.KeyFromJSON(*rec.Tag); err != nil {
			return row, nil, fmt.Errorf("move stream: tag: %v", err)
		}
	}
	m.cur = &io.LimitedReader{R: m.r, N: rec.Len}
	if rec.File {
		row.Filename, row.Size = "incoming", rec.Len
		return row, wire.Exact(m.cur), nil
	}
	b, err := io.ReadAll(m.cur)
	if err != nil || int64(len(b)) != rec.Len {
		return row, nil, fmt.Errorf("move stream: value of %q: %w", rec.Key, io.ErrUnexpectedEOF)
	}
	switch rec.Type {
	case "int":
		row.Value, err = strconv.ParseInt(string(b), 10, 64)
	case "float":
		var u uint64
		u, err = strconv.ParseUint(string(b), 10, 64)
		row.Value = math.Float64frombits(u)
	case "text":
		row.Value = string(b)
	case "bytes":
		row.Value = b
	case "":
	default:
		err = fmt.Errorf("unknown type %q", rec.Type)
	}
	if err != nil {
		return row, nil, fmt.Errorf("move stream: value of %q: %v", rec.Key, err)
	}
	return row, nil, nil
}
