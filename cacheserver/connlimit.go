package cacheserver

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
)

// connLimitListener caps the connections a server holds open. A connection
// beyond the cap is accepted only to be told so: 503 with a JSON error and
// Retry-After, then closed. This keeps the process below its file
// descriptor limit, so the connections it does hold (probes and real
// clients among them) keep being served.
type connLimitListener struct {
	net.Listener
	slots     chan struct{}
	tlsConfig *tls.Config // set when the server speaks TLS: the refusal needs a handshake
	// refusing bounds the connections being refused at once; beyond it a
	// connection is closed without an answer.
	refusing chan struct{}
	open     prometheus.Gauge
	refused  prometheus.Counter
}

// connRefusal is the answer to a request on a connection over the cap.
var connRefusal = refusal("503 Service Unavailable")

// connIdleRefusal is the answer to a connection over the cap that sent no
// request in probeHeadWait: a client's transport may dial ahead of need
// and keep the connection idle, and answers on an idle connection are
// unsolicited. Go's and other clients take a 408 there as the server
// closing an idle connection, not as an error; one that sends a request
// just then reads it as the answer (retry, with the same code).
var connIdleRefusal = refusal("408 Request Timeout")

func refusal(status string) []byte {
	body, _ := json.Marshal(wire.Error{Code: wire.CodeTooManyConnections,
		Message: "the server holds as many connections as --max-connections allows; retry"})
	return fmt.Appendf(nil, "HTTP/1.1 %s\r\nContent-Type: application/json\r\n%s: %s\r\n"+
		"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", status, wire.HeaderError, wire.CodeTooManyConnections, len(body), body)
}

// probeHeadWait is how long a connection over the cap is given to send its
// request head, to tell the liveness probe from the rest.
const probeHeadWait = 100 * time.Millisecond

// connAlive answers GET /healthz on a connection over the cap.
var connAlive = func() []byte {
	body := `{"status":"ok"}` + "\n"
	return fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}()

func newConnLimitListener(l net.Listener, limit int, tlsConfig *tls.Config, m *metrics) *connLimitListener {
	return &connLimitListener{
		Listener: l, slots: make(chan struct{}, limit), tlsConfig: tlsConfig,
		refusing: make(chan struct{}, 64), open: m.connsOpen, refused: m.connsRefused,
	}
}

func (l *connLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			l.open.Inc()
			return &limitedConn{Conn: c, release: l.release}, nil
		default:
			l.refused.Inc()
			l.refuse(c)
		}
	}
}

func (l *connLimitListener) release() {
	<-l.slots
	l.open.Dec()
}

// refuse answers c with connRefusal in the background, bounded in time.
func (l *connLimitListener) refuse(c net.Conn) {
	select {
	case l.refusing <- struct{}{}:
	default:
		_ = c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if l.tlsConfig != nil {
			tc := tls.Server(c, l.tlsConfig)
			if err := tc.Handshake(); err != nil {
				return
			}
			c = tc
		}
		// The liveness probe is answered: a flood of connections is no
		// reason for the kubelet to restart the server (and lose its
		// memory of hot values), only for clients to wait. A probe sends
		// its request at once; a client that does not is refused without
		// waiting for it.
		answer := connRefusal
		_ = c.SetReadDeadline(time.Now().Add(probeHeadWait))
		req, err := http.ReadRequest(bufio.NewReaderSize(c, 4<<10))
		switch {
		case err != nil:
			answer = connIdleRefusal
		case req.Method == http.MethodGet && req.URL.Path == "/healthz":
			answer = connAlive
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(answer); err != nil {
			return
		}
		// Closing with the client's request unread would reset the
		// connection, and the client could lose the answer: end our side,
		// then read what it sent (briefly) before closing, as net/http does.
		if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			_, _ = io.Copy(io.Discard, io.LimitReader(c, 256<<10))
		}
	}()
}

// limitedConn gives its slot back once, when closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// CloseWrite and ReadFrom reach the TCP connection: the HTTP server
// half-closes before closing so the client reads its last answer, and
// serves value files with sendfile.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// NetConn is the connection it wraps (see sysConn).
func (c *limitedConn) NetConn() net.Conn { return c.Conn }

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// defaultMaxConnections leaves half of the process's file descriptors to
// the databases, value files and outgoing connections.
func defaultMaxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 1024
	}
	return int(max(min(rl.Cur/2, 1<<16), 16))
}
