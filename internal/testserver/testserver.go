// Package testserver builds the cacheserver binary and runs it as a real
// process on a loopback port, for tests of the server, the Go client, the
// Python client and the operator.
package testserver

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	binDir    string // the directory Main made for the binary, removed when its tests end
	buildErr  error
)

// binDirEnv passes the directory Main made to the processes the test
// process starts: the fuzzing coordinator's workers build into it (or find
// the binary there) rather than into directories of their own, which the
// coordinator, stopping them, would leave behind.
const binDirEnv = "TESTSERVER_BIN_DIR"

// Main runs a package's tests and then removes the binary Binary built, so
// that each test process does not leave 20 MB behind in the temporary
// directory. A package whose tests start servers calls it from TestMain.
func Main(m *testing.M) {
	// Made now, before any test: a fuzzing coordinator starts its workers
	// without ever needing the binary itself. (On failure, Binary tries
	// again and reports it.)
	_, _ = sharedBinDir()
	code := m.Run()
	RemoveBinary()
	os.Exit(code)
}

// RemoveBinary removes the binary Binary built, if this process made its
// directory; for a TestMain that does more than Main.
func RemoveBinary() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// Binary builds cmd/cacheserver once per test process (once per fuzzing
// run: its workers share the coordinator's) and returns its path.
// CACHESERVER_BIN names a prebuilt binary instead.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("CACHESERVER_BIN"); p != "" {
			binPath = p
			return
		}
		binPath, buildErr = build()
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// build builds cmd/cacheserver into sharedBinDir, unless another process
// of the run has. Builds of several processes into the same directory each
// write a file of their own and rename it into place.
func build() (string, error) {
	dir, err := sharedBinDir()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "cacheserver")
	if _, err := os.Stat(path); err == nil {
		return path, nil // built by another process of this run
	}
	tmp := fmt.Sprintf("%s.%d", path, os.Getpid())
	cmd := exec.Command("go", "build", "-o", tmp, "github.com/diskcache-operator/diskcache-operator/cmd/cacheserver")
	cmd.Dir = moduleRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build cacheserver: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("go build cacheserver: %w", err)
	}
	return path, nil
}

// sharedBinDir returns the directory of binDirEnv, first making it (this
// process then removes it in RemoveBinary) and passing it on when no
// parent test process did.
func sharedBinDir() (string, error) {
	if dir := os.Getenv(binDirEnv); dir != "" {
		return dir, nil
	}
	dir, err := os.MkdirTemp("", "cacheserver-bin-")
	if err != nil {
		return "", err
	}
	binDir = dir
	return dir, os.Setenv(binDirEnv, dir)
}

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Server is a running cacheserver process.
type Server struct {
	URL  string // http://127.0.0.1:port
	Addr string
	// HealthURL and HealthAddr are of the health port, when the server
	// was started with --health-listen.
	HealthURL  string
	HealthAddr string
	Token      string
	DataDir    string
	Args       []string

	cmd  *exec.Cmd
	dir  string
	done chan struct{}
	err  error
	logs *logBuffer
}

// Options configure Start.
type Options struct {
	// DataDir is the cache directory; empty means a new temporary one.
	DataDir string
	// Token is the bearer token; empty means "test-token". NoAuth starts
	// the server with --insecure-no-auth.
	Token  string
	NoAuth bool
	// TokenFile is a token file the test manages (to rotate the token);
	// empty means a new one holding Token.
	TokenFile string
	// Args are extra flags.
	Args []string
	// Env is extra environment (KEY=VALUE).
	Env []string
	// Listen is the address; empty means 127.0.0.1:0.
	Listen string
	// Dir is the process's working directory; empty means the test's.
	Dir string
	// TLS serves https with a self-signed certificate for 127.0.0.1 (in a
	// cluster, shared by the shards, which verify each other with it).
	TLS bool
}

