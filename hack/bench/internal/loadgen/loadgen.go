// Package loadgen is the load generator of the HTTP benchmarks under
// hack/bench: a minimal HTTP/1.1 keep-alive client (one request in flight
// per connection, no pipelining) that costs about what redis-benchmark
// costs per request, and a closed loop that runs N such clients for a
// while and reports throughput and latency percentiles.
package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Conn is a keep-alive HTTP/1.1 connection with one request in flight.
// After an I/O error it dials again on the next request.
type Conn struct {
	addr   string
	frames bool // upgraded to frames (DialFrames)
	c      net.Conn
	br     *bufio.Reader
	hdr    []byte
}

// Dial connects to addr (host:port).
func Dial(addr string) (*Conn, error) {
	h := &Conn{addr: addr}
	if err := h.dial(); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *Conn) dial() error {
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		return err
	}
	h.c, h.br = c, bufio.NewReaderSize(c, 64<<10)
	if h.frames {
		if err := h.upgrade(); err != nil {
			h.Close()
			return err
		}
	}
	return nil
}

// Close closes the connection.
func (h *Conn) Close() {
	if h.c != nil {
		_ = h.c.Close()
		h.c = nil
	}
}

// Do sends one request (with value as its body when it is not nil) and
// reads the whole answer; it returns the status and the body length.
func (h *Conn) Do(method, path string, value []byte) (status, n int, err error) {
	if h.c == nil {
		if err := h.dial(); err != nil {
			return 0, 0, err
		}
	}
	if h.frames {
		status, n, err = h.doFrame(method, path, value)
	} else {
		status, n, err = h.do(method, path, value)
	}
	if err != nil {
		h.Close()
	}
	return status, n, err
}

func (h *Conn) do(method, path string, value []byte) (int, int, error) {
	h.hdr = h.hdr[:0]
	h.hdr = append(h.hdr, method...)
	h.hdr = append(h.hdr, ' ')
	h.hdr = append(h.hdr, path...)
	h.hdr = append(h.hdr, " HTTP/1.1\r\nHost: bench\r\n"...)
	if value != nil {
		h.hdr = append(h.hdr, "Diskcache-Value-Type: bytes\r\nContent-Length: "...)
		h.hdr = strconv.AppendInt(h.hdr, int64(len(value)), 10)
		h.hdr = append(h.hdr, "\r\n"...)
	}
	h.hdr = append(h.hdr, "\r\n"...)
	bufs := net.Buffers{h.hdr}
	if len(value) > 0 {
		bufs = append(bufs, value)
	}
	if _, err := bufs.WriteTo(h.c); err != nil {
		return 0, 0, err
	}
	line, err := h.br.ReadSlice('\n')
	if err != nil {
		return 0, 0, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, 0, fmt.Errorf("bad status line %q", line)
	}
	length, chunked, closeAfter := -1, false, false
	for {
		line, err := h.br.ReadSlice('\n')
		if err != nil {
			return 0, 0, err
		}
		if len(line) <= 2 {
			break
		}
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		val = bytes.TrimSpace(val)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(val)); err != nil {
				return 0, 0, fmt.Errorf("bad Content-Length %q", val)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(val, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			closeAfter = bytes.EqualFold(val, []byte("close"))
		}
	}
	n := 0
	switch {
	case chunked:
		for {
			line, err := h.br.ReadSlice('\n')
			if err != nil {
				return 0, 0, err
			}
			size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("bad chunk size %q", line)
			}
			if _, err := h.br.Discard(int(size) + 2); err != nil {
				return 0, 0, err
			}
			if size == 0 {
				break
			}
			n += int(size)
		}
	case length > 0:
		if _, err := h.br.Discard(length); err != nil {
			return 0, 0, err
		}
		n = length
	}
	if closeAfter {
		return status, n, errors.New("server closed the connection")
	}
	return status, n, nil
}

