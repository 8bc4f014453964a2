package cacheserver

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// peerClosed sees the client's FIN through the server's wrappers (the
// connection cap, TLS), and not before it, even with unread bytes.
func TestPeerClosed(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	server := &limitedConn{Conn: nc, release: func() {}}
	for _, c := range []net.Conn{server, tls.Server(server, &tls.Config{})} {
		if peerClosed(c) {
			t.Fatalf("%T: closed before the client closed", c)
		}
	}
	if _, err := client.Write([]byte("a request never read")); err != nil {
		t.Fatal(err)
	}
	client.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !peerClosed(server) {
		if time.Now().After(deadline) {
			t.Fatal("the client's FIN was not seen")
		}
		time.Sleep(time.Millisecond) // the FIN crosses the loopback; a poll's pace
	}
	if !peerClosed(tls.Server(server, &tls.Config{})) {
		t.Fatal("not seen through TLS")
	}
}