// Start runs a cacheserver and waits until it listens. The process is
// killed at the end of the test.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	Binary(t)
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(t.TempDir(), "data")
	}
	s := &Server{DataDir: opts.DataDir, dir: opts.Dir, done: make(chan struct{}), logs: &logBuffer{}}
	args := []string{"--data-dir", opts.DataDir, "--log-format", "json"}
	listen := opts.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	args = append(args, "--listen", listen)
	if opts.NoAuth {
		args = append(args, "--insecure-no-auth")
	} else {
		s.Token = opts.Token
		if s.Token == "" {
			s.Token = "test-token"
		}
		tokenFile := opts.TokenFile
		if tokenFile == "" {
			tokenFile = filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(tokenFile, []byte(s.Token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		args = append(args, "--token-file", tokenFile)
	}
	args = append(args, opts.Args...)
	s.Args = args
	if err := s.start(opts.Env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Kill() })
	return s
}

func (s *Server) start(env []string) error {
	s.cmd = exec.Command(binPath, s.Args...)
	s.cmd.Dir = s.dir
	// The server dies with the test process, also when it is killed (a
	// fuzz worker the coordinator stops does not run its cleanups).
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.cmd.Env = append(os.Environ(), env...)
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start cacheserver: %w", err)
	}
	s.done = make(chan struct{})
	addr := make(chan string, 1)
	// With --health-listen the server says "serving health" right after
	// "serving".
	healthAddr := make(chan string, 1)
	wantHealth := slices.Contains(s.Args, "--health-listen")
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		sent, sentHealth := false, !wantHealth
		for sc.Scan() {
			line := sc.Text()
			s.logs.add(line)
			if !sent || !sentHealth {
				var rec struct {
					Msg        string `json:"msg"`
					Addr       string `json:"addr"`
					HealthAddr string `json:"health_addr"`
				}
				if json.Unmarshal([]byte(line), &rec) == nil {
					switch {
					case rec.Msg == "serving" && !sent:
						addr <- rec.Addr
						sent = true
					case rec.Msg == "serving health" && !sentHealth:
						healthAddr <- rec.HealthAddr
						sentHealth = true
					}
				}
			}
		}
	}()
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	select {
	case a := <-addr:
		s.Addr = a
		scheme := "http://"
		if slices.Contains(s.Args, "--tls-cert") {
			scheme = "https://"
		}
		s.URL = scheme + a
		if !wantHealth {
			return nil
		}
		select {
		case h := <-healthAddr:
			s.HealthAddr, s.HealthURL = h, scheme+h
			return nil
		case <-s.done:
			return fmt.Errorf("cacheserver exited before serving its health port: %v\n%s", s.err, s.logs.String())
		}
	case <-s.done:
		return fmt.Errorf("cacheserver exited before serving: %v\n%s", s.err, s.logs.String())
	case <-time.After(60 * time.Second):
		s.Kill()
		return fmt.Errorf("cacheserver did not start within 60s\n%s", s.logs.String())
	}
}

// Restart starts the server again with the same arguments and address.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	for i, a := range s.Args {
		if a == "--listen" && i+1 < len(s.Args) {
			s.Args[i+1] = s.Addr
		}
	}
	if err := s.start(nil); err != nil {
		t.Fatal(err)
	}
}

// Kill sends SIGKILL and waits for the process.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Stop sends SIGTERM and waits for a graceful exit; it returns the exit
// error (nil for a clean exit).
func (s *Server) Stop(ctx context.Context) error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		return s.err
	case <-ctx.Done():
		s.Kill()
		return ctx.Err()
	}
}

// PID returns the process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Freeze stops the process (SIGSTOP), as a frozen pod or node: it keeps
// its sockets, the kernel still accepts connections for it, and nothing
// answers. It returns once the kernel shows it stopped (kill returns
// earlier, and a request sent meanwhile could still be answered); the
// test's end resumes it.
func (s *Server) Freeze(t testing.TB) {
	t.Helper()
	signalAndWait(t, s.PID(), syscall.SIGSTOP)
	t.Cleanup(func() { _ = syscall.Kill(s.PID(), syscall.SIGCONT) })
}

// Thaw resumes a frozen process and returns once it runs.
func (s *Server) Thaw(t testing.TB) {
	t.Helper()
	signalAndWait(t, s.PID(), syscall.SIGCONT)
}

func signalAndWait(t testing.TB, pid int, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatal(err)
	}
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// The state follows the command name in parentheses.
		stat := string(b)
		state := stat[strings.LastIndexByte(stat, ')')+2]
		if (state == 'T') == (sig == syscall.SIGSTOP) {
			return
		}
		runtime.Gosched()
	}
}

// Logs returns the server's log lines so far.
func (s *Server) Logs() string { return s.logs.String() }

type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuffer) add(s string) {
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// Cluster is several cacheservers serving one cache as the shards of one
// topology (epoch 1), each started with --shard-index, --peers and the
// operator's --admin-token-file.
type Cluster struct {
	Shards     []*Server
	URLs       []string
	AdminToken string
	// CertPool trusts the shards' certificate (with Options.TLS).
	CertPool *x509.CertPool
}

// StartCluster starts n shards on loopback ports reserved up front, so
// every shard knows every URL from the start.
func StartCluster(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{AdminToken: "test-admin-token"}
	scheme, tlsArgs := "http", []string(nil)
	if opts.TLS {
		certFile, keyFile, pool := SelfSignedCert(t, t.TempDir())
		c.CertPool = pool
		scheme, tlsArgs = "https", []string{"--tls-cert", certFile, "--tls-key", keyFile, "--peer-ca-file", certFile}
		opts.TLS = false
	}
	adminFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(adminFile, []byte(c.AdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrs := make([]string, n)
	// Every listener stays open until all ports are picked: closed at once,
	// a port could be handed out again for the next shard.
	var held []net.Listener
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
		addrs[i] = l.Addr().String()
		c.URLs = append(c.URLs, scheme+"://"+addrs[i])
	}
	for _, l := range held {
		l.Close()
	}
	for i := range addrs {
		o := opts
		o.DataDir = ""
		o.Listen = addrs[i]
		o.Args = append([]string{"--shard-index", strconv.Itoa(i), "--peers", strings.Join(c.URLs, ","),
			"--admin-token-file", adminFile}, append(tlsArgs, opts.Args...)...)
		c.Shards = append(c.Shards, Start(t, o))
	}
	return c
}
