package maintenance

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// fakeExecutor records jobs and answers with canned shard results.
type fakeExecutor struct {
	mu   sync.Mutex
	jobs []Job
	clk  *clocktesting.FakePassiveClock
	fail map[int]error
	took time.Duration
}

func (f *fakeExecutor) Run(_ context.Context, job Job) Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs = append(f.jobs, job)
	res := Result{Started: f.clk.Now()}
	f.clk.SetTime(f.clk.Now().Add(f.took))
	for i := range job.Shards {
		s := ShardResult{Shard: i, Finished: f.clk.Now(), Err: f.fail[i]}
		if s.Err == nil {
			s.Expired, s.Culled, s.Count, s.Volume, s.HasUsage = 2, 1, 10, 4096, true
		}
		res.Expired += s.Expired
		res.Culled += s.Culled
		res.Shards = append(res.Shards, s)
	}
	res.Finished = f.clk.Now()
	return res
}

func (f *fakeExecutor) runs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.jobs)
}

func gather(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			return value(m), true
		}
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

func baseRequest(status *cachev1alpha1.MaintenanceStatus) Request {
	return Request{
		Namespace:    "ns",
		Name:         "c",
		UID:          "uid-1",
		CreationTime: time.Date(2026, 5, 1, 11, 50, 0, 0, time.UTC),
		Spec:         cachev1alpha1.MaintenanceSpec{Schedule: "*/5 * * * *", TimeZone: "UTC"},
		Shards:       3,
		Status:       status,
		Connect: func(context.Context) (Access, error) {
			return Access{Token: "t", Resolve: func(int) string { return "http://unused" }}, nil
		},
	}
}

