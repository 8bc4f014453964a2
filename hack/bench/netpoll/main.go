//go:build linux

// Command netpoll measures what Go's goroutine-per-connection serving costs
// per request, the way the cacheserver serves frames connections, against one
// thread that runs an epoll loop of its own (as redis-server does), on the
// smallest request the frames transport carries: a length-prefixed request of
// 50 bytes answered with 150, one request in flight per connection. Neither
// server does any work per request, so the difference is the cost of the
// serving model alone: the upper bound of what an event loop of our own could
// save (docs/benchmarks.md).
//
//	go run ./hack/bench/netpoll [-conns 8,64] [-rounds 3] [-duration 3s]
//
// Each server runs in a process of its own (this program, started again with
// -serve), so that its CPU time (/proc/PID/stat) is not the client's; rounds
// alternate the two servers, and the table shows the median of each figure.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	requestBytes = 50
	answerBytes  = 150
)

func main() {
	serve := flag.String("serve", "", "internal: be the server, goroutines or epoll")
	conns := flag.String("conns", "8,64", "connection counts, comma-separated")
	rounds := flag.Int("rounds", 3, "rounds of each cell; the table shows medians")
	duration := flag.Duration("duration", 3*time.Second, "length of each cell")
	flag.Parse()
	if *serve != "" {
		if err := runServer(*serve); err != nil {
			log.Fatal(err)
		}
		return
	}
	var counts []int
	for f := range strings.SplitSeq(*conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			log.Fatalf("-conns: %q is not a connection count", f)
		}
		counts = append(counts, n)
	}
	fmt.Printf("netpoll: %d CPUs, GOMAXPROCS %d, %s per cell, %d rounds\n\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), *duration, *rounds)
	fmt.Println("| conns | server | requests/s | server CPU µs/request |")
	fmt.Println("|---:|---|---:|---:|")
	for _, n := range counts {
		results := map[string][][2]float64{}
		for range *rounds {
			for _, mode := range []string{"goroutines", "epoll"} {
				rate, cpu, err := cell(mode, n, *duration)
				if err != nil {
					log.Fatalf("%s, %d conns: %v", mode, n, err)
				}
				results[mode] = append(results[mode], [2]float64{rate, cpu})
			}
		}
		for _, mode := range []string{"goroutines", "epoll"} {
			fmt.Printf("| %d | %s | %.0f | %.1f |\n", n, label(mode), median(results[mode], 0), median(results[mode], 1))
		}
	}
}

func label(mode string) string {
	if mode == "epoll" {
		return "one thread, epoll loop"
	}
	return "goroutine per connection (net)"
}

func median(rows [][2]float64, col int) float64 {
	v := make([]float64, len(rows))
	for i, r := range rows {
		v[i] = r[col]
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// cell starts a server, drives it with conns connections for d and returns
// the requests per second and the server's CPU time per request in µs.
func cell(mode string, conns int, d time.Duration) (float64, float64, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	cmd := exec.Command(self, "-serve", mode)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return 0, 0, fmt.Errorf("read the server's address: %w", err)
	}
	before, err := processCPU(cmd.Process.Pid)
	if err != nil {
		return 0, 0, err
	}
	n, err := drive(strings.TrimSpace(addr), conns, d)
	if err != nil {
		return 0, 0, err
	}
	after, err := processCPU(cmd.Process.Pid)
	if err != nil {
		return 0, 0, err
	}
	return float64(n) / d.Seconds(), (after - before).Seconds() * 1e6 / float64(n), nil
}

// processCPU is the user and system time of process pid.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const clockTicks = 100 // USER_HZ, 100 on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// drive sends requests over conns connections, one in flight on each, for d,
// and returns how many were answered.
func drive(addr string, conns int, d time.Duration) (int64, error) {
	req := make([]byte, 4+requestBytes)
	binary.BigEndian.PutUint32(req, requestBytes)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var answered atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return 0, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			buf := make([]byte, 4+answerBytes)
			for ctx.Err() == nil {
				if _, err := c.Write(req); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					errs <- err
					return
				}
				answered.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return answered.Load(), <-errs
}

func runServer(mode string) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(l.Addr())
	answer := make([]byte, 4+answerBytes)
	binary.BigEndian.PutUint32(answer, answerBytes)
	switch mode {
	case "goroutines":
		return serveGoroutines(l, answer)
	case "epoll":
		return serveEpoll(l.(*net.TCPListener), answer)
	}
	return fmt.Errorf("unknown server %q", mode)
}

// serveGoroutines serves each connection on a goroutine of its own that
// reads a frame and writes its answer, as the cacheserver's frames
// transport does.
func serveGoroutines(l net.Listener, answer []byte) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			buf := make([]byte, 4096)
			for {
				if _, err := io.ReadFull(r, buf[:4]); err != nil {
					return
				}
				n := binary.BigEndian.Uint32(buf[:4])
				if n > uint32(len(buf)) {
					return
				}
				if _, err := io.ReadFull(r, buf[:n]); err != nil {
					return
				}
				if _, err := c.Write(answer); err != nil {
					return
				}
			}
		}()
	}
}

// serveEpoll serves every connection from one OS thread: epoll_wait, then
// for each readable socket a read and an answer per complete frame.
func serveEpoll(l *net.TCPListener, answer []byte) error {
	runtime.LockOSThread()
	lf, err := l.File() // a blocking duplicate of the listener
	if err != nil {
		return err
	}
	lfd := int(lf.Fd())
	if err := syscall.SetNonblock(lfd, true); err != nil {
		return err
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	watch := func(fd int) error {
		return syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)})
	}
	if err := watch(lfd); err != nil {
		return err
	}
	pending := map[int][]byte{} // bytes of a frame not yet complete, per connection
	events := make([]syscall.EpollEvent, 128)
	buf := make([]byte, 64<<10)
	for {
		n, err := syscall.EpollWait(ep, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == lfd {
				for {
					cfd, _, err := syscall.Accept4(lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
					if err != nil {
						break
					}
					if syscall.SetsockoptInt(cfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1) != nil || watch(cfd) != nil {
						_ = syscall.Close(cfd)
					}
				}
				continue
			}
			m, err := syscall.Read(fd, buf)
			if err == syscall.EAGAIN || err == syscall.EINTR {
				continue
			}
			if err != nil || m == 0 {
				delete(pending, fd)
				_ = syscall.Close(fd) // also leaves the epoll set
				continue
			}
			data := append(pending[fd], buf[:m]...)
			for len(data) >= 4 && len(data) >= 4+int(binary.BigEndian.Uint32(data)) {
				data = data[4+int(binary.BigEndian.Uint32(data)):]
				// One request in flight per connection: the answer fits the
				// socket's send buffer, so a short write is a broken peer.
				if w, err := syscall.Write(fd, answer); err != nil || w != len(answer) {
					data = nil
					_ = syscall.Close(fd)
					break
				}
			}
			if len(data) > 0 {
				pending[fd] = append([]byte(nil), data...)
			} else {
				delete(pending, fd)
			}
		}
	}
}
