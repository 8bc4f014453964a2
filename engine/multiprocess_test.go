package engine

// Several OS processes, engine and python-diskcache, write and increment on
// one cache directory at once. The engine processes are this test binary run
// again in helper mode (TestMultiProcessHelper with mpHelperEnv set).

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

const (
	// mpHelperEnv selects helper mode: "DIR WORKER GOROUTINES ITERATIONS".
	mpHelperEnv   = "DISKCACHE_ENGINE_MP_HELPER"
	mpIterations  = 40
	mpGoProcs     = 2 // engine processes
	mpGoroutines  = 2 // writers in each engine process
	mpPyProcs     = 2 // python-diskcache processes
	mpTmpEvery    = 5 // every so many iterations a file-backed item is set and deleted
	mpFileValueSz = 40000
)

var (
	mpCounter  = kv.TextKey("mp/counter")
	mpFCounter = kv.TextKey("mp/fcounter")
)

func mpKey(lang string, w, i int) kv.Key { return kv.TextKey(fmt.Sprintf("mp/%s%d/%d", lang, w, i)) }

func mpTmpKey(lang string, w, i int) kv.Key {
	return kv.TextKey(fmt.Sprintf("mp/%s%d/tmp%d", lang, w, i))
}

// mpValue is the value worker w of lang writes in iteration i; it must stay
// in step with value() in testdata/mp_worker.py.
func mpValue(lang string, w, i int) kv.Value {
	switch i % 4 {
	case 0:
		return kv.Text(fmt.Sprintf("v-%s%d-%d-é", lang, w, i))
	case 1:
		prefix := []byte(fmt.Sprintf("%s%d-%d-", lang, w, i))
		return kv.Bytes(bytes.Repeat(prefix, mpFileValueSz/len(prefix)+1)[:mpFileValueSz])
	case 2:
		return kv.Int(int64(w)*1000000 + int64(i))
	default:
		return kv.Float(float64(i) + 0.25)
	}
}

// mpWork is one engine writer: the same operations as mp_worker.py.
func mpWork(ctx context.Context, c *Cache, w, n int) error {
	for i := 0; i < n; i++ {
		if err := c.Set(ctx, mpKey("go", w, i), mpValue("go", w, i), kv.SetOptions{}); err != nil {
			return err
		}
		if _, err := c.Incr(ctx, mpCounter, kv.Int(int64(w+1)), kv.Int(0)); err != nil {
			return err
		}
		if _, err := c.Incr(ctx, mpFCounter, kv.Float(0.5), kv.Int(0)); err != nil {
			return err
		}
		if i%mpTmpEvery == 0 {
			tmp := mpTmpKey("go", w, i)
			if err := c.Set(ctx, tmp, mpValue("go", w, 1), kv.SetOptions{}); err != nil {
				return err
			}
			if ok, err := c.Delete(ctx, tmp); err != nil || !ok {
				return fmt.Errorf("delete %v: %v, %v", tmp, ok, err)
			}
		}
	}
	return nil
}

// TestMultiProcessHelper is not a test of its own: TestMultiProcess runs the
// test binary with mpHelperEnv set to make it one of its writer processes.
func TestMultiProcessHelper(t *testing.T) {
	spec := os.Getenv(mpHelperEnv)
	if spec == "" {
		t.Skip("helper process of TestMultiProcess")
	}
	f := strings.Fields(spec)
	if len(f) != 4 {
		t.Fatalf("%s=%q: want DIR WORKER GOROUTINES ITERATIONS", mpHelperEnv, spec)
	}
	first, _ := strconv.Atoi(f[1])
	goroutines, _ := strconv.Atoi(f[2])
	n, _ := strconv.Atoi(f[3])
	// Start together with the other processes.
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		t.Fatalf("waiting for the start signal: %v", err)
	}
	ctx := context.Background()
	c, err := Open(ctx, f[0], Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	errs := make([]error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[g] = mpWork(ctx, c, first+g, n)
		}()
	}
	wg.Wait()
	for g, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", first+g, err)
		}
	}
}

type mpProc struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	output bytes.Buffer
}

