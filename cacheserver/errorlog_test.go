package cacheserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// logRecords collects what a JSON slog handler writes, one map per record.
type logRecords struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logRecords) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logRecords) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// TestErrorLogBoundsHandshakeLines drives errorLog with a clock of its
// own: 50 failed handshakes within the interval make one line (the first)
// and count 50; the next one after the interval reports all 50 since;
// what is held back when serving ends is reported by flush. Other lines
// of net/http's are logged as they are, errorLogBurst per interval, and
// the ones held back are reported with the next line logged.
func TestErrorLogBoundsHandshakeLines(t *testing.T) {
	var out logRecords
	counter := prometheus.NewCounter(prometheus.CounterOpts{Name: "handshakes"})
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e := newErrorLog(slog.New(slog.NewJSONHandler(&out, nil)), counter, func() time.Time { return now }, time.Minute)
	l := e.logger()
	handshake := func(i int) {
		l.Printf("http: TLS handshake error from 127.0.0.1:%d: client sent an HTTP request to an HTTPS server", 30000+i)
	}
	for i := range 50 {
		handshake(i)
		now = now.Add(time.Second / 2) // 25 s in all: within the interval
	}
	if got := testutil.ToFloat64(counter); got != 50 {
		t.Fatalf("counter %v after 50 failed handshakes", got)
	}
	recs := out.records(t)
	if len(recs) != 1 || recs[0]["count"] != 1.0 || recs[0]["level"] != "WARN" ||
		!strings.Contains(recs[0]["last"].(string), "from 127.0.0.1:30000: client sent an HTTP request") {
		t.Fatalf("50 failed handshakes within the interval logged %v, want the first only", recs)
	}
	first := now.Add(-25 * time.Second)

	// After the interval, the next one reports the 49 held back and itself.
	now = first.Add(time.Minute)
	handshake(50)
	recs = out.records(t)
	if len(recs) != 2 || recs[1]["count"] != 50.0 || !strings.Contains(recs[1]["last"].(string), ":30050:") ||
		recs[1]["since"] != first.Format(time.RFC3339Nano) {
		t.Fatalf("the first failed handshake after the interval logged %v, want a count of 50 since %v", recs[1:], first)
	}
	for i := range 3 {
		handshake(51 + i)
	}

	// Other lines: errorLogBurst logged as they are, the rest held back.
	for i := range errorLogBurst + 5 {
		l.Printf("http2: server: error reading preface from client 127.0.0.1:%d: bogus greeting", 40000+i)
	}
	recs = out.records(t)[2:]
	if len(recs) != errorLogBurst {
		t.Fatalf("%d other lines logged of %d within the interval, want %d: %v", len(recs), errorLogBurst+5, errorLogBurst, recs)
	}
	if recs[0]["msg"] != "http2: server: error reading preface from client 127.0.0.1:40000: bogus greeting" || recs[0]["level"] != "WARN" {
		t.Fatalf("other line logged as %v, want net/http's text at WARN", recs[0])
	}
	now = now.Add(2 * time.Minute)
	l.Printf("http: panic serving 127.0.0.1:1: boom")
	recs = out.records(t)[2+errorLogBurst:]
	if len(recs) != 2 || recs[0]["count"] != 5.0 || !strings.Contains(recs[0]["last"].(string), ":40014:") ||
		recs[1]["msg"] != "http: panic serving 127.0.0.1:1: boom" {
		t.Fatalf("after the interval: %v, want the 5 held back reported, then the line", recs)
	}

	// Shutdown reports the 3 handshakes held back, once.
	e.flush()
	e.flush()
	recs = out.records(t)[4+errorLogBurst:]
	if len(recs) != 1 || recs[0]["count"] != 3.0 || !strings.Contains(recs[0]["last"].(string), ":30053:") {
		t.Fatalf("flush logged %v, want the 3 handshakes held back", recs)
	}
	if got := testutil.ToFloat64(counter); got != 54 {
		t.Fatalf("counter %v after 54 failed handshakes (other lines are not handshakes)", got)
	}
}

