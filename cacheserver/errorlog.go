package cacheserver

import (
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// net/http writes to http.Server.ErrorLog what it cannot answer a client
// with, and much of it is the client's doing: a failed TLS handshake (a
// plain-HTTP request on the TLS port, a client not trusting the
// certificate, a TCP probe or scanner closing at once), an HTTP/2 client's
// bogus preface, protocol error or GOAWAY with an error code. Anyone who can
// reach the port could fill the log with such lines, one per connection or
// request, so errorLog bounds them.
const (
	// errorLogInterval is the window within which errorLog logs at most
	// one line about TLS handshakes and errorLogBurst other lines (the
	// lines it logs say "a minute" and "10").
	errorLogInterval = time.Minute
	errorLogBurst    = 10
	// tlsHandshakePrefix starts net/http's line for a failed handshake.
	tlsHandshakePrefix = "http: TLS handshake error from "
)

// errorLog is the writer behind http.Server.ErrorLog (log.Logger writes
// each line with one Write). It counts failed TLS handshakes in
// diskcache_tls_handshake_errors_total and logs one line about them per
// errorLogInterval at most: the count since the previous such line and the
// last error. Other lines are logged as before (WARN, net/http's text),
// errorLogBurst per interval at most; the ones beyond are counted and
// reported with the next line logged.
//
// It runs no goroutine: a line goes out when a new one arrives after the
// interval has passed, and flush (on shutdown) reports what was held
// back since. Between the two, the metric is current; a log line about
// errors that stopped coming would say nothing the metric does not.
type errorLog struct {
	log        *slog.Logger
	handshakes prometheus.Counter
	now        func() time.Time
	interval   time.Duration

	mu    sync.Mutex
	tls   logWindow
	other logWindow
}

// logWindow holds back the lines beyond burst within an interval.
type logWindow struct {
	burst int
	// start is when the current window opened; zero before the first line.
	start time.Time
	// logged counts the lines logged in the current window.
	logged int
	// held counts the lines held back since the last one logged, last is
	// the latest of them, and since is when the last one was logged.
	held  int
	last  string
	since time.Time
}

// admit says whether line, arriving at now, is to be logged; if so, it
// hands over the count of lines held back before it, the latest of them
// and when the last line was logged (zero for the first), and forgets them.
func (w *logWindow) admit(now time.Time, line string, interval time.Duration) (ok bool, held int, last string, since time.Time) {
	if w.start.IsZero() || now.Sub(w.start) >= interval {
		w.start, w.logged = now, 0
	}
	if w.logged >= w.burst {
		w.held++
		w.last = line
		return false, 0, "", time.Time{}
	}
	w.logged++
	held, last, since = w.held, w.last, w.since
	w.held, w.last, w.since = 0, "", now
	return true, held, last, since
}

// flush hands over the lines held back since the last one logged, and
// forgets them.
func (w *logWindow) flush() (held int, last string, since time.Time) {
	held, last, since = w.held, w.last, w.since
	w.held, w.last = 0, ""
	return held, last, since
}

func newErrorLog(l *slog.Logger, handshakes prometheus.Counter, now func() time.Time, interval time.Duration) *errorLog {
	return &errorLog{log: l, handshakes: handshakes, now: now, interval: interval,
		tls: logWindow{burst: 1}, other: logWindow{burst: errorLogBurst}}
}

// logger is the *log.Logger for http.Server.ErrorLog.
func (e *errorLog) logger() *log.Logger { return log.New(e, "", 0) }

func (e *errorLog) Write(p []byte) (int, error) {
	line := strings.TrimSuffix(string(p), "\n")
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	if strings.HasPrefix(line, tlsHandshakePrefix) {
		e.handshakes.Inc()
		if ok, held, _, since := e.tls.admit(now, line, e.interval); ok {
			e.reportHandshakes(held+1, line, since)
		}
		return len(p), nil
	}
	if ok, held, last, since := e.other.admit(now, line, e.interval); ok {
		if held > 0 {
			e.reportOther(held, last, since)
		}
		e.log.Warn(line)
	}
	return len(p), nil
}

// flush reports the lines held back since the last one logged; the
// server calls it when it stops serving.
func (e *errorLog) flush() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if held, last, since := e.tls.flush(); held > 0 {
		e.reportHandshakes(held, last, since)
	}
	if held, last, since := e.other.flush(); held > 0 {
		e.reportOther(held, last, since)
	}
}

// reportHandshakes logs n failed handshakes since the time given (zero:
// n is the first), the latest with net/http's line last.
func (e *errorLog) reportHandshakes(n int, last string, since time.Time) {
	attrs := []any{slog.Int("count", n), slog.String("last", last)}
	if !since.IsZero() {
		attrs = append(attrs, slog.Time("since", since))
	}
	e.log.Warn("TLS handshake errors (logged at most once a minute, all counted in diskcache_tls_handshake_errors_total)", attrs...)
}

// reportOther logs that n lines of net/http's were held back since the
// time given, the latest of them last.
func (e *errorLog) reportOther(n int, last string, since time.Time) {
	e.log.Warn("net/http error log lines held back (logged at most 10 a minute)",
		slog.Int("count", n), slog.String("last", last), slog.Time("since", since))
}
