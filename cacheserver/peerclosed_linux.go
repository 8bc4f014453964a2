package cacheserver

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpCloseWait is TCP_CLOSE_WAIT of the kernel's TCP states: the peer's
// FIN has arrived, this side has not closed yet.
const tcpCloseWait = 8

// peerClosed reports whether the client of c has closed its side of the
// connection (its FIN arrived), whatever is still unread before it.
func peerClosed(c net.Conn) bool {
	sc := sysConn(c)
	if sc == nil {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	_ = rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		closed = err == nil && info.State == tcpCloseWait
	})
	return closed
}

// sysConn is the socket under c's wrappers (TLS, the connection cap), nil
// if there is none.
func sysConn(c net.Conn) syscall.Conn {
	for {
		switch x := c.(type) {
		case syscall.Conn:
			return x
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return nil
		}
	}
}