// TestSchedulerTimeline drives the Scheduler like the reconciler: reconcile,
// write the status back, requeue after RequeueAfter on the fake clock.
func TestSchedulerTimeline(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 5, 1, 11, 58, 0, 0, time.UTC))
	ex := &fakeExecutor{clk: clk, fail: map[int]error{}, took: 1500 * time.Millisecond}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	e := &Scheduler{Runner: ex, Metrics: m, Clock: clk}
	var status *cachev1alpha1.MaintenanceStatus
	reconcile := func(mut func(*Request)) Outcome {
		req := baseRequest(status)
		req.CreationTime = time.Date(2026, 5, 1, 11, 56, 30, 0, time.UTC)
		if mut != nil {
			mut(&req)
		}
		out := e.Reconcile(context.Background(), req)
		status = out.Status
		return out
	}

	out := reconcile(nil)
	if out.Result != nil || out.RequeueAfter != 2*time.Minute || len(out.Events) != 0 {
		t.Fatalf("before the first run: %+v", out)
	}
	if !out.Status.NextScheduleTime.Equal(&metav1.Time{Time: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}) {
		t.Fatalf("next %v", out.Status.NextScheduleTime)
	}

	clk.SetTime(clk.Now().Add(out.RequeueAfter))
	out = reconcile(nil)
	if out.Result == nil || ex.runs() != 1 {
		t.Fatalf("12:00: no run: %+v", out)
	}
	job := ex.jobs[0]
	if job.Shards != 3 || !job.Expire || !job.Cull || job.Token != "t" || job.Resolve == nil {
		t.Fatalf("job %+v", job)
	}
	st := out.Status
	if !st.LastScheduleTime.Time.Equal(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)) ||
		!st.LastSuccessfulTime.Time.Equal(time.Date(2026, 5, 1, 12, 0, 1, 0, time.UTC)) || // truncated to seconds
		st.Expired != 6 || st.Culled != 3 || st.DurationMillis != 1500 || st.LastError != "" || len(st.PerShard) != 3 {
		t.Fatalf("status after the run: %+v", st)
	}
	if out.RequeueAfter != 5*time.Minute-1500*time.Millisecond {
		t.Fatalf("requeue after the run %v", out.RequeueAfter)
	}
	if len(out.Events) != 1 || out.Events[0].Type != corev1.EventTypeNormal || out.Events[0].Reason != ReasonSucceeded ||
		!strings.Contains(out.Events[0].Message, "expired 6 and culled 3 items on 3 shards") {
		t.Fatalf("events %+v", out.Events)
	}

	// Reconciles before the next run (pod events, our own status write)
	// run nothing; the status is stable.
	prev := status.DeepCopy()
	clk.SetTime(clk.Now().Add(10 * time.Second))
	out = reconcile(nil)
	if out.Result != nil || ex.runs() != 1 || !statusEqual(prev, out.Status) {
		t.Fatalf("idle reconcile changed things: %+v", out)
	}

	// The status write of the next run is lost (conflict) and the cache
	// still shows the old status: the Scheduler remembers, no second run.
	clk.SetTime(time.Date(2026, 5, 1, 12, 5, 0, 0, time.UTC))
	stale := status.DeepCopy()
	out = reconcile(nil)
	if ex.runs() != 2 {
		t.Fatalf("12:05: %d runs", ex.runs())
	}
	status = stale
	clk.SetTime(clk.Now().Add(5 * time.Second))
	out = reconcile(nil)
	if ex.runs() != 2 || out.Result != nil {
		t.Fatal("a stale status repeated the run")
	}
	if !out.Status.LastScheduleTime.Time.Equal(time.Date(2026, 5, 1, 12, 5, 0, 0, time.UTC)) {
		t.Fatalf("the remembered status was not used: %+v", out.Status)
	}

	// A shard fails at 12:10: Warning naming it, per-shard error, last
	// success unchanged, failure counted.
	ex.fail[1] = errors.New("expire: connection refused")
	clk.SetTime(time.Date(2026, 5, 1, 12, 10, 0, 0, time.UTC))
	out = reconcile(nil)
	st = out.Status
	if st.LastError != "shard 1: expire: connection refused" || st.PerShard[1].Error != "expire: connection refused" || st.PerShard[0].Error != "" {
		t.Fatalf("failed run status: %+v", st)
	}
	if !st.LastSuccessfulTime.Time.Equal(time.Date(2026, 5, 1, 12, 5, 1, 0, time.UTC)) {
		t.Fatalf("last success moved on a failure: %v", st.LastSuccessfulTime)
	}
	if ev := out.Events[0]; ev.Type != corev1.EventTypeWarning || ev.Reason != ReasonFailed ||
		!strings.Contains(ev.Message, "failed on 1 of 3 shards (shard 1)") || !strings.Contains(ev.Message, "shard 1: expire: connection refused") {
		t.Fatalf("warning %+v", ev)
	}
	delete(ex.fail, 1)

	// Manual trigger between runs: one run now, recorded; the same value
	// again does nothing.
	clk.SetTime(time.Date(2026, 5, 1, 12, 12, 30, 0, time.UTC))
	trig := func(r *Request) { r.Trigger = "now" }
	out = reconcile(trig)
	if ex.runs() != 4 || !out.Decision.Manual || out.Status.LastTrigger != "now" ||
		!out.Status.LastScheduleTime.Time.Equal(time.Date(2026, 5, 1, 12, 12, 30, 0, time.UTC)) {
		t.Fatalf("manual run: %d runs, %+v", ex.runs(), out.Status)
	}
	if !strings.Contains(out.Events[0].Message, `requested by cache.diskcache.dev/run-maintenance="now"`) {
		t.Fatalf("manual event %q", out.Events[0].Message)
	}
	clk.SetTime(clk.Now().Add(time.Second))
	if out = reconcile(trig); ex.runs() != 4 {
		t.Fatal("the handled trigger ran again")
	}
	// The scheduled 12:15 still runs.
	clk.SetTime(time.Date(2026, 5, 1, 12, 15, 0, 0, time.UTC))
	if out = reconcile(trig); ex.runs() != 5 || out.Decision.Manual {
		t.Fatalf("12:15 after a manual run: %+v", out.Decision)
	}

	// Metrics.
	labels := map[string]string{"namespace": "ns", "name": "c"}
	for name, want := range map[string]float64{MetricRuns: 5, MetricFailures: 1, MetricLastDuration: 1.5} {
		if got, ok := gather(t, reg, name, labels); !ok || got != want {
			t.Errorf("%s = %v (%v), want %v", name, got, ok, want)
		}
	}
	if got, _ := gather(t, reg, MetricItemsRemoved, map[string]string{"name": "c", "kind": KindExpired}); got != 5*6-2 {
		t.Errorf("expired items %v", got)
	}
	if got, _ := gather(t, reg, MetricItemsRemoved, map[string]string{"name": "c", "kind": KindCulled}); got != 5*3-1 {
		t.Errorf("culled items %v", got)
	}
	if got, _ := gather(t, reg, MetricLastSuccess, labels); got != float64(time.Date(2026, 5, 1, 12, 15, 1, 500e6, time.UTC).UnixNano())/1e9 {
		t.Errorf("last success %v", got)
	}
	e.Forget("ns", "c")
	if _, ok := gather(t, reg, MetricRuns, labels); ok {
		t.Error("Forget kept the series")
	}
}

