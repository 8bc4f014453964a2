package main

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// redis is a redis-server process started for the benchmark, with
// persistence on: appendonly yes, appendfsync everysec.
type redis struct {
	cmd       *exec.Cmd
	port      int
	benchmark string
	done      chan struct{}
	once      sync.Once
}

// redisTools finds redis-server and redis-benchmark, installing Debian's
// redis-server and redis-tools with apt-get when they are missing.
func redisTools(install bool) (server, benchmark string, err error) {
	look := func() error {
		var err error
		if server, err = exec.LookPath("redis-server"); err != nil {
			return err
		}
		benchmark, err = exec.LookPath("redis-benchmark")
		return err
	}
	if look() == nil {
		return server, benchmark, nil
	}
	if !install {
		return "", "", errors.New("redis-server or redis-benchmark not installed (apt-get install redis-server redis-tools)")
	}
	apt := func(args ...string) error {
		fmt.Fprintf(os.Stderr, "bench-server: apt-get %s\n", strings.Join(args, " "))
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, lastLines(out, 10))
		}
		return nil
	}
	install1 := []string{"install", "-y", "--no-install-recommends", "redis-server", "redis-tools"}
	if err := apt(install1...); err != nil {
		if err := apt("update"); err != nil {
			return "", "", err
		}
		if err := apt(install1...); err != nil {
			return "", "", err
		}
	}
	return server, benchmark, look()
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startRedis starts redis-server on a free loopback port with AOF
// persistence (fsync every second) in a directory of its own.
func startRedis(cfg config, work string) (*redis, error) {
	server, benchmark, err := redisTools(cfg.install)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(work, "redis-data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
		"--protected-mode", "yes", "--logfile", filepath.Join(dir, "redis.log")}
	cmd := exec.Command(server, args...)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &redis{cmd: cmd, port: port, benchmark: benchmark, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(r.done) }()
	// Ready when it accepts a connection and answers PING.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if pingRedis(port) == nil {
			break
		}
		select {
		case <-r.done:
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			return nil, fmt.Errorf("redis-server exited: %s", lastLines(log, 10))
		default:
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, errors.New("redis-server did not answer PING within 20s")
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness, bounded by the deadline
	}
	out, _ := exec.Command(server, "--version").Output()
	fmt.Fprintf(os.Stderr, "bench-server: %s on 127.0.0.1:%d (appendonly yes, appendfsync everysec)\n", strings.TrimSpace(string(out)), port)
	return r, nil
}

func pingRedis(port int) error {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(buf[:n], []byte("+PONG")) {
		return fmt.Errorf("PING answered %q", buf[:n])
	}
	return nil
}

func (r *redis) stop() {
	r.once.Do(func() {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	})
}

// benchmark runs redis-benchmark once and parses its CSV line.
func (r *redis) benchmark1(op string, size, conns, keys, n int) (result, error) {
	args := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(r.port), "-c", strconv.Itoa(conns),
		"-n", strconv.Itoa(n), "-d", strconv.Itoa(size), "-r", strconv.Itoa(keys), "-P", "1", "--csv"}
	if op == "mget" {
		// MGET of mgetKeys random keys (redis-benchmark replaces each
		// __rand_int__ with its own random number below -r).
		args = append(args, "MGET")
		for range mgetKeys {
			args = append(args, "key:__rand_int__")
		}
	} else {
		args = append(args, "-t", op)
	}
	start := time.Now()
	out, err := exec.Command(r.benchmark, args...).CombinedOutput()
	elapsed := time.Since(start)
	if err != nil {
		return result{}, fmt.Errorf("redis-benchmark %s: %v\n%s", strings.Join(args, " "), err, lastLines(out, 5))
	}
	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil || len(recs) < 2 {
		return result{}, fmt.Errorf("redis-benchmark output: %q", out)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	get := func(name string) float64 {
		i, ok := col[name]
		if !ok || i >= len(recs[1]) {
			return 0
		}
		f, _ := strconv.ParseFloat(recs[1][i], 64)
		return f
	}
	res := result{System: "redis", Op: op, Size: size, Conns: conns, Ops: int64(n), Secs: elapsed.Seconds(),
		RPS: get("rps"), P50: get("p50_latency_ms"), P99: get("p99_latency_ms")}
	if op == "mget" {
		res.Ops *= mgetKeys // keys per second
		res.RPS *= mgetKeys
	}
	if res.RPS == 0 {
		return result{}, fmt.Errorf("redis-benchmark output has no rps: %q", out)
	}
	return res, nil
}

// run runs one cell: a short calibration run, then a run sized to last
// about d. Before the first GET cell of a size, the keyspace is filled.
func (r *redis) run(op string, size, conns, keys int, d time.Duration) (result, error) {
	if op == "get" || op == "mget" {
		if _, err := r.benchmark1("set", size, 16, keys, 10*keys); err != nil {
			return result{}, err
		}
	}
	cal, err := r.benchmark1(op, size, conns, keys, 1000+200*conns)
	if err != nil {
		return result{}, err
	}
	n := int(cal.RPS * d.Seconds())
	if op == "mget" {
		n /= mgetKeys
	}
	n = max(1000, min(n, 5_000_000))
	return r.benchmark1(op, size, conns, keys, n)
}
