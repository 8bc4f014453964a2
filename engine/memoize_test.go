package engine

import (
	"context"
	"encoding/hex"
	"math"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

func TestMemoKeyMatchesPython(t *testing.T) {
	python := memoOraclePython(t)
	huge, _ := new(big.Int).SetString("-123456789012345678901234567890", 10)
	cases := []struct {
		py    string
		typed bool
		args  []any
	}{
		{"()", false, nil},
		{"(1,)", false, []any{1}},
		{"('abc', 255, 256, 65535, 65536, -1, -129, 2**31-1, -2**31, 2**31, -2**31-1, 2**63-1, -2**63)", false,
			[]any{"abc", 255, 256, 65535, 65536, -1, -129, math.MaxInt32, math.MinInt32, int64(math.MaxInt32) + 1, int64(math.MinInt32) - 1, int64(math.MaxInt64), int64(math.MinInt64)}},
		{"(1.5, -0.0, b'xy', True, False, None)", false, []any{1.5, math.Copysign(0, -1), []byte("xy"), true, false, nil}},
		{"('é' * 300, b'z' * 300, -123456789012345678901234567890, 2**64-1)", false, []any{strings.Repeat("é", 300), []byte(strings.Repeat("z", 300)), huge, uint64(math.MaxUint64)}},
		{"(1, 'a', 2.5, b'b', True)", true, []any{1, "a", 2.5, []byte("b"), true}},
	}
	for _, tc := range cases {
		typed := "False"
		if tc.typed {
			typed = "True"
		}
		script := "import pickle, pickletools\nfrom diskcache.core import args_to_key\n" +
			"k = args_to_key(('fn',), " + tc.py + ", {}, " + typed + ", set())\n" +
			"print(pickletools.optimize(pickle.dumps(k, protocol=5)).hex())\n"
		out, err := exec.Command(python, "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: python: %v\n%s", tc.py, err, out)
		}
		want := strings.TrimSpace(string(out))
		key, err := MemoKey("fn", tc.typed, tc.args...)
		if err != nil {
			t.Fatalf("%s: MemoKey: %v", tc.py, err)
		}
		if got := hex.EncodeToString(key.Bytes()); got != want {
			t.Errorf("%s:\n got %s\nwant %s", tc.py, got, want)
		}
	}
}

func TestMemoizeCachesResults(t *testing.T) {
	ctx := context.Background()
	c, _ := openTest(t, nil)
	calls := 0
	m := Memoize(c, "square", MemoizeOptions{}, func(_ context.Context, args ...any) (int64, error) {
		calls++
		n := args[0].(int)
		return int64(n * n), nil
	})
	for i := 0; i < 3; i++ {
		if r, err := m.Call(ctx, 7); err != nil || r != 49 {
			t.Fatalf("Call = %d, %v", r, err)
		}
	}
	if calls != 1 {
		t.Fatalf("fn ran %d times, want 1", calls)
	}
	never := Memoize(c, "never", MemoizeOptions{Expire: kv.ExpireAfter(0)}, func(_ context.Context, _ ...any) (string, error) {
		calls++
		return "x", nil
	})
	_, _ = never.Call(ctx)
	_, _ = never.Call(ctx)
	if calls != 3 {
		t.Fatalf("expire 0 must not store: fn ran %d times, want 3", calls)
	}
	type point struct{ X, Y int }
	pm := Memoize(c, "point", MemoizeOptions{Ignore: []int{1}}, func(_ context.Context, args ...any) (point, error) {
		calls++
		return point{args[0].(int), 2}, nil
	})
	a, _ := pm.Call(ctx, 1, "ignored-a")
	b, _ := pm.Call(ctx, 1, "ignored-b")
	if a != (point{1, 2}) || b != a || calls != 4 {
		t.Fatalf("ignored args: %v %v calls=%d", a, b, calls)
	}
}

// memoOraclePython returns the python-diskcache interpreter or skips (fails
// when DISKCACHE_REQUIRE_PYTHON is set).
func memoOraclePython(t *testing.T) string {
	t.Helper()
	python := os.Getenv("PYTHON")
	if python == "" {
		python = "/usr/bin/python3"
	}
	if err := exec.Command(python, "-c", "import diskcache").Run(); err != nil {
		if os.Getenv("DISKCACHE_REQUIRE_PYTHON") != "" {
			t.Fatalf("python-diskcache oracle %s unavailable: %v", python, err)
		}
		t.Skipf("python-diskcache oracle %s unavailable: %v", python, err)
	}
	return python
}