// TestTLSHandshakeErrorsAreCountedNotLogged: a real server on TLS, sent 50
// connections that fail their handshake in four ways (plain HTTP, a
// client that does not trust the certificate, bytes that are no TLS, a
// connection closed at once), counts 50 in
// diskcache_tls_handshake_errors_total and logs one line about them per
// interval; it logged one line per connection. An HTTP/2 client's bogus
// preface is logged as before, errorLogBurst lines per interval at most.
func TestTLSHandshakeErrorsAreCountedNotLogged(t *testing.T) {
	certFile, keyFile, pool := testserver.SelfSignedCert(t, t.TempDir())
	srv := testserver.Start(t, testserver.Options{Args: []string{"--tls-cert", certFile, "--tls-key", keyFile}})
	begun := time.Now()
	ways := []func() error{
		func() error { // plain HTTP: net/http answers 400
			resp, err := http.Get("http://" + srv.Addr + "/healthz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				return fmt.Errorf("plain HTTP answered %d", resp.StatusCode)
			}
			return nil
		},
		func() error { // the client does not trust the certificate
			c, err := tls.Dial("tcp", srv.Addr, &tls.Config{})
			if err == nil {
				c.Close()
				return fmt.Errorf("handshake without trusting the certificate succeeded")
			}
			return nil
		},
		func() error { // no TLS: the server reads a record header it refuses, then EOF
			return sendAndClose(srv.Addr, "\x16\x03\x01\x00\x04nope")
		},
		func() error { return sendAndClose(srv.Addr, "") }, // a TCP probe: EOF
	}
	for i := range 50 {
		if err := ways[i%len(ways)](); err != nil {
			t.Fatal(err)
		}
	}
	// An HTTP/2 client whose preface is an HTTP/1 request.
	bogus := errorLogBurst + 5
	for range bogus {
		c, err := tls.Dial("tcp", srv.Addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		if c.ConnectionState().NegotiatedProtocol != "h2" {
			t.Fatalf("negotiated %q, want h2", c.ConnectionState().NegotiatedProtocol)
		}
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		_, _ = io.Copy(io.Discard, c) // until the server closes
		c.Close()
	}

	scrape := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer scrape.CloseIdleConnections()
	// The server counts and logs after the client has given up: wait
	// until it has (the deadline only bounds a failure).
	var handshakeLines, greetingLines int
	var firstHandshake map[string]any
	for deadline := time.Now().Add(30 * time.Second); ; {
		n := tlsMetric(t, scrape, srv.URL)
		handshakeLines, greetingLines, firstHandshake = 0, 0, nil
		for _, line := range strings.Split(srv.Logs(), "\n") {
			if strings.Contains(line, "TLS handshake error") {
				handshakeLines++
				if firstHandshake == nil {
					_ = json.Unmarshal([]byte(line), &firstHandshake)
				}
			}
			if strings.Contains(line, "bogus greeting") {
				greetingLines++
			}
		}
		if n == 50 && handshakeLines > 0 && greetingLines > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter %v, %d lines about handshakes, %d about prefaces, want 50 and some lines:\n%s",
				n, handshakeLines, greetingLines, srv.Logs())
		}
		time.Sleep(50 * time.Millisecond) // between polls
	}
	// A line per interval at most, however long the test took (on a busy
	// machine a minute may have passed).
	windows := 1 + int(time.Since(begun)/errorLogInterval)
	if handshakeLines > windows {
		t.Fatalf("%d log lines about 50 failed handshakes over %d interval(s), want at most %d:\n%s",
			handshakeLines, windows, windows, srv.Logs())
	}
	if max := windows * (errorLogBurst + 1); greetingLines > max {
		t.Fatalf("%d log lines about %d bogus prefaces over %d interval(s), want at most %d:\n%s",
			greetingLines, bogus, windows, max, srv.Logs())
	}
	if last, _ := firstHandshake["last"].(string); firstHandshake["count"] != 1.0 ||
		!strings.HasPrefix(last, "http: TLS handshake error from 127.0.0.1:") {
		t.Fatalf("the first failed handshake logged as %v, want it with a count of 1", firstHandshake)
	}
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// sendAndClose opens a TCP connection to addr, writes data and closes it
// once the server has closed its side.
func sendAndClose(addr, data string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if data != "" {
		if _, err := io.WriteString(c, data); err != nil {
			return err
		}
	} else if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, c)
	return nil
}

// tlsMetric reads diskcache_tls_handshake_errors_total from base's /metrics.
func tlsMetric(t *testing.T, c *http.Client, base string) float64 {
	t.Helper()
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "diskcache_tls_handshake_errors_total "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no diskcache_tls_handshake_errors_total in /metrics:\n%s", b)
	return 0
}