func statusEqual(a, b *cachev1alpha1.MaintenanceStatus) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestSchedulerRecreatedObjectForgetsMemory(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	ex := &fakeExecutor{clk: clk}
	e := &Scheduler{Runner: ex, Clock: clk}
	req := baseRequest(nil)
	if out := e.Reconcile(context.Background(), req); out.Result == nil {
		t.Fatal("no run")
	}
	// Deleted and created again with the same name: a new object, fresh
	// history (its creation time decides), nothing of the old status.
	req.UID, req.CreationTime = "uid-2", clk.Now().Add(time.Second)
	clk.SetTime(clk.Now().Add(2 * time.Second))
	out := e.Reconcile(context.Background(), req)
	if out.Result != nil || out.Status.LastScheduleTime != nil {
		t.Fatalf("recreated object inherited: %+v", out.Status)
	}
}

func TestSchedulerMissedEventOnce(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 5, 1, 12, 7, 0, 0, time.UTC))
	ex := &fakeExecutor{clk: clk}
	e := &Scheduler{Runner: ex, Clock: clk}
	st := &cachev1alpha1.MaintenanceStatus{LastScheduleTime: Time(time.Date(2026, 5, 1, 11, 0, 0, 0, time.UTC))}
	req := baseRequest(st)
	req.Spec.StartingDeadlineSeconds = ptr.To[int64](60)
	out := e.Reconcile(context.Background(), req)
	if out.Result != nil || len(out.Events) != 1 || out.Events[0].Reason != ReasonMissed || out.Events[0].Type != corev1.EventTypeWarning ||
		!strings.Contains(out.Events[0].Message, "2026-05-01T12:05:00Z") || !strings.Contains(out.Events[0].Message, "(60)") {
		t.Fatalf("missed: %+v", out)
	}
	clk.SetTime(clk.Now().Add(time.Minute))
	if out := e.Reconcile(context.Background(), req); len(out.Events) != 0 {
		t.Fatalf("the missed run was reported again: %+v", out.Events)
	}
	// The next run is on time.
	clk.SetTime(time.Date(2026, 5, 1, 12, 10, 0, 0, time.UTC))
	if out := e.Reconcile(context.Background(), req); out.Result == nil {
		t.Fatal("12:10 did not run")
	}
}

func TestSchedulerConnectError(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	ex := &fakeExecutor{clk: clk}
	e := &Scheduler{Runner: ex, Clock: clk}
	req := baseRequest(nil)
	boom := errors.New("get auth Secret: boom")
	req.Connect = func(context.Context) (Access, error) { return Access{}, boom }
	out := e.Reconcile(context.Background(), req)
	if !errors.Is(out.Err, boom) || out.Result != nil || ex.runs() != 0 || out.Status.LastScheduleTime != nil {
		t.Fatalf("%+v", out)
	}
	// Retried (backoff) after the error: the run happens then.
	req = baseRequest(out.Status)
	clk.SetTime(clk.Now().Add(3 * time.Second))
	if out := e.Reconcile(context.Background(), req); out.Result == nil || ex.runs() != 1 {
		t.Fatalf("retry: %+v", out)
	}
}

func TestSchedulerInvalidSchedule(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC))
	ex := &fakeExecutor{clk: clk}
	e := &Scheduler{Runner: ex, Clock: clk}
	prev := &cachev1alpha1.MaintenanceStatus{NextScheduleTime: Time(clk.Now().Add(time.Minute))}
	req := baseRequest(prev)
	req.Spec.Schedule = "@hourly"
	out := e.Reconcile(context.Background(), req)
	if !IsScheduleError(out.ScheduleErr) || out.Status.NextScheduleTime != nil || out.RequeueAfter != 0 || out.Result != nil {
		t.Fatalf("%+v", out)
	}
	// The trigger still works.
	req.Trigger = "1"
	if out = e.Reconcile(context.Background(), req); out.Result == nil || ex.runs() != 1 {
		t.Fatalf("trigger with an invalid schedule: %+v", out)
	}
	// Expire and cull both off: nothing to schedule, and the schedule is
	// not even looked at.
	req = baseRequest(nil)
	req.Spec.Expire, req.Spec.Cull, req.Spec.Schedule = ptr.To(false), ptr.To(false), "nonsense"
	clk.SetTime(clk.Now().Add(10 * time.Minute))
	if out = e.Reconcile(context.Background(), req); out.ScheduleErr != nil || out.Result != nil || out.RequeueAfter != 0 {
		t.Fatalf("both off: %+v", out)
	}
}

