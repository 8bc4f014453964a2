package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cacheserver is a cacheserver process started for the benchmark.
type cacheserver struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
	once sync.Once
}

// startCacheserver builds (unless -cacheserver names a binary) and starts a
// cacheserver on a free loopback port, without auth.
func startCacheserver(cfg config, work string) (*cacheserver, error) {
	bin := cfg.cacheBin
	if bin == "" {
		root, err := moduleRoot()
		if err != nil {
			return nil, err
		}
		bin = filepath.Join(work, "cacheserver")
		fmt.Fprintf(os.Stderr, "bench-server: go build ./cmd/cacheserver\n")
		build := exec.Command("go", "build", "-o", bin, "./cmd/cacheserver")
		build.Dir = root
		build.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	args := append([]string{"--data-dir", filepath.Join(work, "cacheserver-data"), "--listen", "127.0.0.1:0",
		"--insecure-no-auth", "--log-format", "json"}, cfg.cacheArgs...)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &cacheserver{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent := false
		for sc.Scan() {
			var rec struct {
				Msg   string `json:"msg"`
				Addr  string `json:"addr"`
				Level string `json:"level"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) != nil {
				continue
			}
			if !sent && rec.Msg == "serving" {
				addr <- rec.Addr
				sent = true
			}
			if rec.Level == "ERROR" {
				fmt.Fprintf(os.Stderr, "cacheserver: %s\n", sc.Text())
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(s.done) }()
	select {
	case s.addr = <-addr:
	case <-s.done:
		return nil, errors.New("cacheserver exited before serving")
	case <-time.After(60 * time.Second):
		s.stop()
		return nil, errors.New("cacheserver did not start within 60s")
	}
	fmt.Fprintf(os.Stderr, "bench-server: cacheserver serving on %s (%s)\n", s.addr, strings.Join(args, " "))
	return s, nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run from inside the diskcache-operator module")
	}
	return filepath.Dir(mod), nil
}

// stop shuts the server down gracefully (SIGTERM), killing it after 30s.
func (s *cacheserver) stop() {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
}

// httpConn is a minimal HTTP/1.1 keep-alive client connection: one request
// in flight, answers read with their Content-Length (or chunked).
type httpConn struct {
	addr string
	c    net.Conn
	br   *bufio.Reader
	hdr  []byte
	body []byte
}

func dial(addr string) (*httpConn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &httpConn{addr: addr, c: c, br: bufio.NewReaderSize(c, 64<<10)}, nil
}

func (h *httpConn) close() { _ = h.c.Close() }

// do sends one request and reads the whole answer; it returns the status
// and the body length.
func (h *httpConn) do(method, path string, value []byte) (int, int, error) {
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

// mgetKeys is the number of keys of one "mget" request (a batch get on
// cacheserver, an MGET on Redis); mget cells count keys per second.
const mgetKeys = 100

func benchKey(i int) string { return "/v1/keys/key:" + strconv.Itoa(100000+i) }

func benchValue(size int) []byte {
	v := make([]byte, size)
	for i := range v {
		v[i] = byte('a' + i%26)
	}
	return v
}

// preload sets every key of the keyspace to a value of size bytes, so GETs hit.
func (s *cacheserver) preload(keys, size int) error {
	value := benchValue(size)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc, err := dial(s.addr)
			if err != nil {
				errs <- err
				return
			}
			defer hc.close()
			for i := w; i < keys; i += 16 {
				status, _, err := hc.do("PUT", benchKey(i), value)
				if err != nil || status != 204 {
					errs <- fmt.Errorf("PUT %s: %d %v", benchKey(i), status, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// run runs one cell: conns connections, each sending op requests for random
// keys, one at a time, for d.
func (s *cacheserver) run(op string, size, conns, keys int, d time.Duration) result {
	value := benchValue(size)
	type worker struct {
		lat    []time.Duration
		errors int64
	}
	workers := make([]worker, conns)
	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	var end time.Time
	for w := range workers {
		ready.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			wk := &workers[w]
			wk.lat = make([]time.Duration, 0, 1<<16)
			hc, err := dial(s.addr)
			ready.Done()
			if err != nil {
				wk.errors++
				return
			}
			defer func() { hc.close() }()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(size)))
			<-start
			var mget []byte
			for {
				t0 := time.Now()
				if t0.After(end) {
					return
				}
				var status, n int
				var err error
				ok := false
				switch op {
				case "set":
					status, n, err = hc.do("PUT", benchKey(rng.IntN(keys)), value)
					ok = err == nil && status == 204
				case "mget":
					// One batch get of mgetKeys random keys.
					mget = append(mget[:0], `{"keys":[`...)
					for k := 0; k < mgetKeys; k++ {
						if k > 0 {
							mget = append(mget, ',')
						}
						mget = append(mget, `{"key":"key:`...)
						mget = strconv.AppendInt(mget, int64(100000+rng.IntN(keys)), 10)
						mget = append(mget, `"}`...)
					}
					mget = append(mget, "]}"...)
					status, n, err = hc.do("POST", "/v1/batch/get", mget)
					ok = err == nil && status == 200 && n >= mgetKeys*size
				default:
					status, n, err = hc.do("GET", benchKey(rng.IntN(keys)), nil)
					ok = err == nil && status == 200 && n == size
				}
				wk.lat = append(wk.lat, time.Since(t0))
				if !ok {
					wk.errors++
					if err != nil {
						hc.close()
						if hc, err = dial(s.addr); err != nil {
							return
						}
					}
				}
			}
		}()
	}
	ready.Wait()
	t0 := time.Now()
	end = t0.Add(d)
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	var all []time.Duration
	var errs int64
	for _, wk := range workers {
		all = append(all, wk.lat...)
		errs += wk.errors
	}
	slices.Sort(all)
	ops := int64(len(all)) - errs
	if op == "mget" {
		ops *= mgetKeys // keys per second
	}
	return result{System: "cacheserver", Op: op, Size: size, Conns: conns, Ops: ops, Errors: errs,
		Secs: elapsed.Seconds(), RPS: float64(ops) / elapsed.Seconds(),
		P50: percentile(all, 0.50), P99: percentile(all, 0.99)}
}
