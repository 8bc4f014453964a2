// Command engine benchmarks engine.Cache on python-diskcache's published
// workload (tests/benchmark_core.py) next to a raw SQLite baseline and
// python-diskcache itself, and engine.FanoutCache next to python-diskcache's
// FanoutCache with concurrent writers, and prints markdown tables of
// per-operation percentiles, misses and timeouts, and of the ratios between
// them. `make bench` runs it; see docs/benchmarks.md.
package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"

	benchmachine "github.com/diskcache-operator/diskcache-operator/hack/bench/internal/machine"
)

//go:embed python_bench.py
var pythonBench []byte

const (
	sysEngine = "engine"
	// sysEngineServer is the engine with the options the cacheserver gives
	// each fanout database: hot values (its share of the default 32 MiB),
	// background checkpoints and batch yields.
	sysEngineServer = "engine-server"
	sysRaw          = "raw"
	sysPython       = "python"
)

type config struct {
	ops, warmup   int
	rounds        int
	workers       []int
	fanoutWorkers []int
	systems       map[string]bool
	python        string
	skipPython    bool
	dir           string
	keep          bool
	jsonOut       string
	cpuProfile    string
	rawTriggers   bool
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags() (config, error) {
	var cfg config
	defPython := os.Getenv("PYTHON")
	if defPython == "" {
		defPython = "/usr/bin/python3"
	}
	var workers, fanoutWorkers, systems string
	flag.IntVar(&cfg.ops, "ops", 20000, "operations per worker, warm-up included (benchmark_core.py: 100000)")
	flag.IntVar(&cfg.rounds, "rounds", 3, "rounds of every run; tables show the median over rounds of each statistic")
	flag.IntVar(&cfg.warmup, "warmup", 1000, "untimed operations at the start of each worker")
	flag.StringVar(&workers, "workers", "1,8", "comma-separated worker counts (goroutines for Go, processes for Python)")
	flag.StringVar(&fanoutWorkers, "fanout-workers", "8", "comma-separated worker counts for the FanoutCache systems")
	flag.StringVar(&systems, "systems", "engine,raw,python,fanout4,fanout8,pyfanout4,pyfanout8",
		"comma-separated systems to run: engine, engine-server (the engine with the cacheserver's options), raw, python (Cache, -workers), fanoutN (Go FanoutCache with a fanout of N), pyfanoutN (python-diskcache FanoutCache; both -fanout-workers)")
	flag.StringVar(&cfg.python, "python", defPython, "python interpreter with python-diskcache (the default is $PYTHON when set)")
	flag.BoolVar(&cfg.skipPython, "skip-python", false, "do not run python-diskcache")
	flag.StringVar(&cfg.dir, "dir", "", "directory under which each run gets a fresh temporary directory (default: the system temp dir)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the cache directories")
	flag.StringVar(&cfg.jsonOut, "json", "", `also write all results as JSON to this file ("-": stdout, replacing the tables)`)
	flag.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the Go engine runs (only) to this file")
	flag.BoolVar(&cfg.rawTriggers, "raw-triggers", false, "give the raw SQLite table python-diskcache's count/size triggers too")
	flag.Parse()
	if flag.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if cfg.rounds < 1 {
		return cfg, fmt.Errorf("-rounds must be at least 1")
	}
	if cfg.ops <= cfg.warmup || cfg.warmup < 0 {
		return cfg, fmt.Errorf("-ops (%d) must exceed -warmup (%d) >= 0", cfg.ops, cfg.warmup)
	}
	var err error
	if cfg.workers, err = parseCounts("-workers", workers); err != nil {
		return cfg, err
	}
	if cfg.fanoutWorkers, err = parseCounts("-fanout-workers", fanoutWorkers); err != nil {
		return cfg, err
	}
	cfg.systems = map[string]bool{}
	for _, f := range strings.Split(systems, ",") {
		switch f = strings.TrimSpace(f); {
		case f == sysEngine, f == sysEngineServer, f == sysRaw, f == sysPython, isFanout(f):
			cfg.systems[f] = true
		default:
			return cfg, fmt.Errorf("bad -systems entry %q (engine, engine-server, raw, python, fanoutN, pyfanoutN)", f)
		}
	}
	if cfg.skipPython {
		for sys := range cfg.systems {
			if isPython(sys) {
				delete(cfg.systems, sys)
			}
		}
	}
	return cfg, nil
}

func parseCounts(name, list string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad %s entry %q", name, f)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// isPython reports the systems run by python_bench.py.
func isPython(sys string) bool {
	_, py, _ := fanoutShards(sys)
	return sys == sysPython || py
}

// fanoutOrder lists the selected FanoutCache systems by shard count, the
// Go one before the Python one at each count.
func fanoutOrder(systems map[string]bool) []string {
	var out []string
	for sys := range systems {
		if isFanout(sys) {
			out = append(out, sys)
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		na, pa, _ := fanoutShards(a)
		nb, pb, _ := fanoutShards(b)
		if na != nb {
			return na - nb
		}
		if pa == pb {
			return 0
		}
		if pb {
			return -1
		}
		return 1
	})
	return out
}

func run() error {
	cfg, err := parseFlags()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	if cfg.dir != "" {
		if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
			return err
		}
	}
	base, err := os.MkdirTemp(cfg.dir, "diskcache-bench-")
	if err != nil {
		return err
	}
	if !cfg.keep {
		defer os.RemoveAll(base)
	}

	var prof *os.File
	if cfg.cpuProfile != "" && cfg.systems[sysEngine] {
		if prof, err = os.Create(cfg.cpuProfile); err != nil {
			return err
		}
		defer prof.Close()
	}

	pyVersion, pyErr := "", error(nil)
	if slices.ContainsFunc(slices.Collect(maps.Keys(cfg.systems)), isPython) {
		pyVersion, pyErr = checkPython(ctx, cfg.python)
		if pyErr != nil {
			fmt.Fprintf(os.Stderr, "bench: skipping python-diskcache: %v\n", pyErr)
		}
	}

	machine := describeMachine(pyVersion)
	progress := os.Stderr
	fmt.Fprintf(progress, "bench: %s\n", strings.Join(machine, "; "))

	// Every run gets a fresh directory. Rounds interleave the systems so
	// that a machine growing busier or quieter affects them alike; with
	// -cpuprofile the engine's runs come first instead, so that the
	// profile covers them and nothing else.
	type job struct {
		sys      string
		workers  int
		round    int
		profiled bool
	}
	var jobs []job
	order := []string{sysEngine, sysEngineServer, sysRaw, sysPython}
	fanouts := fanoutOrder(cfg.systems)
	// round lists one round's runs: the Cache systems at every -workers
	// count, then the FanoutCache systems at every -fanout-workers count.
	round := func(r int) []job {
		var js []job
		for _, n := range cfg.workers {
			for _, sys := range order {
				js = append(js, job{sys, n, r, false})
			}
		}
		for _, n := range cfg.fanoutWorkers {
			for _, sys := range fanouts {
				js = append(js, job{sys, n, r, false})
			}
		}
		return js
	}
	if prof != nil {
		var rest []job
		for r := 1; r <= cfg.rounds; r++ {
			for _, j := range round(r) {
				if j.sys == sysEngine {
					j.profiled = true
					jobs = append(jobs, j)
				} else {
					rest = append(rest, j)
				}
			}
		}
		jobs = append(jobs, rest...)
	} else {
		for r := 1; r <= cfg.rounds; r++ {
			jobs = append(jobs, round(r)...)
		}
	}
	var runs []Result
	profiling := false
	stopProfile := func() {
		if profiling {
			pprof.StopCPUProfile()
			profiling = false
			fmt.Fprintf(progress, "bench: CPU profile of the engine runs in %s (go tool pprof -top %s)\n", cfg.cpuProfile, cfg.cpuProfile)
		}
	}
	defer stopProfile()
	for _, j := range jobs {
		if !cfg.systems[j.sys] {
			continue
		}
		if j.profiled && !profiling {
			if err := pprof.StartCPUProfile(prof); err != nil {
				return err
			}
			profiling = true
		} else if !j.profiled {
			stopProfile()
		}
		dir, err := os.MkdirTemp(base, fmt.Sprintf("%s-w%d-r%d-", j.sys, j.workers, j.round))
		if err != nil {
			return err
		}
		fmt.Fprintf(progress, "bench: round %d/%d: %s, %d worker(s), %d ops each ... ", j.round, cfg.rounds, systemTitle(j.sys), j.workers, cfg.ops)
		var res Result
		shards, _, fanout := fanoutShards(j.sys)
		switch {
		case isPython(j.sys) && pyErr != nil:
			res = Result{System: j.sys, Shards: shards, Workers: j.workers, Skipped: pyErr.Error()}
		case isPython(j.sys):
			res, err = runPython(ctx, cfg, j.sys, dir, base, shards, j.workers)
			res.Version = pyVersion
		case fanout:
			res, err = runFanout(ctx, cfg, j.sys, dir, shards, j.workers)
		default:
			res, err = runGo(ctx, cfg, j.sys, dir, j.workers)
		}
		if err != nil {
			fmt.Fprintln(progress, "failed")
			return fmt.Errorf("%s with %d worker(s): %w", systemTitle(j.sys), j.workers, err)
		}
		res.OpsPerWorker = cfg.ops
		res.Rounds = 1
		if res.Skipped != "" {
			fmt.Fprintln(progress, "skipped")
		} else {
			fmt.Fprintf(progress, "%s\n", time.Duration(res.WallNS).Round(time.Millisecond))
		}
		runs = append(runs, res)
		if !cfg.keep {
			_ = os.RemoveAll(dir)
		}
	}
	stopProfile()

	machine = append(machine, "load average at end "+benchmachine.LoadAverage())

	// One result per system and worker count, listed by worker count.
	collect := func(counts []int, systems []string) []Result {
		out := []Result{}
		for _, n := range counts {
			for _, sys := range systems {
				var same []Result
				for _, r := range runs {
					if r.System == sys && r.Workers == n {
						same = append(same, r)
					}
				}
				if len(same) > 0 {
					out = append(out, combine(same))
				}
			}
		}
		return out
	}
	results := collect(cfg.workers, order)
	fanoutResults := collect(cfg.fanoutWorkers, fanouts)

	if cfg.jsonOut != "" {
		out := struct {
			Machine []string `json:"machine"`
			Date    string   `json:"date"`
			Ops     int      `json:"ops_per_worker"`
			Warmup  int      `json:"warmup"`
			Rounds  int      `json:"rounds"`
			Results []Result `json:"results"`
			Fanout  []Result `json:"fanout_results,omitempty"`
			Runs    []Result `json:"runs"`
		}{machine, time.Now().UTC().Format("2006-01-02 15:04 UTC"), cfg.ops, cfg.warmup, cfg.rounds, results, fanoutResults, runs}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return err
		}
		b = append(b, '\n')
		if cfg.jsonOut == "-" {
			_, err = os.Stdout.Write(b)
			return err
		}
		if err := os.WriteFile(cfg.jsonOut, b, 0o644); err != nil {
			return err
		}
	}

	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	writeReport(w, cfg, machine, results, fanoutResults)
	return nil
}

