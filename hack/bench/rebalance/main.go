// Command rebalance measures what changing the number of shards costs,
// on a pair of cacheserver processes on loopback moving from a layout of
// one shard (A) to two (A and B), the way the operator grows a cache: B
// starts with the old layout, then both get the announcement of the next
// epoch with the previous layout, and the move ends when both report
// rebalancing=false.
//
//  1. Transfer: A holds N items of one value size (small values, and
//     values above disk_min_file_size, stored and streamed as files); the
//     time from the announcement until both shards report the end gives
//     items/s and MiB/s (value bytes) moved from A to B, once per
//     --rebalance-rate setting (the default cap, and 0: no cap).
//  2. Traffic: GET and SET of small values (at once, each on its own
//     connections), each request sent to the key's owner, before the move
//     (1 shard), during it (1 → 2, with bulk data to hand off sized from
//     part 1 so the move outlasts the window; the window ends early if the
//     move ends), and after it ended (2 shards).
//
// It prints one markdown table per part; `make bench-rebalance` runs it
// and docs/benchmarks.md explains the columns. A failed request, a shard
// that does not answer, or a move that moved other keys than those the new
// shard owns ends it with an error and no table.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/machine"
	"github.com/diskcache-operator/diskcache-operator/hack/bench/internal/servers"
)

type config struct {
	fill      []fillSpec
	rates     []rateSpec
	duration  time.Duration
	keys      int
	size      int
	conns     int
	bulkSize  int
	maxBulk   int64
	traffic   bool
	cacheBin  string
	cacheArgs []string
	jsonOut   string
	keep      bool
}

// fillSpec is one transfer cell's data: count values of size bytes.
type fillSpec struct{ size, count int }

// rateSpec is a --rebalance-rate setting: its name in the tables and the
// flags that set it (none for the default).
type rateSpec struct {
	Name string
	Args []string
}

// report is what -json writes.
type report struct {
	Date        string         `json:"date"`
	CPU         string         `json:"cpu"`
	NumCPU      int            `json:"nproc"`
	LoadBefore  string         `json:"load_average_before"`
	LoadAfter   string         `json:"load_average_after"`
	Cacheserver []string       `json:"cacheserver_args"`
	Duration    string         `json:"traffic_window"`
	Keys        int            `json:"traffic_keys"`
	Size        int            `json:"traffic_value_bytes"`
	Conns       int            `json:"traffic_conns_per_op"`
	Transfer    []transferCell `json:"transfer"`
	Traffic     []trafficCell  `json:"traffic"`
	Moves       []moveCell     `json:"moves_under_traffic"`
}

func main() {
	var cfg config
	var fill, rates, extra string
	flag.StringVar(&fill, "fill", "100:20000,4096:4000,262144:256", "part 1: value size:count of each transfer cell, comma-separated")
	flag.StringVar(&rates, "rates", "default,0", "--rebalance-rate settings to compare (bytes/s; default: the server's default; 0: no cap)")
	flag.DurationVar(&cfg.duration, "duration", 3*time.Second, "part 2: how long each traffic window runs (during the move: at most this long)")
	flag.IntVar(&cfg.keys, "keys", 1000, "part 2: keyspace of the traffic")
	flag.IntVar(&cfg.size, "size", 100, "part 2: value size of the traffic in bytes")
	flag.IntVar(&cfg.conns, "conns", 8, "part 2: connections for GET and as many for SET")
	flag.IntVar(&cfg.bulkSize, "bulk-size", 256<<10, "part 2: value size of the bulk data the move hands off besides the traffic's keys")
	flag.Int64Var(&cfg.maxBulk, "max-bulk", 1<<30, "part 2: at most this many bytes of bulk data")
	flag.BoolVar(&cfg.traffic, "traffic", true, "run part 2")
	flag.StringVar(&cfg.cacheBin, "cacheserver", "", "prebuilt cacheserver binary (default: go build ./cmd/cacheserver)")
	flag.StringVar(&extra, "cacheserver-args", "", "extra flags for every shard, space-separated (e.g. \"--fanout 4\")")
	flag.StringVar(&cfg.jsonOut, "json", "", "also write the results to this JSON file")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the data directories")
	flag.Parse()
	var err error
	if cfg.fill, err = parseFill(fill); err != nil {
		fatal(err)
	}
	if cfg.rates, err = parseRates(rates); err != nil {
		fatal(err)
	}
	if cfg.keys < 1 || cfg.size < 1 || cfg.conns < 1 || cfg.bulkSize < 1 || cfg.maxBulk < 1 || cfg.duration <= 0 {
		fatal(fmt.Errorf("-keys, -size, -conns, -bulk-size, -max-bulk and -duration must be positive"))
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

func parseFill(s string) ([]fillSpec, error) {
	var out []fillSpec
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		a, b, ok := strings.Cut(f, ":")
		size, err1 := strconv.Atoi(a)
		count, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || size < 1 || count < 1 {
			return nil, fmt.Errorf("-fill: %q is not size:count with positive numbers", f)
		}
		out = append(out, fillSpec{size: size, count: count})
	}
	return out, nil
}

func parseRates(s string) ([]rateSpec, error) {
	var out []rateSpec
	for _, f := range strings.Split(s, ",") {
		switch f = strings.TrimSpace(f); f {
		case "":
		case "default":
			out = append(out, rateSpec{Name: "default (64 MiB/s)"})
		case "0":
			out = append(out, rateSpec{Name: "0 (no cap)", Args: []string{"--rebalance-rate", "0"}})
		default:
			n, err := strconv.ParseInt(f, 10, 64)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("-rates: %q is not default or a number of bytes per second", f)
			}
			out = append(out, rateSpec{Name: f + " B/s", Args: []string{"--rebalance-rate", f}})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-rates: no rate given")
	}
	return out, nil
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "bench-rebalance: %v\n", err)
	os.Exit(1)
}

