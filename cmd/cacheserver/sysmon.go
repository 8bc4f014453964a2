package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
)

// sysmonSetting is the GODEBUG setting the server runs with. The Go
// runtime's monitor thread (sysmon) sleeps deeply whenever every P is idle,
// and the next system call wakes it (a futex on the request's path) into
// polling every 20 µs for at least a millisecond. A server that answers
// small requests and goes idle between them pays that over and over: about
// 9% of the cacheserver's CPU on the Django benchmark. With schedtrace set,
// sysmon never sleeps deeply and backs off to 10 ms polls when it has
// nothing to do (golang/go#18236 asks for a knob). The period is the
// largest the runtime takes, about 24.8 days: the runtime prints one
// "SCHED" line to standard error when the machine has been up longer than
// that, then one per period.
const sysmonSetting = "schedtrace=2147483647"

// withSysmonSetting re-executes the server with sysmonSetting added to
// GODEBUG, as the runtime reads it only at start. It returns (and the
// server runs as it is) when GODEBUG already sets schedtrace (to opt out:
// GODEBUG=schedtrace=0), off Linux, or when the re-execution fails; the
// error then says why.
func withSysmonSetting() error {
	godebug, _ := os.LookupEnv("GODEBUG")
	if runtime.GOOS != "linux" || setsSchedtrace(godebug) {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("GODEBUG %s not applied: %w", sysmonSetting, err)
	}
	if godebug != "" {
		godebug += ","
	}
	env := []string{"GODEBUG=" + godebug + sysmonSetting}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	err = syscall.Exec(exe, os.Args, env)
	return fmt.Errorf("GODEBUG %s not applied: exec %s: %w", sysmonSetting, exe, err)
}

func setsSchedtrace(godebug string) bool {
	for _, f := range strings.Split(godebug, ",") {
		if strings.HasPrefix(strings.TrimSpace(f), "schedtrace=") {
			return true
		}
	}
	return false
}