func writeReport(w io.Writer, cfg config, machine []string, results, fanoutResults []Result) {
	fmt.Fprintf(w, "## Workload\n\npython-diskcache tests/benchmark_core.py: keys str(randrange(100)).encode(), values str(i).encode() * randrange(1, 100), 90%% get / 9%% set / 1%% delete; %d ops per worker, the first %d untimed; %d round(s), each statistic the median over rounds (count and misses summed, max the largest).\n\n", cfg.ops, cfg.warmup, cfg.rounds)
	for _, m := range machine {
		fmt.Fprintf(w, "- %s\n", m)
	}
	if cfg.rawTriggers {
		fmt.Fprintln(w, "- raw SQLite table has python-diskcache's count/size triggers (-raw-triggers)")
	}
	if len(results) > 0 {
		fmt.Fprint(w, "\n## Per-operation latency\n\n")
		writeResults(w, results)
		fmt.Fprint(w, "\n## Throughput\n\n")
		writeThroughput(w, results)
		fmt.Fprint(w, "\n## Ratios\n\n")
		verdicts := writeRatios(w, results, cfg.workers)
		if len(verdicts) > 0 {
			fmt.Fprint(w, "\nTargets on medians:\n\n")
			for _, v := range verdicts {
				fmt.Fprintf(w, "- %s\n", v)
			}
		}
		writeServerRatios(w, results, cfg.workers)
	}
	if len(fanoutResults) > 0 {
		writeFanoutReport(w, fanoutResults, results)
	}
}

