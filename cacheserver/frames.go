package cacheserver

// The frames transport: GET /v1/frames with "Upgrade: diskcache-frames/1"
// turns an authenticated HTTP/1.1 connection into a stream of compact
// binary frames (docs/api/frames.md). Each request frame carries an
// HTTP-like request (method, target, a few headers, body) that is served
// through the same handler chain as HTTP: auth (the upgrade's token, checked
// again on every frame, so a retired token stops working), routing and
// forwarding, the topology epoch check, rebalancing pulls, limits, metrics.
// What it saves is net/http's per-request machinery and, for pipelined
// frames, the write syscall per answer.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
)

const (
	// FramesProtocol is the Upgrade token of the frames transport.
	FramesProtocol = "diskcache-frames/1"
	// MaxFrameBytes bounds a request frame (its length field); larger
	// values go over plain HTTP.
	MaxFrameBytes = 1 << 20
	// maxFrameHeaders bounds the headers of one request frame.
	maxFrameHeaders = 32
	// frameChunk is the most body bytes an answer buffers before it sends
	// them as a chunk (a large value streams in chunks).
	frameChunk = 64 << 10
	// frameIdleTimeout bounds how long an upgraded connection may wait for
	// its next frame, as http.Server.IdleTimeout does between requests.
	frameIdleTimeout = 2 * time.Minute
)

// Method codes of a request frame.
var frameMethods = [...]string{1: http.MethodGet, 2: http.MethodHead, 3: http.MethodPut, 4: http.MethodPost, 5: http.MethodDelete, 6: http.MethodPatch}

// frameRequest is a decoded request frame.
type frameRequest struct {
	method string
	target string
	header http.Header
	body   []byte
}

// errFrame is a malformed request frame.
type errFrame struct{ msg string }

func (e *errFrame) Error() string { return "malformed frame: " + e.msg }

// decodeFrame decodes the payload of a request frame (what follows its
// length):
//
//	u8 method code | u32 target length | target | u8 header count |
//	per header: u8 name length | name | u32 value length | value | body
//
// Integers are big-endian. The target is an escaped path with an optional
// query, as in an HTTP request line. The headers go into h (empty).
func decodeFrame(p []byte, h http.Header) (frameRequest, error) {
	fr := frameRequest{header: h}
	if len(p) < 1+4+1 {
		return fr, &errFrame{"shorter than its fixed fields"}
	}
	code := int(p[0])
	if code <= 0 || code >= len(frameMethods) {
		return fr, &errFrame{fmt.Sprintf("unknown method code %d", code)}
	}
	fr.method = frameMethods[code]
	n := binary.BigEndian.Uint32(p[1:5])
	p = p[5:]
	if uint64(n) >= uint64(len(p)) {
		return fr, &errFrame{"target longer than the frame"}
	}
	fr.target = string(p[:n])
	if !strings.HasPrefix(fr.target, "/") || strings.ContainsAny(fr.target, " \r\n\x00#") {
		return fr, &errFrame{"target must be an escaped path starting with '/'"}
	}
	p = p[n:]
	count := int(p[0])
	p = p[1:]
	if count > maxFrameHeaders {
		return fr, &errFrame{fmt.Sprintf("%d headers, at most %d", count, maxFrameHeaders)}
	}
	for range count {
		if len(p) < 1 {
			return fr, &errFrame{"header past the end of the frame"}
		}
		nl := int(p[0])
		if len(p) < 1+nl+4 || nl == 0 {
			return fr, &errFrame{"header name past the end of the frame or empty"}
		}
		name := p[1 : 1+nl]
		vl := binary.BigEndian.Uint32(p[1+nl:])
		p = p[1+nl+4:]
		if uint64(vl) > uint64(len(p)) {
			return fr, &errFrame{"header value past the end of the frame"}
		}
		// Surrounding whitespace is not part of a field value (RFC 9110
		// 5.5), as net/http drops it for HTTP.
		value := bytes.Trim(p[:vl], " \t")
		p = p[vl:]
		if !validHeaderName(name) || !validHeaderValue(value) {
			return fr, &errFrame{fmt.Sprintf("invalid header %q", name)}
		}
		key := textproto.CanonicalMIMEHeaderKey(string(name))
		switch key {
		case "Authorization", "Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Expect", "Te", "Trailer":
			// The connection's own, or framing that frames do not use.
			return fr, &errFrame{fmt.Sprintf("header %s is not allowed in a frame", key)}
		}
		fr.header[key] = append(fr.header[key], string(value))
	}
	fr.body = p
	return fr, nil
}

func validHeaderName(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return len(b) > 0
}

