package wire

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// A record stream (media type RecordsContentType) carries many items in one
// body without base64: each record is one line of JSON (a Record header,
// ending in '\n') followed by exactly Len raw bytes of value. Batch set
// requests and batch get, deque and index listing responses use it.
//
//	{"key":"a","type":"text","len":5}\nhello{"key":"b","found":false,"len":0}\n
type Record struct {
	Key  string `json:"key"`
	Kind string `json:"kt,omitempty"` // key kind; text when empty; bytes/pickle keys in base64

	// Type is the value type (bytes, text, int, float, pickle); empty for a
	// record without a value.
	Type string `json:"type,omitempty"`
	// Len is the number of value bytes after the header line.
	Len int64 `json:"len"`
	// Found is false in batch get responses for keys that missed.
	Found *bool `json:"found,omitempty"`
	// Error and Message (batch get responses, with Found false) say why a
	// key has no answer: its owner failed its part of the batch (an error
	// code of the API, such as shard_unavailable).
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`

	// Expire (requests) is seconds from now; ExpireTime (responses) is the
	// absolute expiry in epoch seconds.
	Expire     *float64 `json:"expire,omitempty"`
	ExpireTime *float64 `json:"expire_time,omitempty"`
	Tag        *string  `json:"tag,omitempty"`
	TagKind    string   `json:"tt,omitempty"` // tag kind; text when empty; bytes in base64

	// Index is the position of an item in a deque or index listing.
	Index *int64 `json:"index,omitempty"`

	// Keyed is true when a header read from a stream had a "key" (batch
	// set needs one; deque extend's value records have none). Not on the
	// wire: writers always write "key".
	Keyed bool `json:"-"`
}

// MaxRecordHeader bounds one header line. It must hold the largest key
// and tag a server takes (MaxKeyBytesLimit, and 1 KiB), written as JSON
// escapes them: a text key of control characters grows six times.
const MaxRecordHeader = 1 << 20

// MaxKeyBytesLimit is the largest --max-key-bytes: a key of that size,
// escaped, still fits a record header.
const MaxKeyBytesLimit = 128 << 10

// RecordReader reads a record stream.
type RecordReader struct {
	r   *bufio.Reader
	cur *io.LimitedReader
}

// NewRecordReader reads records from r.
func NewRecordReader(r io.Reader) *RecordReader {
	return &RecordReader{r: bufio.NewReaderSize(r, 32<<10)}
}

// Next returns the next record header and a reader of exactly its value
// bytes, valid until the next call. It returns io.EOF after the last record.
// Unread value bytes of the previous record are skipped.
func (rr *RecordReader) Next() (Record, io.Reader, error) {
	if rr.cur != nil && rr.cur.N > 0 {
		if _, err := io.Copy(io.Discard, rr.cur); err != nil {
			return Record{}, nil, fmt.Errorf("records: skip value: %w", err)
		}
		if rr.cur.N > 0 {
			// Said so: callers number the record they asked for, the next.
			return Record{}, nil, fmt.Errorf("records: the value before ends %d bytes short of its len: %w", rr.cur.N, io.ErrUnexpectedEOF)
		}
	}
	line, err := rr.readLine()
	if err != nil {
		return Record{}, nil, err
	}
	rec, err := parseHeader(line)
	if err != nil {
		return Record{}, nil, err
	}
	if rec.Len < 0 {
		return Record{}, nil, fmt.Errorf("records: negative len %d", rec.Len)
	}
	rr.cur = &io.LimitedReader{R: rr.r, N: rec.Len}
	return rec, Exact(rr.cur), nil
}

// parseHeader decodes exactly one JSON object filling the whole line. Its
// errors never wrap io.EOF, which callers take for the end of the stream.
func parseHeader(line []byte) (Record, error) {
	trimmed := bytes.TrimSpace(line)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return Record{}, fmt.Errorf("records: header %q is not a JSON object", truncate(line))
	}
	// The pointers tell a missing "key" or "len" from an empty or zero one
	// (the shallower fields win over the embedded Record's).
	var h struct {
		Record
		Key *string `json:"key"`
		Len *int64  `json:"len"`
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return Record{}, fmt.Errorf("records: bad header %q: %v", truncate(line), err)
	}
	if dec.InputOffset() != int64(len(trimmed)) {
		return Record{}, fmt.Errorf("records: header %q has data after its JSON object", truncate(line))
	}
	if h.Len == nil {
		return Record{}, fmt.Errorf("records: header %q has no \"len\"", truncate(line))
	}
	rec := h.Record
	rec.Len = *h.Len
	if h.Key != nil {
		rec.Key, rec.Keyed = *h.Key, true
	}
	return rec, nil
}

func (rr *RecordReader) readLine() ([]byte, error) {
	var line []byte
	for {
		chunk, err := rr.r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxRecordHeader {
			return nil, fmt.Errorf("records: header longer than %d bytes", MaxRecordHeader)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(line) == 0 {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("records: header without newline: %w", io.ErrUnexpectedEOF)
		default:
			return nil, err
		}
	}
}

// Exact reads exactly l.N bytes from l: a stream that ends before them is
// io.ErrUnexpectedEOF, not a short value (for readers of framed values).
func Exact(l *io.LimitedReader) io.Reader { return &exactReader{l} }

type exactReader struct{ l *io.LimitedReader }

func (e *exactReader) Read(p []byte) (int, error) {
	if e.l.N == 0 {
		return 0, io.EOF
	}
	n, err := e.l.Read(p)
	if errors.Is(err, io.EOF) && e.l.N > 0 {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func truncate(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

// RecordWriter writes a record stream.
type RecordWriter struct {
	w io.Writer
}

// NewRecordWriter writes records to w.
func NewRecordWriter(w io.Writer) *RecordWriter { return &RecordWriter{w: w} }

// Write writes a header (its Len set to len(value)) and the value bytes.
func (rw *RecordWriter) Write(rec Record, value []byte) error {
	rec.Len = int64(len(value))
	return rw.WriteFrom(rec, bytes.NewReader(value))
}

// WriteFrom writes a header whose Len the caller has set and copies exactly
// Len bytes from r.
func (rw *RecordWriter) WriteFrom(rec Record, r io.Reader) error {
	hdr, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	hdr = append(hdr, '\n')
	if _, err := rw.w.Write(hdr); err != nil {
		return err
	}
	if rec.Len == 0 {
		return nil // a key only (listings): no copy to set up
	}
	n, err := io.CopyN(rw.w, r, rec.Len)
	if err != nil {
		return fmt.Errorf("records: value of %q: wrote %d of %d bytes: %w", rec.Key, n, rec.Len, err)
	}
	return nil
}