// Key is the name of key i of a benchmark's keyspace, and KeyPath its
// path under /v1/keys.
func Key(i int) string     { return "key:" + strconv.Itoa(100000+i) }
func KeyPath(i int) string { return "/v1/keys/" + Key(i) }

// Value returns a value of size bytes.
func Value(size int) []byte {
	v := make([]byte, size)
	for i := range v {
		v[i] = byte('a' + i%26)
	}
	return v
}

// Preload sets keys 0..keys-1 to a value of size bytes over 16
// connections, key i through the server at addr(i), so that GETs hit.
func Preload(keys, size int, addr func(i int) string) error {
	const conns = 16
	value := Value(size)
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			open := map[string]*Conn{}
			defer func() {
				for _, c := range open {
					c.Close()
				}
			}()
			for i := w; i < keys; i += conns {
				a := addr(i)
				c := open[a]
				if c == nil {
					var err error
					if c, err = Dial(a); err != nil {
						errs <- err
						return
					}
					open[a] = c
				}
				if status, _, err := c.Do("PUT", KeyPath(i), value); err != nil || status != 204 {
					errs <- fmt.Errorf("PUT %s to %s: status %d, %v", KeyPath(i), a, status, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// Request sends one request and waits for its answer; a non-nil error
// counts the request as failed. A worker calls its Request from one
// goroutine only.
type Request func() error

// Stats is what one run measured.
type Stats struct {
	Requests int64         // answered or failed
	Errors   int64         // failed requests
	Elapsed  time.Duration // from the start to the last answer
	P50, P99 float64       // latency of all requests, ms
	// FirstError is the first failure, when there were any.
	FirstError error
}

// PerSecond is the rate of successful requests.
func (s Stats) PerSecond() float64 {
	return float64(s.Requests-s.Errors) / s.Elapsed.Seconds()
}

// Run runs conns workers for d, each sending one request at a time and
// waiting for its answer. setup(w) prepares worker w before the clock
// starts (dialling its connections) and returns its Request and what to
// close when it is done.
func Run(conns int, d time.Duration, setup func(w int) (Request, func(), error)) (Stats, error) {
	return RunUntil(conns, d, nil, setup)
}

// RunUntil is Run that also ends, before d, once stop is closed (a nil
// stop never ends it early): for a window that must not outlast what it
// measures.
func RunUntil(conns int, d time.Duration, stop <-chan struct{}, setup func(w int) (Request, func(), error)) (Stats, error) {
	type worker struct {
		lat      []time.Duration
		errors   int64
		firstErr error
	}
	workers := make([]worker, conns)
	reqs := make([]Request, conns)
	for w := range workers {
		req, closeFn, err := setup(w)
		if err != nil {
			return Stats{}, fmt.Errorf("worker %d: %w", w, err)
		}
		defer closeFn()
		reqs[w] = req
	}
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wk := &workers[w]
			wk.lat = make([]time.Duration, 0, 1<<16)
			for {
				t0 := time.Now()
				if t0.After(end) {
					return
				}
				select {
				case <-stop:
					return
				default:
				}
				err := reqs[w]()
				wk.lat = append(wk.lat, time.Since(t0))
				if err != nil {
					wk.errors++
					if wk.firstErr == nil {
						wk.firstErr = err
					}
				}
			}
		}()
	}
	wg.Wait()
	s := Stats{Elapsed: time.Since(start)}
	var all []time.Duration
	for _, wk := range workers {
		all = append(all, wk.lat...)
		s.Errors += wk.errors
		if s.FirstError == nil {
			s.FirstError = wk.firstErr
		}
	}
	slices.Sort(all)
	s.Requests = int64(len(all))
	s.P50, s.P99 = Percentile(all, 0.50), Percentile(all, 0.99)
	return s, nil
}

// Percentile returns the p-th percentile (0..1) of sorted latencies, in ms.
func Percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return float64(sorted[i]) / float64(time.Millisecond)
}
