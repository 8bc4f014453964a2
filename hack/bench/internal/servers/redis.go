package servers

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
	"time"
)

// Durability is what the benchmarks' redis-server is started with: the
// durability a cache that survives restarts needs, to compare with
// cacheserver's SQLite.
const Durability = "appendonly yes, appendfsync everysec, no RDB snapshots"

// MGetKeys is the number of keys of one "mget" command (MGET on Redis, a
// batch get on cacheserver).
const MGetKeys = 100

// Redis is a redis-server process started for a benchmark, with
// persistence on (see Durability), and the redis-benchmark that drives it.
type Redis struct {
	Version   string // "redis-server 7.0.15"
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
		fmt.Fprintf(os.Stderr, "apt-get %s\n", strings.Join(args, " "))
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

// StartRedis starts redis-server on a free loopback port with its data in
// dir; install lets it apt-get redis-server and redis-tools when missing.
func StartRedis(dir string, install bool) (*Redis, error) {
	server, benchmark, err := redisTools(install)
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
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
	r := &Redis{cmd: cmd, port: port, benchmark: benchmark, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(r.done) }()
	// Ready when it accepts a connection and answers PING.
	deadline := time.Now().Add(20 * time.Second)
	for pingRedis(port) != nil {
		select {
		case <-r.done:
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			return nil, fmt.Errorf("redis-server exited: %s", lastLines(log, 10))
		default:
		}
		if time.Now().After(deadline) {
			r.Stop()
			return nil, errors.New("redis-server did not answer PING within 20s")
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness, bounded by the deadline
	}
	// "Redis server v=7.0.15 sha=... malloc=... bits=64 build=..."
	r.Version = "redis-server"
	out, _ := exec.Command(server, "--version").Output()
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			r.Version += " " + v
		}
	}
	fmt.Fprintf(os.Stderr, "%s on 127.0.0.1:%d (%s)\n", r.Version, port, Durability)
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

// PID is redis-server's process id.
func (r *Redis) PID() int { return r.cmd.Process.Pid }

// Port is the loopback port redis-server listens on.
func (r *Redis) Port() int { return r.port }

// Stop shuts redis-server down (SIGTERM), killing it after 30s.
func (r *Redis) Stop() {
	r.once.Do(func() { stop(r.cmd, r.done) })
}

// BenchmarkResult is what one redis-benchmark run reported.
type BenchmarkResult struct {
	Requests int           // -n
	Elapsed  time.Duration // of the redis-benchmark process
	RPS      float64       // commands per second
	P50, P99 float64       // ms
}

// Benchmark runs redis-benchmark once: n commands op ("get", "set", or
// "mget" of MGetKeys keys) with values of size bytes on random keys of a
// keyspace of keys, over conns connections with one command in flight
// each (-P 1), and parses its CSV line.
func (r *Redis) Benchmark(op string, size, conns, keys, n int) (BenchmarkResult, error) {
	args := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(r.port), "-c", strconv.Itoa(conns),
		"-n", strconv.Itoa(n), "-d", strconv.Itoa(size), "-r", strconv.Itoa(keys), "-P", "1", "--csv"}
	if op == "mget" {
		// redis-benchmark replaces each __rand_int__ with its own random
		// number below -r.
		args = append(args, "MGET")
		for range MGetKeys {
			args = append(args, "key:__rand_int__")
		}
	} else {
		args = append(args, "-t", op)
	}
	start := time.Now()
	out, err := exec.Command(r.benchmark, args...).CombinedOutput()
	elapsed := time.Since(start)
	if err != nil {
		return BenchmarkResult{}, fmt.Errorf("redis-benchmark %s: %v\n%s", strings.Join(args, " "), err, lastLines(out, 5))
	}
	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil || len(recs) < 2 {
		return BenchmarkResult{}, fmt.Errorf("redis-benchmark output: %q", out)
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
	res := BenchmarkResult{Requests: n, Elapsed: elapsed, RPS: get("rps"), P50: get("p50_latency_ms"), P99: get("p99_latency_ms")}
	if res.RPS == 0 {
		return BenchmarkResult{}, fmt.Errorf("redis-benchmark output has no rps: %q", out)
	}
	return res, nil
}

// Calibrate prepares a cell of op and returns the number of commands that
// makes it last about d: it fills the keyspace before reads, then times a
// short run.
func (r *Redis) Calibrate(op string, size, conns, keys int, d time.Duration) (int, error) {
	if op == "get" || op == "mget" {
		if _, err := r.Benchmark("set", size, 16, keys, 10*keys); err != nil {
			return 0, err
		}
	}
	cal, err := r.Benchmark(op, size, conns, keys, 1000+200*conns)
	if err != nil {
		return 0, err
	}
	return max(1000, min(int(cal.RPS*d.Seconds()), 5_000_000)), nil
}