func validHeaderValue(b []byte) bool {
	for _, c := range b {
		if c == '\r' || c == '\n' || c == 0 || (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// frameConns tracks the upgraded connections so that a shutdown can close
// them between frames and wait for the frames in flight.
type frameConns struct {
	mu      sync.Mutex
	conns   map[*frameConn]struct{}
	closing bool
	wg      sync.WaitGroup
}

type frameConn struct {
	c    net.Conn
	idle bool // waiting for its next frame
}

func newFrameConns() *frameConns { return &frameConns{conns: map[*frameConn]struct{}{}} }

// add registers c; false once the server is shutting down.
func (f *frameConns) add(fc *frameConn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return false
	}
	f.conns[fc] = struct{}{}
	f.wg.Add(1)
	return true
}

func (f *frameConns) remove(fc *frameConn) {
	f.mu.Lock()
	delete(f.conns, fc)
	f.mu.Unlock()
	f.wg.Done()
}

// setIdle marks fc as waiting for a frame (or not); false when the server
// is shutting down and fc should close.
func (f *frameConns) setIdle(fc *frameConn, idle bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	fc.idle = idle
	return !f.closing
}

// shutdown stops the connections waiting for a frame at once; the others
// close after the frame they serve.
func (f *frameConns) shutdown() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closing = true
	for fc := range f.conns {
		if fc.idle {
			_ = fc.c.SetReadDeadline(time.Now())
		}
	}
}

// wait waits for every upgraded connection to close, or ctx to end (then
// closes them).
func (f *frameConns) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		f.mu.Lock()
		for fc := range f.conns {
			_ = fc.c.Close()
		}
		f.mu.Unlock()
		return ctx.Err()
	}
}

// upgradeFrames is GET /v1/frames: it switches the connection to frames.
// Auth happened in wrap, like for every route.
func (s *Server) upgradeFrames(w http.ResponseWriter, r *http.Request) error {
	// HTTP/2 first: its answers may not carry Upgrade or Connection
	// (RFC 9113 8.2.2), which a 426 would.
	if r.ProtoMajor != 1 {
		return badRequest(wire.CodeBadRequest, "the frames upgrade needs HTTP/1.1")
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", FramesProtocol) {
		w.Header().Set("Upgrade", FramesProtocol)
		w.Header().Set("Connection", "Upgrade")
		return &apiError{status: http.StatusUpgradeRequired, code: wire.CodeUpgradeRequired,
			msg: fmt.Sprintf("GET /v1/frames needs Connection: Upgrade and Upgrade: %s", FramesProtocol)}
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return badRequest(wire.CodeBadRequest, "this connection cannot be upgraded: %v", err)
	}
	fc := &frameConn{c: c}
	if !s.frames.add(fc) {
		_ = c.Close()
		return nil
	}
	_ = c.SetDeadline(time.Time{})
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + FramesProtocol + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		_ = c.Close()
		s.frames.remove(fc)
		return nil
	}
	ctx := context.WithoutCancel(r.Context())
	go s.serveFrames(ctx, fc, brw, r.Header.Values("Authorization"), r.Host, r.RemoteAddr)
	return nil
}