func TestMultiProcess(t *testing.T) {
	py := cxMaybeOracle(t)
	ctx := context.Background()
	dir := t.TempDir()
	// Create the cache first, so the writers race on data, not on the schema.
	c0, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_ = c0.Close()

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var procs []*mpProc
	start := func(name string, cmd *exec.Cmd) {
		t.Helper()
		p := &mpProc{name: name, cmd: cmd}
		cmd.Stdout, cmd.Stderr = &p.output, &p.output
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		procs = append(procs, p)
	}
	defer func() {
		for _, p := range procs {
			if p.cmd.ProcessState == nil {
				_ = p.cmd.Process.Kill()
				_ = p.cmd.Wait()
			}
		}
	}()
	for p := 0; p < mpGoProcs; p++ {
		cmd := exec.Command(exe, "-test.run=^TestMultiProcessHelper$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d %d", mpHelperEnv, dir, p*mpGoroutines, mpGoroutines, mpIterations))
		start(fmt.Sprintf("engine process %d", p), cmd)
	}
	pyWorkers := 0
	if py != nil {
		pyWorkers = mpPyProcs
		for w := 0; w < pyWorkers; w++ {
			cmd := exec.Command(py.python, filepath.Join("testdata", "mp_worker.py"), dir, strconv.Itoa(w), strconv.Itoa(mpIterations))
			cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
			start(fmt.Sprintf("python process %d", w), cmd)
		}
	} else {
		t.Log("python-diskcache unavailable: engine processes only")
	}
	// Every process has started: let them all go at once, then wait.
	for _, p := range procs {
		_, _ = io.WriteString(p.stdin, "go\n")
		_ = p.stdin.Close()
	}
	for _, p := range procs {
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("%s: %v\n%s", p.name, err, p.output.String())
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	c, err := Open(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	workers := map[string]int{"go": mpGoProcs * mpGoroutines, "py": pyWorkers}
	var wantCounter, items int64
	for lang, nw := range workers {
		for w := 0; w < nw; w++ {
			wantCounter += int64(mpIterations * (w + 1))
			for i := 0; i < mpIterations; i++ {
				items++
				k := mpKey(lang, w, i)
				it, ok, err := c.Get(ctx, k, GetOptions{})
				if err != nil || !ok || !it.Value.Equal(mpValue(lang, w, i)) {
					t.Errorf("Get(%v) = %v, %v, %v; want %v", k, it.Value, ok, err, mpValue(lang, w, i))
				}
				if i%mpTmpEvery == 0 {
					if ok, err := c.Contains(ctx, mpTmpKey(lang, w, i)); ok || err != nil {
						t.Errorf("deleted %v is back: %v %v", mpTmpKey(lang, w, i), ok, err)
					}
				}
			}
		}
	}
	nworkers := int64(workers["go"] + workers["py"])
	if it, ok, err := c.Get(ctx, mpCounter, GetOptions{}); err != nil || !ok || !it.Value.Equal(kv.Int(wantCounter)) {
		t.Errorf("counter = %v (%v, %v), want %d", it.Value, ok, err, wantCounter)
	}
	if it, ok, err := c.Get(ctx, mpFCounter, GetOptions{}); err != nil || !ok || !it.Value.Equal(kv.Float(float64(nworkers*mpIterations)*0.5)) {
		t.Errorf("float counter = %v (%v, %v), want %v", it.Value, ok, err, float64(nworkers*mpIterations)*0.5)
	}
	if n := cxLen(t, c); n != items+2 {
		t.Errorf("Len = %d, want %d", n, items+2)
	}
	cxGoCheck(t, c)
	if py != nil {
		st, got, _ := py.read(t, dir, []cxEnc{cxKeyIn(mpCounter), cxKeyIn(mpFCounter)}, nil)
		cxCheckState(t, "after concurrent writers", st)
		cxCheckFiles(t, dir, st.Rows)
		if *got[0].Value != cxInt(wantCounter) || *got[1].Value != cxFloat(float64(nworkers*mpIterations)*0.5) {
			t.Errorf("python reads counters %s, %s", got[0].Value, got[1].Value)
		}
		if st.Len != items+2 {
			t.Errorf("python len() = %d, want %d", st.Len, items+2)
		}
	}
}