// TestSchedulerAgainstCacheservers: a scheduled run through the Scheduler and the
// real Runner against cacheserver processes, one of them down.
func TestSchedulerAgainstCacheservers(t *testing.T) {
	up := testserver.Start(t, testserver.Options{Token: testToken, Args: []string{"--cull-limit", "0"}})
	down := testserver.Start(t, testserver.Options{Token: testToken})
	down.Kill()
	fill(t, newClient(t, up.URL), "dead", 7, 10, kv.ExpireAfterSeconds(-1))
	urls := []string{up.URL, down.URL}

	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 5, 1, 3, 0, 5, 0, time.UTC))
	reg := prometheus.NewRegistry()
	m, _ := NewMetrics(reg)
	e := &Scheduler{Metrics: m, Clock: clk, Runner: &Runner{Clock: clk, Retries: -1}}
	req := baseRequest(&cachev1alpha1.MaintenanceStatus{LastScheduleTime: Time(time.Date(2026, 4, 30, 3, 0, 0, 0, time.UTC))})
	req.Spec.Schedule, req.Spec.TimeZone, req.Shards = "0 3 * * *", "UTC", 2
	req.Connect = func(context.Context) (Access, error) {
		return Access{Token: testToken, Resolve: func(i int) string { return urls[i] }}, nil
	}
	out := e.Reconcile(context.Background(), req)
	st := out.Status
	if out.Result == nil || st.Expired != 7 || st.PerShard[0].Expired != 7 || st.PerShard[0].Count != 0 || st.PerShard[0].Error != "" {
		t.Fatalf("status %+v", st)
	}
	if !strings.Contains(st.PerShard[1].Error, "connection refused") || !strings.HasPrefix(st.LastError, "shard 1: expire: ") {
		t.Fatalf("down shard: %+v", st)
	}
	if ev := out.Events[0]; ev.Type != corev1.EventTypeWarning || ev.Reason != ReasonFailed ||
		!strings.Contains(ev.Message, "(shard 1)") || !strings.Contains(ev.Message, "1 other shard expired 7") {
		t.Fatalf("event %+v", ev)
	}
	if got, _ := gather(t, reg, MetricItemsRemoved, map[string]string{"kind": KindExpired}); got != 7 {
		t.Fatalf("metric expired %v", got)
	}
	if got, _ := gather(t, reg, MetricFailures, nil); got != 1 {
		t.Fatalf("metric failures %v", got)
	}
}

func TestMetricsSharedRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewMetrics(reg) // a second reconciler in the same process
	if err != nil {
		t.Fatal(err)
	}
	res := &Result{Expired: 1}
	a.Observe("ns", "x", res)
	b.Observe("ns", "x", res)
	if got, _ := gather(t, reg, MetricRuns, map[string]string{"name": "x"}); got != 2 {
		t.Fatalf("runs %v", got)
	}
	var nilMetrics *Metrics
	nilMetrics.Observe("ns", "x", res) // no-op
	nilMetrics.Forget("ns", "x")
}

// TestNextScheduleTimeAfterALongRun: a run that outlasts its period
// reports the first scheduled time after it ended, not one that went by
// while it ran.
func TestNextScheduleTimeAfterALongRun(t *testing.T) {
	start := time.Date(2026, 3, 5, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(start)
	sch := &Scheduler{Runner: &fakeExecutor{clk: clk, took: 3 * time.Minute}, Clock: clk}
	out := sch.Reconcile(context.Background(), Request{Namespace: "n", Name: "c", UID: "u", CreationTime: start.Add(-time.Hour),
		Spec:   cachev1alpha1.MaintenanceSpec{Schedule: "* * * * *", TimeZone: "UTC", Expire: ptr.To(true), Cull: ptr.To(true)},
		Shards: 2, Status: &cachev1alpha1.MaintenanceStatus{LastScheduleTime: Time(start.Add(-time.Minute))}})
	if out.Result == nil {
		t.Fatal("no run")
	}
	if want := start.Add(4 * time.Minute); !out.Status.NextScheduleTime.Time.Equal(want) {
		t.Errorf("nextScheduleTime %s after a run from %s to %s, want %s", out.Status.NextScheduleTime, start, clk.Now(), want)
	}
}
