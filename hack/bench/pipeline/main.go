// Command pipeline measures what HTTP/1.1 pipelining would save the
// cacheserver per GET: N connections, each writing -depth GET requests in
// one write and then reading the -depth answers, against a cacheserver it
// starts, reporting GETs per second and the server's CPU per GET for each
// depth. Depth 1 is bench-server's load. With -transports http,frames the
// same load also goes over connections upgraded to frames
// (docs/api/frames.md), side by side. Not part of make bench-json: an
// experiment for docs/benchmarks.md ("Serving path").
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/loadgen"
	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/machine"
	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/servers"
)

func main() {
	conns := flag.Int("conns", 8, "connections")
	depths := flag.String("depths", "1,2,4,8,16", "requests written together per connection, comma-separated")
	duration := flag.Duration("duration", 3*time.Second, "length of each cell")
	rounds := flag.Int("rounds", 3, "rounds (cells interleaved); the table shows the median")
	keys := flag.Int("keys", 1000, "keyspace")
	transports := flag.String("transports", "http", "comma-separated: http, frames")
	bin := flag.String("cacheserver", "", "prebuilt cacheserver binary (default: go build ./cmd/cacheserver)")
	flag.Parse()

	work, err := os.MkdirTemp("", "bench-pipeline-")
	check(err)
	defer os.RemoveAll(work)
	if *bin == "" {
		*bin, err = servers.BuildCacheserver(work)
		check(err)
	}
	cs, err := servers.StartCacheserver(*bin, []string{"--data-dir", filepath.Join(work, "data"), "--listen", "127.0.0.1:0",
		"--insecure-no-auth", "--log-format", "json"})
	check(err)
	defer cs.Stop()
	check(loadgen.Preload(*keys, 100, func(int) string { return cs.Addr }))
	clock, err := servers.NewCPUClock()
	check(err)

	var ds []int
	for _, f := range strings.Split(*depths, ",") {
		d, err := strconv.Atoi(f)
		check(err)
		ds = append(ds, d)
	}
	type cell struct {
		transport string
		depth     int
	}
	var cells []cell
	for _, tr := range strings.Split(*transports, ",") {
		if tr != "http" && tr != "frames" {
			check(fmt.Errorf("unknown transport %q", tr))
		}
		for _, d := range ds {
			cells = append(cells, cell{tr, d})
		}
	}
	rps := map[cell][]float64{}
	cpu := map[cell][]float64{}
	for r := 0; r < *rounds; r++ {
		for _, c := range cells {
			before, err := clock.Used(cs.PID())
			check(err)
			n, secs := run(cs.Addr, c.transport == "frames", *conns, c.depth, *keys, *duration)
			after, err := clock.Used(cs.PID())
			check(err)
			rps[c] = append(rps[c], float64(n)/secs)
			cpu[c] = append(cpu[c], float64(after-before)/float64(time.Microsecond)/float64(n))
			fmt.Fprintf(os.Stderr, "round %d %-6s depth %2d: %8.0f GET/s, %5.1f µs server CPU per GET\n", r+1, c.transport, c.depth, float64(n)/secs, cpu[c][len(cpu[c])-1])
		}
	}
	fmt.Printf("| transport | depth | GET/s | server CPU µs/GET |\n|---|--:|--:|--:|\n")
	for _, c := range cells {
		fmt.Printf("| %s | %d | %.0f | %.1f |\n", c.transport, c.depth, median(rps[c]), median(cpu[c]))
	}
	fmt.Printf("\n%d connections, 100 B values, %s per cell, median of %d rounds; %s; load average %s\n",
		*conns, *duration, *rounds, machine.CPUModel(), machine.LoadAverage())
}

// run keeps conns connections busy for d, each writing depth GETs at once
// and reading their answers; it returns the answered GETs and the seconds.
func run(addr string, frames bool, conns, depth, keys int, d time.Duration) (int64, float64) {
	var total atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			check(err)
			defer c.Close()
			br := bufio.NewReaderSize(c, 64<<10)
			if frames {
				check(loadgen.UpgradeToFrames(c, br))
			}
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var req []byte
			for time.Now().Before(deadline) {
				req = req[:0]
				for range depth {
					if frames {
						req, err = loadgen.AppendFrameHead(req, "GET", loadgen.KeyPath(rng.IntN(keys)), nil)
						check(err)
					} else {
						req = append(req, "GET "+loadgen.KeyPath(rng.IntN(keys))+" HTTP/1.1\r\nHost: bench\r\n\r\n"...)
					}
				}
				_, err := c.Write(req)
				check(err)
				for range depth {
					if frames {
						check(readFrame(br))
					} else {
						check(readAnswer(br))
					}
				}
				total.Add(int64(depth))
			}
		}()
	}
	wg.Wait()
	return total.Load(), time.Since(start).Seconds()
}

// readFrame reads one 200 answer frame.
func readFrame(br *bufio.Reader) error {
	var n [4]byte
	if _, err := io.ReadFull(br, n[:]); err != nil {
		return err
	}
	head := make([]byte, binary.BigEndian.Uint32(n[:]))
	if _, err := io.ReadFull(br, head); err != nil {
		return err
	}
	if len(head) < 2 || binary.BigEndian.Uint16(head) != 200 {
		return fmt.Errorf("answer frame %q", head)
	}
	for {
		if _, err := io.ReadFull(br, n[:]); err != nil {
			return err
		}
		size := binary.BigEndian.Uint32(n[:])
		if size == 0 {
			return nil
		}
		if _, err := br.Discard(int(size)); err != nil {
			return err
		}
	}
}

// readAnswer reads one 200 answer with a Content-Length body.
func readAnswer(br *bufio.Reader) error {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200")) {
		return fmt.Errorf("answer %q", line)
	}
	length := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if name, val, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(name, []byte("Content-Length")) {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(val)))
		}
	}
	if length < 0 {
		return fmt.Errorf("answer without Content-Length")
	}
	_, err = io.CopyN(io.Discard, br, int64(length))
	return err
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "pipeline:", err)
		os.Exit(1)
	}
}
