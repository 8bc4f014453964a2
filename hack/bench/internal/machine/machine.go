// Package machine describes the machine a benchmark under hack/bench runs
// on, for its report: every number depends on it.
package machine

import (
	"os"
	"strings"
)

// LoadAverage is the 1, 5 and 15 minute load average from /proc/loadavg,
// "unknown" if it cannot be read: a busy machine makes every number of a
// benchmark slower and noisier.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// CPUModel is the first "model name" of /proc/cpuinfo.
func CPUModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