// runGo runs the engine or the raw baseline in dir.
func runGo(ctx context.Context, cfg config, sys, dir string, workers int) (Result, error) {
	var (
		st  store
		err error
	)
	switch sys {
	case sysEngine:
		st, err = openEngine(ctx, dir, defaultOptions)
	case sysEngineServer:
		st, err = openEngine(ctx, dir, serverOptions)
	default:
		st, err = openRaw(dir, cfg.rawTriggers)
	}
	if err != nil {
		return Result{}, err
	}
	runtime.GC()
	s, wall, err := runStore(ctx, st, workers, cfg.ops, cfg.warmup)
	if cerr := st.close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return Result{}, err
	}
	return Result{System: sys, Workers: workers, WallNS: int64(wall), Ops: summarise(s)}, nil
}

// checkPython reports the python-diskcache and Python versions, or why
// python-diskcache cannot be run.
func checkPython(ctx context.Context, python string) (string, error) {
	out, err := exec.CommandContext(ctx, python, "-c",
		"import diskcache, platform; print('python-diskcache %s, Python %s' % (diskcache.__version__, platform.python_version()))").CombinedOutput()
	if err != nil {
		if msg := strings.TrimSpace(lastLine(out)); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return "", fmt.Errorf("%s cannot import diskcache (%v; use -python or -skip-python)", python, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// runPython runs python_bench.py (embedded) with workers processes, on
// diskcache.Cache, or on diskcache.FanoutCache when shards > 0.
func runPython(ctx context.Context, cfg config, sys, dir, base string, shards, workers int) (Result, error) {
	script := filepath.Join(base, "python_bench.py")
	if err := os.WriteFile(script, pythonBench, 0o644); err != nil {
		return Result{}, err
	}
	args := []string{script, "--dir", dir,
		"--workers", strconv.Itoa(workers), "--ops", strconv.Itoa(cfg.ops), "--warmup", strconv.Itoa(cfg.warmup)}
	if shards > 0 {
		args = append(args, "--fanout", strconv.Itoa(shards), "--timeout", strconv.FormatFloat(fanoutTimeout.Seconds(), 'f', -1, 64))
	}
	cmd := exec.CommandContext(ctx, cfg.python, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return Result{}, fmt.Errorf("%s: %w: %s", filepath.Base(script), err, strings.TrimSpace(stderr.String()))
	}
	var res Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return Result{}, fmt.Errorf("python_bench.py output: %w: %q", err, stdout.String())
	}
	if res.Workers != workers || res.Shards != shards || len(res.Ops) == 0 {
		return Result{}, errors.New("python_bench.py output does not match the run")
	}
	res.System = sys
	return res, nil
}

// describeMachine lists what the results depend on.
func describeMachine(pyVersion string) []string {
	cpu := benchmachine.CPUModel()
	sqliteVersion, _, _ := sqlite3.Version()
	m := []string{
		fmt.Sprintf("%s, %d CPUs (GOMAXPROCS %d), %s/%s", cpu, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH),
		fmt.Sprintf("%s, SQLite %s (mattn/go-sqlite3)", runtime.Version(), sqliteVersion),
	}
	if pyVersion != "" {
		m = append(m, pyVersion)
	}
	return append(m, "load average at start "+benchmachine.LoadAverage())
}