// headerHasToken reports whether a comma-separated header of h lists token
// (case-insensitively).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// serveFrames serves the request frames of one upgraded connection in
// order, until it closes, fails, idles out or the server shuts down.
func (s *Server) serveFrames(ctx context.Context, fc *frameConn, brw *bufio.ReadWriter, auth []string, host, remote string) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer s.frames.remove(fc)
	defer fc.c.Close()
	h := s.Handler()
	fw := &frameWriter{bw: brw.Writer, header: make(http.Header, 4)}
	// The request every frame's fields are copied into, and its header
	// map: frames are served one at a time, and the handlers below wrap
	// (which each has its own copy of the request) see only them, so one
	// of each per connection spares their allocations on every frame.
	// (Nothing keeps the header past its frame: forwarding copies it.)
	tmpl := (&http.Request{Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Host: host, RemoteAddr: remote}).WithContext(ctx)
	r := new(http.Request)
	header := make(http.Header, 4)
	var lenBuf [4]byte
	var buf []byte
	for {
		if brw.Reader.Buffered() == 0 {
			if err := brw.Writer.Flush(); err != nil {
				return
			}
		}
		if brw.Reader.Buffered() < len(lenBuf) {
			// Before setIdle, so that a shutdown's deadline is not undone.
			_ = fc.c.SetReadDeadline(time.Now().Add(frameIdleTimeout))
		}
		if !s.frames.setIdle(fc, true) {
			return
		}
		if _, err := io.ReadFull(brw.Reader, lenBuf[:]); err != nil {
			return
		}
		open := s.frames.setIdle(fc, false)
		n := binary.BigEndian.Uint32(lenBuf[:])
		if n > MaxFrameBytes {
			fw.reset()
			writeErrorJSON(fw, http.StatusRequestEntityTooLarge, wire.Error{Code: wire.CodeValueTooLarge,
				Message: fmt.Sprintf("frame of %d bytes, at most %d; send larger values over HTTP", n, MaxFrameBytes)})
			_ = fw.finish()
			_ = brw.Writer.Flush()
			return
		}
		if brw.Reader.Buffered() < int(n) {
			// The rest of the frame is still on its way: bound its wait
			// (a frame already read needs no deadline).
			if s.cfg.BodyTimeout > 0 {
				_ = fc.c.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
			} else {
				_ = fc.c.SetReadDeadline(time.Time{})
			}
		}
		// One buffer for the frames of the connection: serveFrame copies
		// out what the request keeps.
		if cap(buf) < int(n) {
			buf = make([]byte, max(n, 512))
		}
		payload := buf[:n]
		if _, err := io.ReadFull(brw.Reader, payload); err != nil {
			return
		}
		fw.reset()
		if s.serveHotGet(fw, payload, auth) {
			if err := fw.finish(); err != nil {
				return
			}
			if !open {
				_ = brw.Writer.Flush()
				return
			}
			continue
		}
		*r = *tmpl
		clear(header)
		r.Header = header
		watch := watchPeer(fc.c, brw.Reader, cancel)
		served := s.serveFrame(h, fw, r, payload, auth)
		watch.stop()
		if !served {
			_ = brw.Writer.Flush()
			return
		}
		if cap(buf) > frameChunk {
			buf = nil // do not keep a large buffer per idle connection
		}
		if err := fw.finish(); err != nil {
			return
		}
		if !open {
			_ = brw.Writer.Flush()
			return
		}
	}
}

// peerWatchAfter is how long a frame's handler runs before its connection
// is watched for the client going away.
const peerWatchAfter = 50 * time.Millisecond

// peerWatch notices, while a frame's handler runs, that the client closed
// the connection, and then cancels the connection's context, which every
// request frame's is: a lock or semaphore acquire waiting for its turn
// stops waiting rather than taking it for a client that gave up (and that
// no one would release). Frames are read one at a time, so nothing else
// reads the connection meanwhile; net/http watches its connections so.
// Only handlers that run past peerWatchAfter are watched.
type peerWatch struct {
	t        *time.Timer
	c        net.Conn
	stopping atomic.Bool
	done     chan struct{}
}

func watchPeer(c net.Conn, br *bufio.Reader, cancel context.CancelFunc) *peerWatch {
	w := &peerWatch{c: c, done: make(chan struct{})}
	w.t = time.AfterFunc(peerWatchAfter, func() {
		defer close(w.done)
		// No deadline of the frame's read may end the watch; stop sets
		// stopping before its deadline, so once this has cleared the
		// deadline, either stopping shows or stop's deadline wakes Peek.
		_ = c.SetReadDeadline(time.Time{})
		if w.stopping.Load() {
			return
		}
		// The next frame (pipelined), or the end of the connection.
		if _, err := br.Peek(1); err != nil && !w.stopping.Load() {
			cancel()
		}
	})
	return w
}

// stop ends the watch before the next frame is read: a watch under way is
// woken by a read deadline in the past, and the deadline cleared after.
func (w *peerWatch) stop() {
	if w.t.Stop() {
		return // never started
	}
	w.stopping.Store(true)
	_ = w.c.SetReadDeadline(time.Now())
	<-w.done
	_ = w.c.SetReadDeadline(time.Time{})
}

// serveFrame decodes one request frame into r (the connection's fields
// already set) and serves it through h into fw; false when the connection
// must close (the handler aborted its answer). Nothing keeps payload past
// the call (the target, headers and body are copied out of it).
func (s *Server) serveFrame(h http.Handler, fw *frameWriter, r *http.Request, payload []byte, auth []string) (ok bool) {
	fr, err := decodeFrame(payload, r.Header)
	var u *url.URL
	if err == nil {
		if u, err = url.ParseRequestURI(fr.target); err != nil {
			err = &errFrame{fmt.Sprintf("target %q: %v", fr.target, err)}
		}
	}
	if err != nil {
		writeErrorJSON(fw, http.StatusBadRequest, wire.Error{Code: wire.CodeBadRequest, Message: err.Error()})
		return true
	}
	if auth != nil {
		r.Header["Authorization"] = auth
	}
	r.Method, r.URL, r.RequestURI = fr.method, u, fr.target
	fw.bodiless = fr.method == http.MethodHead
	r.ContentLength, r.Body = int64(len(fr.body)), http.NoBody
	if len(fr.body) > 0 {
		// A copy, as the payload's buffer serves the next frame: the body
		// may outlive this one (readValue hands it to the engine as it is;
		// a forwarding transport may read it after its answer came).
		r.Body = &frameBody{b: bytes.Clone(fr.body)}
	}
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				s.log.Error("panic serving a frame", slog.String("path", u.Path), slog.Any("panic", p))
			}
			ok = false
		}
	}()
	h.ServeHTTP(fw, r)
	return true
}

