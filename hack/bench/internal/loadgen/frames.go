package loadgen

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// DialFrames connects to addr (host:port) and upgrades the connection to
// the frames transport (docs/api/frames.md): the same requests, as compact
// binary frames, served by the same handler chain. The server must run
// without auth (the benchmarks' servers do).
func DialFrames(addr string) (*Conn, error) {
	h := &Conn{addr: addr, frames: true}
	if err := h.dial(); err != nil {
		return nil, err
	}
	return h, nil
}

// upgrade switches the connection just dialled to frames.
func (h *Conn) upgrade() error { return UpgradeToFrames(h.c, h.br) }

// UpgradeToFrames switches c, read through br, to frames (no auth).
func UpgradeToFrames(c net.Conn, br *bufio.Reader) error {
	if _, err := io.WriteString(c, "GET /v1/frames HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: diskcache-frames/1\r\n\r\n"); err != nil {
		return err
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 101")) {
		return fmt.Errorf("upgrade to frames answered %q", bytes.TrimSpace(line))
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			return nil
		}
	}
}

// frameMethods are the method codes of a request frame.
var frameMethods = map[string]byte{"GET": 1, "HEAD": 2, "PUT": 3, "POST": 4, "DELETE": 5, "PATCH": 6}

// AppendFrameHead appends a request frame up to its body: the body, value,
// follows it (a bytes value, when not nil).
func AppendFrameHead(b []byte, method, path string, value []byte) ([]byte, error) {
	code, ok := frameMethods[method]
	if !ok {
		return b, fmt.Errorf("no frame for method %s", method)
	}
	const typeName, typeValue = "Diskcache-Value-Type", "bytes"
	size := 1 + 4 + len(path) + 1 + len(value)
	if value != nil {
		size += 1 + len(typeName) + 4 + len(typeValue)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(size))
	b = append(b, code)
	b = binary.BigEndian.AppendUint32(b, uint32(len(path)))
	b = append(b, path...)
	if value == nil {
		return append(b, 0), nil
	}
	b = append(b, 1, byte(len(typeName)))
	b = append(b, typeName...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(typeValue)))
	return append(b, typeValue...), nil
}

// doFrame sends one request frame and reads its answer frame; it returns
// the status and the body length.
func (h *Conn) doFrame(method, path string, value []byte) (int, int, error) {
	b, err := AppendFrameHead(h.hdr[:0], method, path, value)
	if err != nil {
		return 0, 0, err
	}
	h.hdr = b
	bufs := net.Buffers{b}
	if len(value) > 0 {
		bufs = append(bufs, value)
	}
	if _, err := bufs.WriteTo(h.c); err != nil {
		return 0, 0, err
	}
	var n4 [4]byte
	if _, err := io.ReadFull(h.br, n4[:]); err != nil {
		return 0, 0, err
	}
	headLen := int(binary.BigEndian.Uint32(n4[:]))
	if headLen < 3 {
		return 0, 0, fmt.Errorf("answer frame head of %d bytes", headLen)
	}
	head, err := h.br.Peek(min(headLen, 2))
	if err != nil {
		return 0, 0, err
	}
	status := int(binary.BigEndian.Uint16(head))
	if _, err := h.br.Discard(headLen); err != nil {
		return 0, 0, err
	}
	n := 0
	for {
		if _, err := io.ReadFull(h.br, n4[:]); err != nil {
			return 0, 0, err
		}
		chunk := int(binary.BigEndian.Uint32(n4[:]))
		if chunk == 0 {
			return status, n, nil
		}
		if _, err := h.br.Discard(chunk); err != nil {
			return 0, 0, err
		}
		n += chunk
	}
}