func run(cfg config, stops *servers.Stops) (*report, error) {
	start := time.Now()
	rep := &report{Date: start.UTC().Format("2006-01-02 15:04 MST"), CPU: machine.CPUModel(), NumCPU: runtime.NumCPU(),
		LoadBefore: machine.LoadAverage(), Cacheserver: cfg.cacheArgs, Duration: cfg.duration.String(),
		Keys: cfg.keys, Size: cfg.size, Conns: cfg.conns}
	fmt.Fprintf(os.Stderr, "bench-rebalance: %d CPUs, load average %s\n", rep.NumCPU, rep.LoadBefore)
	clock, err := servers.NewCPUClock()
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "bench-rebalance-")
	if err != nil {
		return nil, err
	}
	if !cfg.keep {
		stops.Add(func() { _ = os.RemoveAll(work) })
	}
	b := &bench{cfg: cfg, work: work, clock: clock, bin: cfg.cacheBin}
	if b.bin == "" {
		if b.bin, err = servers.BuildCacheserver(work); err != nil {
			return nil, err
		}
	}
	// Each cell gets a fresh pair, so every move starts from the same state.
	cell := func(r rateSpec, f func(p *pair) error) error {
		p, err := b.newPair(r)
		if err != nil {
			return err
		}
		stops.Add(p.stop)
		defer b.stopPair(p)
		return f(p)
	}
	for _, r := range cfg.rates {
		for _, f := range cfg.fill {
			err := cell(r, func(p *pair) error {
				c, err := b.runTransfer(p, r, f.count, f.size)
				b.transfer = append(b.transfer, c)
				return err
			})
			if err != nil {
				return nil, err
			}
		}
	}
	if cfg.traffic {
		for _, r := range cfg.rates {
			bulk := b.bulkItems(r)
			if err := cell(r, func(p *pair) error { return b.runTraffic(p, r, bulk, cfg.bulkSize) }); err != nil {
				return nil, err
			}
		}
	}
	rep.Transfer, rep.Traffic, rep.Moves = b.transfer, b.traffic, b.moves
	rep.LoadAfter = machine.LoadAverage()
	fmt.Fprintf(os.Stderr, "bench-rebalance: done in %s\n", time.Since(start).Round(time.Second))
	return rep, nil
}

// bulkItems sizes part 2's bulk data for rate r so the move outlasts the
// traffic window: half of it moves, at the rate part 1 measured for the
// largest values (64 MiB/s when part 1 did not run), with a margin of 1.5.
func (b *bench) bulkItems(r rateSpec) int {
	mibps, size := 64.0, 0
	for _, c := range b.transfer {
		if c.Rate == r.Name && c.ValueBytes > size {
			mibps, size = c.MiBPerSec, c.ValueBytes
		}
	}
	want := int64(mibps * (1 << 20) * b.cfg.duration.Seconds() * 2 * 1.5)
	want = min(max(want, 16<<20), b.cfg.maxBulk)
	return int(max(want/int64(b.cfg.bulkSize), 1))
}
