package maintenance

import (
	"context"
	"net/http"
	"sync"
	"time"

	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// Access is how to reach the shards of a DiskCache for a run.
type Access struct {
	Token      string
	HTTPClient *http.Client // nil: the Runner's
	Resolve    func(shard int) string
}

// Request is one DiskCache as the Scheduler sees it on a reconcile.
type Request struct {
	Namespace, Name string
	// UID tells a DiskCache from a deleted one of the same name.
	UID          string
	CreationTime time.Time
	// Spec is spec.maintenance; nil Expire and Cull mean true, as the CRD
	// defaults them.
	Spec   cachev1alpha1.MaintenanceSpec
	Shards int
	// Trigger is the value of TriggerAnnotation ("" when absent).
	Trigger string
	// Status is the current status.maintenance (nil: none yet).
	Status *cachev1alpha1.MaintenanceStatus
	// Connect is called only when a run is due: it returns the token and
	// addresses of the shards. An error postpones the run (Outcome.Err).
	Connect func(ctx context.Context) (Access, error)
}

// Outcome is what a reconcile must write, record and requeue.
type Outcome struct {
	// Status is the new status.maintenance; never nil.
	Status *cachev1alpha1.MaintenanceStatus
	// RequeueAfter is when to reconcile again for the next run (0: no
	// scheduled run to wait for).
	RequeueAfter time.Duration
	// Decision is what Decide said.
	Decision Decision
	// Result is the run's result, nil when nothing ran.
	Result *Result
	// Events to record on the DiskCache.
	Events []Event
	// ScheduleErr is a *ScheduleError when the schedule or time zone is
	// invalid: report it as a condition. Scheduled runs stop; the trigger
	// still works.
	ScheduleErr error
	// Err is Connect's error: the due run did not happen; return it so the
	// reconcile is retried with backoff.
	Err error
}

// Executor runs a Job; *Runner is the real one.
type Executor interface {
	Run(ctx context.Context, job Job) Result
}

// Scheduler ties Decide, a Runner, the status and the metrics together for the
// reconciler. It remembers, per DiskCache, the last status it produced, so
// a status write that failed or a reconcile that read a stale cache never
// repeats a run, and the last missed run it reported, so the Warning is
// recorded once. It is safe for concurrent reconciles; its zero value
// (real clock, default Runner, no metrics) is ready to use.
type Scheduler struct {
	// Runner runs the jobs; nil means a Runner with the defaults.
	Runner Executor
	// Metrics records runs; nil records nothing.
	Metrics *Metrics
	// Clock is the time source; nil means the real clock.
	Clock clock.PassiveClock

	mu  sync.Mutex
	mem map[string]memo
}

type memo struct {
	uid    string
	status *cachev1alpha1.MaintenanceStatus // last status produced by a run
	missed time.Time                        // last missed run reported
}

// Reconcile decides, runs maintenance when it is due, and returns the
// status, Events and requeue for the DiskCache. It blocks for the run
// (bounded by the Runner's per-shard timeout and parallelism).
func (s *Scheduler) Reconcile(ctx context.Context, req Request) Outcome {
	clk := s.clock()
	now := clk.Now()
	key := req.Namespace + "/" + req.Name
	m := s.recall(key, req.UID)

	base := req.Status
	if m.status != nil && !lastSchedule(m.status).Before(lastSchedule(base)) {
		// Our own later write, not (yet) in the cache or lost.
		base = m.status
	}
	var out Outcome
	var sched *Schedule
	expire, cull := ptr.Deref(req.Spec.Expire, true), ptr.Deref(req.Spec.Cull, true)
	if expire || cull {
		var err error
		if sched, err = Parse(req.Spec.Schedule, req.Spec.TimeZone); err != nil {
			out.ScheduleErr = err
		}
	}
	in := Input{
		Schedule:                sched,
		Suspend:                 req.Spec.Suspend,
		StartingDeadlineSeconds: req.Spec.StartingDeadlineSeconds,
		LastScheduleTime:        lastSchedule(base),
		CreationTime:            req.CreationTime,
		Trigger:                 req.Trigger,
		Now:                     now,
	}
	if base != nil {
		in.LastTrigger = base.LastTrigger
	}
	d := Decide(in)
	out.Decision = d
	if !d.Missed.IsZero() && !d.Missed.Equal(m.missed) {
		out.Events = append(out.Events, MissedEvent(d.Missed, req.Spec.StartingDeadlineSeconds))
		s.update(key, req.UID, func(m *memo) { m.missed = d.Missed })
	}
	out.Status = StatusWithNext(base, d.NextScheduleTime)
	out.RequeueAfter = d.RequeueAfter
	if !d.Run {
		return out
	}

	var access Access
	if req.Connect != nil {
		var err error
		if access, err = req.Connect(ctx); err != nil {
			out.Err = err
			return out
		}
	}
	res := s.runner(clk).Run(ctx, Job{
		Shards:     req.Shards,
		Expire:     expire,
		Cull:       cull,
		Resolve:    access.Resolve,
		Token:      access.Token,
		HTTPClient: access.HTTPClient,
	})
	s.Metrics.Observe(req.Namespace, req.Name, &res)
	out.Result = &res
	next := d.NextScheduleTime
	if after := clk.Now(); sched != nil && !next.IsZero() && !next.After(after) {
		// The run outlasted its period: the next time is the first after
		// it, not one that went by while it ran.
		next = sched.Next(after)
	}
	out.Status = StatusAfterRun(base, d, &res, next)
	out.RequeueAfter = RequeueAfter(d.NextScheduleTime, clk.Now())
	out.Events = append(out.Events, EventFor(d, &res))
	st := out.Status.DeepCopy()
	s.update(key, req.UID, func(m *memo) { m.status = st })
	return out
}

// Forget drops what the Scheduler remembers about a deleted DiskCache, and
// its metric series.
func (s *Scheduler) Forget(namespace, name string) {
	s.mu.Lock()
	delete(s.mem, namespace+"/"+name)
	s.mu.Unlock()
	s.Metrics.Forget(namespace, name)
}

func (s *Scheduler) clock() clock.PassiveClock {
	if s.Clock == nil {
		return clock.RealClock{}
	}
	return s.Clock
}

func (s *Scheduler) runner(clk clock.PassiveClock) Executor {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Runner == nil {
		s.Runner = &Runner{Clock: clk}
	}
	return s.Runner
}

func (s *Scheduler) recall(key, uid string) memo {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.mem[key]
	if m.uid != uid {
		return memo{}
	}
	return m
}

func (s *Scheduler) update(key, uid string, f func(*memo)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mem == nil {
		s.mem = map[string]memo{}
	}
	m := s.mem[key]
	if m.uid != uid {
		m = memo{uid: uid}
	}
	f(&m)
	s.mem[key] = m
}

func lastSchedule(s *cachev1alpha1.MaintenanceStatus) time.Time {
	if s == nil || s.LastScheduleTime == nil {
		return time.Time{}
	}
	return s.LastScheduleTime.Time
}