// frameBody is the body of a request frame, already in memory: it needs
// no read deadline, and readValue takes its bytes without a copy.
type frameBody struct {
	b   []byte
	off int
}

func (b *frameBody) Read(p []byte) (int, error) {
	if b.off >= len(b.b) {
		return 0, io.EOF
	}
	n := copy(p, b.b[b.off:])
	b.off += n
	return n, nil
}

func (b *frameBody) Close() error { return nil }

// take returns the unread bytes and marks them read.
func (b *frameBody) take() []byte {
	p := b.b[b.off:]
	b.off = len(b.b)
	return p
}

// frameWriter is the ResponseWriter of a frame: it writes the answer frame
// (docs/api/frames.md) into the connection's buffered writer:
//
//	u32 head length | u16 status | u8 header count |
//	per header: u8 name length | name | u32 value length | value
//
// then the body as chunks (u32 length, bytes), ended by a chunk of length 0.
type frameWriter struct {
	bw     *bufio.Writer
	header http.Header
	status int
	head   bool // the head was written
	// bodiless: the answer to a HEAD, whose body is dropped (net/http
	// does the same for HTTP).
	bodiless bool
	body     []byte
	pairs    [][2]string
	err      error
	buf      [8]byte // for the integers of the head and chunk lengths
}

func (w *frameWriter) reset() {
	clear(w.header)
	w.status = 0
	w.head = false
	w.bodiless = false
	w.body = w.body[:0]
	w.err = nil
}

func (w *frameWriter) Header() http.Header { return w.header }

func (w *frameWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
}

func (w *frameWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.bodiless {
		return len(p), nil
	}
	n := len(p)
	for len(p) > 0 {
		room := frameChunk - len(w.body)
		if room > len(p) {
			room = len(p)
		}
		w.body = append(w.body, p[:room]...)
		p = p[room:]
		if len(w.body) >= frameChunk {
			if err := w.flushChunk(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// skipFrameHeader lists the answer headers a frame does not carry (HTTP
// framing).
func skipFrameHeader(name string) bool {
	switch name {
	case "Transfer-Encoding", "Connection", "Keep-Alive", "Date", "Trailer":
		return true
	}
	return false
}

func (w *frameWriter) writeHead() {
	if w.head {
		return
	}
	w.head = true
	if w.status == 0 {
		w.status = http.StatusOK
	}
	pairs := w.pairs[:0]
	size := 2 + 1
	for name, values := range w.header {
		if skipFrameHeader(name) || len(name) > 255 {
			continue
		}
		for _, v := range values {
			if len(pairs) < 255 { // an answer never carries that many
				pairs = append(pairs, [2]string{name, v})
				size += 1 + len(name) + 4 + len(v)
			}
		}
	}
	w.pairs = pairs
	b := &w.buf
	binary.BigEndian.PutUint32(b[:4], uint32(size))
	binary.BigEndian.PutUint16(b[4:6], uint16(w.status))
	b[6] = byte(len(pairs))
	_, _ = w.bw.Write(b[:7])
	for _, p := range pairs {
		_ = w.bw.WriteByte(byte(len(p[0])))
		_, _ = w.bw.WriteString(p[0])
		binary.BigEndian.PutUint32(b[:4], uint32(len(p[1])))
		_, _ = w.bw.Write(b[:4])
		_, _ = w.bw.WriteString(p[1])
	}
}

func (w *frameWriter) flushChunk() error {
	w.writeHead()
	if len(w.body) > 0 {
		binary.BigEndian.PutUint32(w.buf[:4], uint32(len(w.body)))
		_, _ = w.bw.Write(w.buf[:4])
		_, _ = w.bw.Write(w.body)
		w.body = w.body[:0]
	}
	if w.bw.Buffered() >= frameChunk {
		if err := w.bw.Flush(); err != nil {
			w.err = err
			return err
		}
	}
	return nil
}

// finish ends the answer: head if not yet written, the last chunk and the
// end mark (left in the buffer; the loop flushes).
func (w *frameWriter) finish() error {
	if err := w.flushChunk(); err != nil {
		return err
	}
	w.buf = [8]byte{}
	_, err := w.bw.Write(w.buf[:4])
	if len(w.body) > frameChunk {
		w.body = nil // do not keep a large buffer per idle connection
	}
	return err
}
