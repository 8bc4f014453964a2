package maintenance

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

func TestStatusAfterRun(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	prev := &cachev1alpha1.MaintenanceStatus{
		LastSuccessfulTime: Time(t0.Add(-time.Hour)),
		LastTrigger:        "old",
		PerShard:           []cachev1alpha1.ShardMaintenanceStatus{{Shard: 0}, {Shard: 1}, {Shard: 2}, {Shard: 3}}, // scaled down since
	}
	res := &Result{
		Started: t0.Add(200 * time.Millisecond), Finished: t0.Add(2700 * time.Millisecond),
		Expired: 5, Culled: 2,
		Shards: []ShardResult{
			{Shard: 0, Expired: 5, Culled: 2, Count: 9, Volume: 8192, HasUsage: true, Finished: t0.Add(time.Second + 999*time.Millisecond)},
			{Shard: 1, Err: errors.New("cull: boom\nsecond line"), Finished: t0.Add(2 * time.Second)},
		},
	}
	d := Decision{Run: true, ScheduledTime: t0}
	st := StatusAfterRun(prev, d, res, t0.Add(5*time.Minute))
	want := `{"lastScheduleTime":"2026-05-01T12:00:00Z","lastSuccessfulTime":"2026-05-01T11:00:00Z","nextScheduleTime":"2026-05-01T12:05:00Z",` +
		`"expired":5,"culled":2,"perShard":[{"shard":0,"lastRunTime":"2026-05-01T12:00:01Z","expired":5,"culled":2,"count":9,"volumeBytes":8192},` +
		`{"shard":1,"lastRunTime":"2026-05-01T12:00:02Z","error":"cull: boom\nsecond line"}],` +
		`"lastError":"shard 1: cull: boom; second line","durationMillis":2500,"lastTrigger":"old"}`
	if got, _ := json.Marshal(st); string(got) != want {
		t.Fatalf("status\n got %s\nwant %s", got, want)
	}
	if len(prev.PerShard) != 4 {
		t.Fatal("prev was modified")
	}
	// A manual, successful run records the trigger and the success.
	res.Shards = res.Shards[:1]
	st = StatusAfterRun(st, Decision{Run: true, Manual: true, Trigger: "new", ScheduledTime: t0.Add(time.Minute)}, res, t0.Add(5*time.Minute))
	if st.LastTrigger != "new" || st.LastError != "" || !st.LastSuccessfulTime.Time.Equal(t0.Add(2*time.Second)) || len(st.PerShard) != 1 {
		t.Fatalf("manual: %+v", st)
	}
	// Round trip through JSON (what the API server stores) compares equal,
	// so steady reconciles write nothing.
	b, _ := json.Marshal(st)
	var back cachev1alpha1.MaintenanceStatus
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !back.LastSuccessfulTime.Equal(st.LastSuccessfulTime) || !back.PerShard[0].LastRunTime.Equal(st.PerShard[0].LastRunTime) {
		t.Fatal("times do not survive a round trip")
	}
	// A long error is cut at a rune boundary.
	res.Shards = []ShardResult{{Shard: 0, Err: errors.New(strings.Repeat("é", 2000))}}
	st = StatusAfterRun(nil, d, res, time.Time{})
	if len(st.LastError) > maxErrorLen || !utf8.ValidString(st.LastError) || !strings.HasSuffix(st.LastError, "…") || st.NextScheduleTime != nil {
		t.Fatalf("long error: %d bytes, valid %v", len(st.LastError), utf8.ValidString(st.LastError))
	}
}

func TestStatusWithNext(t *testing.T) {
	if st := StatusWithNext(nil, time.Time{}); st == nil || st.NextScheduleTime != nil {
		t.Fatalf("%+v", st)
	}
	prev := &cachev1alpha1.MaintenanceStatus{Expired: 3}
	st := StatusWithNext(prev, time.Date(2026, 5, 1, 12, 0, 0, 123, time.UTC))
	if st.Expired != 3 || st.NextScheduleTime.Time.Nanosecond() != 0 || prev.NextScheduleTime != nil {
		t.Fatalf("%+v", st)
	}
}

func TestEventFor(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	ok := &Result{Started: t0, Finished: t0.Add(1234 * time.Millisecond), Expired: 12, Culled: 4,
		Shards: []ShardResult{{Shard: 0}, {Shard: 1}, {Shard: 2}}}
	ev := EventFor(Decision{ScheduledTime: t0}, ok)
	if ev.Type != corev1.EventTypeNormal || ev.Reason != ReasonSucceeded || ev.Action != Action ||
		ev.Message != "expired 12 and culled 4 items on 3 shards in 1.234s (scheduled for 2026-05-01T12:00:00Z)" {
		t.Fatalf("%+v", ev)
	}
	bad := &Result{Started: t0, Finished: t0, Expired: 3,
		Shards: []ShardResult{{Shard: 0, Expired: 3}, {Shard: 1, Err: errors.New("expire: refused")}, {Shard: 2, Err: errors.New("cull: timed out")}}}
	ev = EventFor(Decision{Manual: true, Trigger: "now"}, bad)
	want := `failed on 2 of 3 shards (shards 1, 2); 1 other shard expired 3 and culled 0 items (requested by cache.diskcache.dev/run-maintenance="now"): shard 1: expire: refused; shard 2: cull: timed out`
	if ev.Type != corev1.EventTypeWarning || ev.Reason != ReasonFailed || ev.Message != want {
		t.Fatalf("got  %q\nwant %q", ev.Message, want)
	}
	// Many failing shards stay within the events API's 1 KiB note.
	many := &Result{}
	for i := range 128 {
		many.Shards = append(many.Shards, ShardResult{Shard: i, Err: errors.New("expire: client: POST /v1/expire: dial tcp: lookup pod.svc: no such host")})
	}
	if ev := EventFor(Decision{}, many); len(ev.Message) > maxEventLen || !strings.HasPrefix(ev.Message, "failed on 128 of 128 shards") {
		t.Fatalf("%d bytes: %q", len(ev.Message), ev.Message[:80])
	}
}
