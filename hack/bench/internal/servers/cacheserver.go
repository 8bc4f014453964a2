// Package servers starts and watches the server processes that the HTTP
// benchmarks under hack/bench measure: cacheserver built from this
// checkout, and redis-server as the reference.
package servers

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BuildCacheserver builds ./cmd/cacheserver of the module the benchmark
// runs in into dir and returns the binary's path.
func BuildCacheserver(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run from inside the diskcache-operator module")
	}
	bin := filepath.Join(dir, "cacheserver")
	fmt.Fprintf(os.Stderr, "go build ./cmd/cacheserver\n")
	build := exec.Command("go", "build", "-o", bin, "./cmd/cacheserver")
	build.Dir = filepath.Dir(mod)
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// Cacheserver is a cacheserver process started for a benchmark.
type Cacheserver struct {
	Addr string // host:port it serves on
	cmd  *exec.Cmd
	done chan struct{}
	once sync.Once
}

// StartCacheserver starts bin with args (which must include --data-dir and
// --listen, and --log-format json) and waits until it logs that it is
// serving. Its error log lines are copied to stderr.
func StartCacheserver(bin string, args []string) (*Cacheserver, error) {
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Cacheserver{cmd: cmd, done: make(chan struct{})}
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
				fmt.Fprintf(os.Stderr, "cacheserver: %s\n", sc.Text())
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
	case s.Addr = <-addr:
	case <-s.done:
		return nil, fmt.Errorf("cacheserver %s exited before serving", strings.Join(args, " "))
	case <-time.After(60 * time.Second):
		s.Stop()
		return nil, errors.New("cacheserver did not start within 60s")
	}
	fmt.Fprintf(os.Stderr, "cacheserver serving on %s (%s)\n", s.Addr, strings.Join(args, " "))
	return s, nil
}

// PID is the server's process id.
func (s *Cacheserver) PID() int { return s.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (s *Cacheserver) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Stop shuts the server down gracefully (SIGTERM), killing it after 30s.
func (s *Cacheserver) Stop() {
	s.once.Do(func() { stop(s.cmd, s.done) })
}

func stop(cmd *exec.Cmd, done <-chan struct{}) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
