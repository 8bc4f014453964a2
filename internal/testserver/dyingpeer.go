package testserver

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/internal/frames"
)

// DyingPeer listens as a server whose process dies while serving. On each
// connection it answers the first `answered` frames 200 "ok", then reads
// one more whole frame and closes the connection without answering; a
// plain HTTP request (a body over a frame) it reads whole and closes
// unanswered. It counts the frames and requests it read whole.
func DyingPeer(t testing.TB, answered int) (url string, took *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	took = &atomic.Int32{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go servePeerThenDie(c, answered, took)
		}
	}()
	return "http://" + ln.Addr().String(), took
}

func servePeerThenDie(c net.Conn, answered int, took *atomic.Int32) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Header.Get("Upgrade") == "" {
		if _, err := io.Copy(io.Discard, req.Body); err == nil {
			took.Add(1)
		}
		return
	}
	_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+frames.Protocol+"\r\n\r\n")
	for i := 0; ; i++ {
		var lb [4]byte
		if _, err := io.ReadFull(br, lb[:]); err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, br, int64(binary.BigEndian.Uint32(lb[:]))); err != nil {
			return
		}
		took.Add(1)
		if i >= answered {
			return
		}
		// 200, no headers, body "ok" (docs/api/frames.md).
		_, _ = c.Write([]byte{0, 0, 0, 3, 0, 200, 0, 0, 0, 0, 2, 'o', 'k', 0, 0, 0, 0})
	}
}
