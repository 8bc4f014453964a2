package servers

import (
	"encoding/json"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Stops stops what a benchmark started, last first, once: on its normal
// end and from a signal handler alike.
type Stops struct {
	mu  sync.Mutex
	fns []func()
}

// Add registers f to run at Run.
func (s *Stops) Add(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fns = append(s.fns, f)
}

// Run runs what was added, last first, and forgets it.
func (s *Stops) Run() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.fns) - 1; i >= 0; i-- {
		s.fns[i]()
	}
	s.fns = nil
}

// RunStopping runs a benchmark with a Stops that is run when it returns and
// on SIGINT or SIGTERM (then the process exits 130), so no server it
// started outlives it.
func RunStopping[R any](run func(*Stops) (R, error)) (R, error) {
	var stops Stops
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		if _, ok := <-sig; ok {
			stops.Run()
			os.Exit(130)
		}
	}()
	defer stops.Run()
	return run(&stops)
}

// WriteJSON writes v, indented, to path (nothing when path is empty).
func WriteJSON(path string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
