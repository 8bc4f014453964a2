// Command routing measures what routing keys between shards costs:
//
//  1. the latency and server CPU a forwarded request adds to a direct one
//     (3 shards on loopback; GET and SET with 1 and 16 connections, sent
//     to the key's owner or to a shard that forwards it);
//  2. the throughput of 1, 2 and 3 shards reached through one URL (every
//     request to shard 0, which forwards what it does not own: what a
//     Service gives a client that does not route) against a smart client
//     that sends each key to its owner (64 connections);
//  3. redis-server (persistence on) driven by redis-benchmark at the same
//     connection counts, measured in the same run as the reference.
//
// It prints one markdown table per part; `make bench-routing` runs it and
// docs/benchmarks.md explains the columns. Any failed request, a shard
// that does not answer, or a request forwarded other than the benchmark
// meant ends it with an error and no table.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/machine"
	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/servers"
)

type config struct {
	duration  time.Duration
	keys      int
	size      int
	cacheBin  string
	cacheArgs []string
	install   bool
	jsonOut   string
	keep      bool
}

// Where the load generator sends a key.
const (
	toOwner    = "owner"     // straight to the owner: a smart client
	toNonOwner = "non-owner" // to a random other shard, which forwards it
	toShard0   = "shard 0"   // always to shard 0: one URL for every key
)

// cell is one measurement.
type cell struct {
	Part      int     `json:"part"`
	System    string  `json:"system"`           // cacheserver or redis
	Shards    int     `json:"shards,omitempty"` // cacheserver only
	SentTo    string  `json:"sent_to,omitempty"`
	Op        string  `json:"op"`
	Size      int     `json:"value_bytes"`
	Conns     int     `json:"conns"`
	Requests  int64   `json:"requests"`
	Forwarded int64   `json:"forwarded"` // requests one shard passed to another
	Seconds   float64 `json:"seconds"`
	RPS       float64 `json:"ops_per_second"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	CPUPerOp  float64 `json:"server_cpu_us_per_op"` // all shard processes (or redis-server) together
}

// report is what -json writes.
type report struct {
	Date        string   `json:"date"`
	CPU         string   `json:"cpu"`
	NumCPU      int      `json:"nproc"`
	LoadBefore  string   `json:"load_average_before"`
	LoadAfter   string   `json:"load_average_after"`
	Cacheserver []string `json:"cacheserver_args"`
	Redis       string   `json:"redis"`
	Durability  string   `json:"redis_durability"`
	Keys        int      `json:"keys"`
	Duration    string   `json:"duration_per_cell"`
	Cells       []cell   `json:"cells"`
}

func main() {
	var cfg config
	var extra string
	flag.DurationVar(&cfg.duration, "duration", 3*time.Second, "how long each cell runs (redis-benchmark cells are sized to about as long)")
	flag.IntVar(&cfg.keys, "keys", 1000, "keyspace: each request picks one of this many keys at random")
	flag.IntVar(&cfg.size, "size", 100, "value size in bytes")
	flag.StringVar(&cfg.cacheBin, "cacheserver", "", "prebuilt cacheserver binary (default: go build ./cmd/cacheserver)")
	flag.StringVar(&extra, "cacheserver-args", "", "extra flags for every shard, space-separated (e.g. \"--fanout 4\")")
	flag.BoolVar(&cfg.install, "install-redis", true, "apt-get install redis-server and redis-tools when missing")
	flag.StringVar(&cfg.jsonOut, "json", "", "also write the results to this JSON file")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the data directories")
	flag.Parse()
	if cfg.keys < 1 || cfg.size < 1 || cfg.duration <= 0 {
		fatal(fmt.Errorf("-keys, -size and -duration must be positive"))
	}
	cfg.cacheArgs = strings.Fields(extra)

	rep, err := servers.RunStopping(func(stops *servers.Stops) (*report, error) { return run(cfg, stops) })
	if err != nil {
		fatal(err)
	}
	printReport(os.Stdout, rep)
	if err := servers.WriteJSON(cfg.jsonOut, rep); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "bench-routing: %v\n", err)
	os.Exit(1)
}

func run(cfg config, stops *servers.Stops) (*report, error) {
	start := time.Now()
	rep := &report{Date: start.UTC().Format("2006-01-02 15:04 MST"), CPU: machine.CPUModel(), NumCPU: runtime.NumCPU(),
		LoadBefore: machine.LoadAverage(), Keys: cfg.keys, Duration: cfg.duration.String(), Durability: servers.Durability}
	fmt.Fprintf(os.Stderr, "bench-routing: %d CPUs, load average %s, %s per cell\n", rep.NumCPU, rep.LoadBefore, cfg.duration)
	clock, err := servers.NewCPUClock()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "bench-routing-")
	if err != nil {
		return nil, err
	}
	if !cfg.keep {
		stops.Add(func() { _ = os.RemoveAll(work) })
	}
	bin := cfg.cacheBin
	if bin == "" {
		if bin, err = servers.BuildCacheserver(work); err != nil {
			return nil, err
		}
	}
	rs, err := servers.StartRedis(filepath.Join(work, "redis"), cfg.install)
	if err != nil {
		return nil, fmt.Errorf("redis, the reference: %w", err)
	}
	stops.Add(rs.Stop)
	rep.Redis = rs.Version

	b := &bench{cfg: cfg, clock: clock, redis: rs}
	// The 3-shard cluster serves parts 1 and 2; the Redis cells run next to
	// the cacheserver cells they are the reference of, so that both see
	// about the same machine when it is shared with other work.
	for _, n := range []int{3, 2, 1} {
		c, err := startCluster(bin, filepath.Join(work, fmt.Sprintf("shards-%d", n)), n, cfg)
		if err != nil {
			return nil, err
		}
		stops.Add(c.stop)
		if err := c.preload(cfg.keys, cfg.size); err != nil {
			return nil, err
		}
		if err := b.warmUp(c); err != nil {
			return nil, err
		}
		for _, op := range []string{"get", "set"} {
			if n == 3 {
				for _, conns := range []int{1, 16} {
					for _, to := range []string{toOwner, toNonOwner} {
						if err := b.cacheserver(1, c, to, op, conns); err != nil {
							return nil, err
						}
					}
					if err := b.redisCell(op, conns); err != nil {
						return nil, err
					}
				}
			}
			for _, to := range []string{toShard0, toOwner} {
				if err := b.cacheserver(2, c, to, op, 64); err != nil {
					return nil, err
				}
			}
			if n == 3 {
				if err := b.redisCell(op, 64); err != nil {
					return nil, err
				}
			}
		}
		c.stop()
	}
	rep.Cells = b.cells
	rep.Cacheserver = cfg.cacheArgs
	rep.LoadAfter = machine.LoadAverage()
	fmt.Fprintf(os.Stderr, "bench-routing: done in %s\n", time.Since(start).Round(time.Second))
	return rep, nil
}
