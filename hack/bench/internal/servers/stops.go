package servers

import "sync"

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
