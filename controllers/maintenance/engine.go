package maintenance

import (
	"context"
	"net/http"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Spec is spec.maintenance with defaults applied.
type Spec struct {
	Schedule string // five-field cron expression
	TimeZone string // IANA name, "" is UTC
	Expire   bool
	Cull     bool
	Suspend  bool
	// StartingDeadlineSeconds: nil means no deadline.
	StartingDeadlineSeconds *int64
}

// Access is how to reach the shards of a DiskCache for a run.
type Access struct {
	Token      string
	HTTPClient *http.Client // nil: the Runner's
	Resolve    func(shard int) string
}

// Request is one DiskCache as the engine sees it on a reconcile.
type Request struct {
	Namespace, Name string
	// UID tells a DiskCache from a deleted one of the same name.
	UID          string
	CreationTime time.Time
	Spec         Spec
	Shards       int
	// Trigger is the value of TriggerAnnotation ("" when absent).
	Trigger string
	// Status is the current status.maintenance (nil: none yet).
	Status *Status
	// Connect is called only when a run is due: it returns the token and
	// addresses of the shards. An error postpones the run (Outcome.Err).
	Connect func(ctx context.Context) (Access, error)
}

// Outcome is what a reconcile must write, record and requeue.
type Outcome struct {
	// Status is the new status.maintenance; never nil.
	Status *Status
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

// Engine ties Decide, a Runner, the status and the metrics together for the
// reconciler. It remembers, per DiskCache, the last status it produced, so
// a status write that failed or a reconcile that read a stale cache never
// repeats a run, and the last missed run it reported, so the Warning is
// recorded once. It is safe for concurrent reconciles; its zero value
// (real clock, default Runner, no metrics) is ready to use.
type Engine struct {
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
	status *Status   // last status produced by a run
	missed time.Time // last missed run reported
}

// Reconcile decides, runs maintenance when it is due, and returns the
// status, Events and requeue for the DiskCache. It blocks for the run
// (bounded by the Runner's per-shard timeout and parallelism).
func (e *Engine) Reconcile(ctx context.Context, req Request) Outcome {
	clk := e.clock()
	now := clk.Now()
	key := req.Namespace + "/" + req.Name
	m := e.recall(key, req.UID)

	base := req.Status
	if m.status != nil && !lastSchedule(m.status).Before(lastSchedule(base)) {
		// Our own later write, not (yet) in the cache or lost.
		base = m.status
	}
	var out Outcome
	var sched *Schedule
	if req.Spec.Expire || req.Spec.Cull {
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
		e.update(key, req.UID, func(m *memo) { m.missed = d.Missed })
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
	res := e.runner(clk).Run(ctx, Job{
		Shards:     req.Shards,
		Expire:     req.Spec.Expire,
		Cull:       req.Spec.Cull,
		Resolve:    access.Resolve,
		Token:      access.Token,
		HTTPClient: access.HTTPClient,
	})
	e.Metrics.Observe(req.Namespace, req.Name, &res)
	out.Result = &res
	out.Status = StatusAfterRun(base, d, &res, d.NextScheduleTime)
	out.RequeueAfter = RequeueAfter(d.NextScheduleTime, clk.Now())
	out.Events = append(out.Events, EventFor(d, &res))
	st := out.Status.DeepCopy()
	e.update(key, req.UID, func(m *memo) { m.status = st })
	return out
}

// Forget drops what the engine remembers about a deleted DiskCache, and
// its metric series.
func (e *Engine) Forget(namespace, name string) {
	e.mu.Lock()
	delete(e.mem, namespace+"/"+name)
	e.mu.Unlock()
	e.Metrics.Forget(namespace, name)
}

func (e *Engine) clock() clock.PassiveClock {
	if e.Clock == nil {
		return clock.RealClock{}
	}
	return e.Clock
}

func (e *Engine) runner(clk clock.PassiveClock) Executor {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.Runner == nil {
		e.Runner = &Runner{Clock: clk}
	}
	return e.Runner
}

func (e *Engine) recall(key, uid string) memo {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.mem[key]
	if m.uid != uid {
		return memo{}
	}
	return m
}

func (e *Engine) update(key, uid string, f func(*memo)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mem == nil {
		e.mem = map[string]memo{}
	}
	m := e.mem[key]
	if m.uid != uid {
		m = memo{uid: uid}
	}
	f(&m)
	e.mem[key] = m
}

func lastSchedule(s *Status) time.Time {
	if s == nil || s.LastScheduleTime == nil {
		return time.Time{}
	}
	return s.LastScheduleTime.Time
}
