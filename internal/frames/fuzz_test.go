package frames

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// streamConn is a connection whose answers are a fixed byte stream.
type streamConn struct {
	net.Conn // nil: only Read, Write and Close are used
	r        *bytes.Reader
}

func (c *streamConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *streamConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *streamConn) Close() error                { return nil }
func (c *streamConn) SetDeadline(time.Time) error { return nil }

// answerFrame encodes an answer frame as docs/api/frames.md describes.
func answerFrame(status int, header [][2]string, chunks ...[]byte) []byte {
	h := binary.BigEndian.AppendUint16(nil, uint16(status))
	h = append(h, byte(len(header)))
	for _, kv := range header {
		h = append(h, byte(len(kv[0])))
		h = append(h, kv[0]...)
		h = binary.BigEndian.AppendUint32(h, uint32(len(kv[1])))
		h = append(h, kv[1]...)
	}
	b := binary.BigEndian.AppendUint32(nil, uint32(len(h)))
	b = append(b, h...)
	for _, c := range chunks {
		b = binary.BigEndian.AppendUint32(b, uint32(len(c)))
		b = append(b, c...)
	}
	return binary.BigEndian.AppendUint32(b, 0)
}

// FuzzAnswerFrames feeds arbitrary bytes as a server's answer: the parser
// returns a response or an error, never panics, never allocates past its
// bounds, and a response's body is exactly the chunks that were sent.
func FuzzAnswerFrames(f *testing.F) {
	f.Add(answerFrame(200, [][2]string{{"Content-Type", "text/plain"}}, []byte("hello")))
	f.Add(answerFrame(404, [][2]string{{"Content-Type", "application/json"}}, []byte(`{"error":"not_found"}`)))
	f.Add(answerFrame(204, nil))
	f.Add(answerFrame(200, [][2]string{{"Diskcache-Value-Type", "bytes"}}, bytes.Repeat([]byte("a"), 300), []byte("b"), bytes.Repeat([]byte("c"), 70)))
	f.Add(answerFrame(200, [][2]string{{"Content-Length", "4"}}, []byte("ab"), []byte("cd")))
	f.Add(answerFrame(200, [][2]string{{"Content-Length", "5"}}, []byte("ab"), []byte("cd")))
	f.Add(answerFrame(200, nil, []byte("x"))[:12])
	f.Add([]byte{0, 0, 0, 3, 0, 200, 5})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add(append(answerFrame(200, nil, []byte("one")), answerFrame(200, nil, []byte("two"))...))
	f.Fuzz(func(t *testing.T, stream []byte) {
		tr := New(Options{Fallback: http.DefaultTransport})
		c := &conn{nc: &streamConn{r: bytes.NewReader(stream)}, key: poolKey{base: "http://fuzz"}}
		c.br = bufio.NewReaderSize(c.nc, 4096)
		req, _ := http.NewRequest(http.MethodGet, "http://fuzz/v1/keys/k", nil)
		resp, _, err := tr.exchange(context.Background(), c, req, []byte{0, 0, 0, 0})
		if err != nil {
			return
		}
		if resp.StatusCode < 100 || resp.StatusCode > 999 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return
		}
		if resp.ContentLength >= 0 && int64(len(got)) != resp.ContentLength {
			t.Fatalf("body of %d bytes, ContentLength %d", len(got), resp.ContentLength)
		}
		// An independent reading of the chunks must agree.
		hl := binary.BigEndian.Uint32(stream)
		p := stream[4+hl:]
		var want []byte
		for {
			n := binary.BigEndian.Uint32(p)
			if n == 0 {
				break
			}
			want = append(want, p[4:4+n]...)
			p = p[4+n:]
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("body %q, chunks %q", got, want)
		}
	})
}
