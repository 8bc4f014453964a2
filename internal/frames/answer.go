package frames

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
)

// maxHead bounds an answer frame's head (status and headers); answers
// carry a few short headers, so a larger one is a broken stream.
const maxHead = 1 << 20

// maxChunk bounds one body chunk (the server sends up to 64 KiB).
const maxChunk = 1 << 20

// errNoAnswer: the connection ended before any byte of an answer. It wraps
// io.EOF, as net/http's error for the same case does, so callers that retry
// idempotent requests on EOF keep doing so.
var errNoAnswer = fmt.Errorf("connection closed before the answer: %w", io.EOF)

// head is a decoded answer frame head:
//
//	u32 head length | u16 status | u8 header count |
//	per header: u8 name length | name | u32 value length | value
type head struct {
	status int
	header http.Header
}

// readHead reads an answer frame's head off br.
func readHead(br *bufio.Reader) (head, error) {
	var h head
	var lb [4]byte
	n, err := io.ReadFull(br, lb[:])
	if err != nil {
		if n == 0 && (err == io.EOF || isReset(err)) {
			return h, errNoAnswer
		}
		return h, fmt.Errorf("reading the answer head: %w", err)
	}
	size := binary.BigEndian.Uint32(lb[:])
	if size < 3 || size > maxHead {
		return h, fmt.Errorf("answer head of %d bytes (3 to %d)", size, maxHead)
	}
	p := make([]byte, size)
	if _, err := io.ReadFull(br, p); err != nil {
		return h, fmt.Errorf("reading the answer head: %w", unexpected(err))
	}
	return parseHead(p)
}

// parseHead decodes a head's bytes (what follows its length).
func parseHead(p []byte) (head, error) {
	var h head
	h.status = int(binary.BigEndian.Uint16(p))
	if h.status < 100 || h.status > 999 {
		return h, fmt.Errorf("answer status %d", h.status)
	}
	count := int(p[2])
	p = p[3:]
	h.header = make(http.Header, count)
	for range count {
		if len(p) < 1 {
			return h, errors.New("answer header past the end of its head")
		}
		nl := int(p[0])
		if nl == 0 || len(p) < 1+nl+4 {
			return h, errors.New("answer header name empty or past the end of its head")
		}
		name := string(p[1 : 1+nl])
		vl := binary.BigEndian.Uint32(p[1+nl:])
		p = p[1+nl+4:]
		if uint64(vl) > uint64(len(p)) {
			return h, errors.New("answer header value past the end of its head")
		}
		value := string(p[:vl])
		p = p[vl:]
		if !validHeaderName(name) || !validHeaderValue(value) {
			return h, fmt.Errorf("invalid answer header %q", name)
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		h.header[key] = append(h.header[key], value)
	}
	if len(p) != 0 {
		return h, fmt.Errorf("%d bytes after the answer's headers", len(p))
	}
	return h, nil
}

// readChunkLen reads the length of the next body chunk (0: the end).
func readChunkLen(br *bufio.Reader) (uint32, error) {
	var lb [4]byte
	if _, err := io.ReadFull(br, lb[:]); err != nil {
		return 0, fmt.Errorf("reading the answer body: %w", unexpected(err))
	}
	n := binary.BigEndian.Uint32(lb[:])
	if n > maxChunk {
		return 0, fmt.Errorf("answer chunk of %d bytes, at most %d", n, maxChunk)
	}
	return n, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
