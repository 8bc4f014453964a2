package servers

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// CPUClock reads the CPU time processes have used from /proc/PID/stat.
type CPUClock struct {
	tick time.Duration // one clock tick (USER_HZ), the unit of /proc/PID/stat
}

// NewCPUClock asks getconf for the clock tick of /proc/PID/stat.
func NewCPUClock() (*CPUClock, error) {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return nil, fmt.Errorf("getconf CLK_TCK: %w", err)
	}
	hz, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || hz <= 0 {
		return nil, fmt.Errorf("getconf CLK_TCK answered %q", out)
	}
	return &CPUClock{tick: time.Second / time.Duration(hz)}, nil
}

// Used returns the user plus system CPU time the processes have used so
// far, all their threads together.
func (c *CPUClock) Used(pids ...int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		// The command name, field 2, is in parentheses and may hold
		// spaces; utime and stime are fields 14 and 15.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			return 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, b)
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, b)
		}
		for _, s := range f[11:13] {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
			}
			sum += time.Duration(n) * c.tick
		}
	}
	return sum, nil
}
