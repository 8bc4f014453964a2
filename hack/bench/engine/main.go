// Command engine benchmarks engine.Cache on python-diskcache's published
// workload (tests/benchmark_core.py) next to a raw SQLite baseline and
// python-diskcache itself, and prints markdown tables of per-operation
// percentiles and of the ratios between them. `make bench` runs it; see
// docs/benchmarks.md.
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
)

//go:embed python_bench.py
var pythonBench []byte

const (
	sysEngine = "engine"
	sysRaw    = "raw"
	sysPython = "python"
)

type config struct {
	ops, warmup int
	rounds      int
	workers     []int
	systems     map[string]bool
	python      string
	skipPython  bool
	dir         string
	keep        bool
	jsonOut     string
	cpuProfile  string
	rawTriggers bool
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
	var workers, systems string
	flag.IntVar(&cfg.ops, "ops", 20000, "operations per worker, warm-up included (benchmark_core.py: 100000)")
	flag.IntVar(&cfg.rounds, "rounds", 3, "rounds of every run; tables show the median over rounds of each statistic")
	flag.IntVar(&cfg.warmup, "warmup", 1000, "untimed operations at the start of each worker")
	flag.StringVar(&workers, "workers", "1,8", "comma-separated worker counts (goroutines for Go, processes for Python)")
	flag.StringVar(&systems, "systems", "engine,raw,python", "comma-separated systems to run: engine, raw, python")
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
	for _, f := range strings.Split(workers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return cfg, fmt.Errorf("bad -workers entry %q", f)
		}
		cfg.workers = append(cfg.workers, n)
	}
	cfg.systems = map[string]bool{}
	for _, f := range strings.Split(systems, ",") {
		switch f = strings.TrimSpace(f); f {
		case sysEngine, sysRaw, sysPython:
			cfg.systems[f] = true
		default:
			return cfg, fmt.Errorf("bad -systems entry %q (engine, raw, python)", f)
		}
	}
	if cfg.skipPython {
		delete(cfg.systems, sysPython)
	}
	return cfg, nil
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
	if cfg.systems[sysPython] {
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
	order := []string{sysEngine, sysRaw, sysPython}
	if prof != nil {
		for _, sys := range order {
			for r := 1; r <= cfg.rounds; r++ {
				for _, n := range cfg.workers {
					jobs = append(jobs, job{sys, n, r, sys == sysEngine})
				}
			}
		}
	} else {
		for r := 1; r <= cfg.rounds; r++ {
			for _, n := range cfg.workers {
				for _, sys := range order {
					jobs = append(jobs, job{sys, n, r, false})
				}
			}
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
		fmt.Fprintf(progress, "bench: round %d/%d: %s, %d worker(s), %d ops each ... ", j.round, cfg.rounds, systemTitles[j.sys], j.workers, cfg.ops)
		var res Result
		switch {
		case j.sys == sysPython && pyErr != nil:
			res = Result{System: j.sys, Workers: j.workers, Skipped: pyErr.Error()}
		case j.sys == sysPython:
			res, err = runPython(ctx, cfg, dir, base, j.workers)
			res.Version = pyVersion
		default:
			res, err = runGo(ctx, cfg, j.sys, dir, j.workers)
		}
		if err != nil {
			fmt.Fprintln(progress, "failed")
			return fmt.Errorf("%s with %d worker(s): %w", systemTitles[j.sys], j.workers, err)
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

	if la := loadAverage(); la != "" {
		machine = append(machine, "load average at end "+la)
	}

	// One result per system and worker count, listed by worker count.
	var results []Result
	for _, n := range cfg.workers {
		for _, sys := range order {
			var same []Result
			for _, r := range runs {
				if r.System == sys && r.Workers == n {
					same = append(same, r)
				}
			}
			if len(same) > 0 && !slices.ContainsFunc(results, func(r Result) bool { return r.System == sys && r.Workers == n }) {
				results = append(results, combine(same))
			}
		}
	}

	if cfg.jsonOut != "" {
		out := struct {
			Machine []string `json:"machine"`
			Ops     int      `json:"ops_per_worker"`
			Warmup  int      `json:"warmup"`
			Rounds  int      `json:"rounds"`
			Results []Result `json:"results"`
			Runs    []Result `json:"runs"`
		}{machine, cfg.ops, cfg.warmup, cfg.rounds, results, runs}
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
	writeReport(w, cfg, machine, results)
	return nil
}

func writeReport(w io.Writer, cfg config, machine []string, results []Result) {
	fmt.Fprintf(w, "## Workload\n\npython-diskcache tests/benchmark_core.py: keys str(randrange(100)).encode(), values str(i).encode() * randrange(1, 100), 90%% get / 9%% set / 1%% delete; %d ops per worker, the first %d untimed; %d round(s), each statistic the median over rounds (count and misses summed, max the largest).\n\n", cfg.ops, cfg.warmup, cfg.rounds)
	for _, m := range machine {
		fmt.Fprintf(w, "- %s\n", m)
	}
	if cfg.rawTriggers {
		fmt.Fprintln(w, "- raw SQLite table has python-diskcache's count/size triggers (-raw-triggers)")
	}
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
}

// runGo runs the engine or the raw baseline in dir.
func runGo(ctx context.Context, cfg config, sys, dir string, workers int) (Result, error) {
	var (
		st  store
		err error
	)
	if sys == sysEngine {
		st, err = openEngine(ctx, dir)
	} else {
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

// runPython runs python_bench.py (embedded) with workers processes.
func runPython(ctx context.Context, cfg config, dir, base string, workers int) (Result, error) {
	script := filepath.Join(base, "python_bench.py")
	if err := os.WriteFile(script, pythonBench, 0o644); err != nil {
		return Result{}, err
	}
	cmd := exec.CommandContext(ctx, cfg.python, script, "--dir", dir,
		"--workers", strconv.Itoa(workers), "--ops", strconv.Itoa(cfg.ops), "--warmup", strconv.Itoa(cfg.warmup))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return Result{}, fmt.Errorf("%s: %w: %s", filepath.Base(script), err, strings.TrimSpace(stderr.String()))
	}
	var res Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return Result{}, fmt.Errorf("python_bench.py output: %w: %q", err, stdout.String())
	}
	if res.Workers != workers || len(res.Ops) == 0 {
		return Result{}, errors.New("python_bench.py output does not match the run")
	}
	res.System = sysPython
	return res, nil
}

// describeMachine lists what the results depend on.
func describeMachine(pyVersion string) []string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	sqliteVersion, _, _ := sqlite3.Version()
	m := []string{
		fmt.Sprintf("%s, %d CPUs (GOMAXPROCS %d), %s/%s", cpu, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH),
		fmt.Sprintf("%s, SQLite %s (mattn/go-sqlite3)", runtime.Version(), sqliteVersion),
	}
	if pyVersion != "" {
		m = append(m, pyVersion)
	}
	if la := loadAverage(); la != "" {
		m = append(m, "load average at start "+la)
	}
	return m
}

// loadAverage is the 1, 5 and 15 minute load average, "" if unknown: a
// busy machine makes every number here slower and noisier.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
