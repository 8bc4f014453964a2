package testserver

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"golang.org/x/sys/unix"
)

// PutExpectContinue sends PUT target (a path) with body value to the
// server at addr (host:port) over a new connection, sending the body only
// once the server's 100 Continue says a handler has begun to read it (so
// the server's checks before its handlers have passed). With giveUp the
// client then gives up midway, as one whose timeout ends: the body is
// corked and the connection shut right after it, so that the body's end
// and the FIN travel in one segment and the server finds the client gone
// as soon as it has the whole body. It returns the answer's status line,
// or the error reading it (a client that gave up reads no answer).
func PutExpectContinue(addr, token, target, value string, giveUp bool) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", target, addr, token, len(value)); err != nil {
		return "", err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", fmt.Errorf("waiting for 100 Continue: %w", err)
	}
	if resp.StatusCode != http.StatusContinue {
		return "", fmt.Errorf("answered %s before the body, want 100 Continue", resp.Status)
	}
	tc := conn.(*net.TCPConn)
	if giveUp {
		rc, err := tc.SyscallConn()
		if err != nil {
			return "", err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1) }); err != nil || serr != nil {
			return "", fmt.Errorf("TCP_CORK: %v %v", err, serr)
		}
	}
	if _, err := io.WriteString(conn, value); err != nil {
		return "", err
	}
	if giveUp {
		if err := tc.CloseWrite(); err != nil {
			return "", err
		}
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		return err.Error(), nil
	}
	resp.Body.Close()
	return resp.Status, nil
}
