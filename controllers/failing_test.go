package controllers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// A shard whose server keeps exiting makes the DiskCache Degraded with the
// server's own last words, and raises a Warning Event about its pod; once
// the pod serves again the condition clears.
func TestFailingShardIsReported(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "crashy", nil)
	waitChildren(t, ns, "crashy")
	pod := createPod(t, ns, "crashy", "crashy-0", false)
	why := "cacheserver: --fanout 4: engine: /data holds 8 fanout databases (000 to 007) with items, made for another fanout than 4"
	eventually(t, "pod crash-looping", func() error {
		if err := k8s.Get(bg, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: ContainerName, Image: testImage, ImageID: testImage, RestartCount: 3,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 1, Reason: "Error", Message: `{"level":"INFO","msg":"starting"}` + "\n" + why + "\n",
			}},
		}}
		return k8s.Status().Update(bg, pod)
	})
	wantNote := "pod crashy-0: cacheserver exited with code 1 (restarts: 3): " + why
	eventually(t, "Degraded: ShardFailing", func() error {
		dc := get(t, ns, "crashy", &cachev1alpha1.DiskCache{})
		if err := conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionTrue, cachev1alpha1.ReasonShardFailing); err != nil {
			return err
		}
		c := findCondition(dc, cachev1alpha1.ConditionDegraded)
		return want(strings.Contains(c.Message, wantNote), "message %q, want it to hold %q", c.Message, wantNote)
	})
	eventually(t, "ShardFailing event", func() error {
		for _, e := range eventsFor(t, ns, "crashy") {
			if e.Reason == cachev1alpha1.ReasonShardFailing && e.Type == corev1.EventTypeWarning &&
				e.Note == wantNote && e.Related != nil && e.Related.Name == "crashy-0" {
				return nil
			}
		}
		return want(false, "no ShardFailing event about crashy-0")
	})

	// Serving again: the failure is history.
	eventually(t, "pod serving again", func() error {
		if err := k8s.Get(bg, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		cs := &pod.Status.ContainerStatuses[0]
		cs.Ready, cs.State = true, corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
		return k8s.Status().Update(bg, pod)
	})
	eventually(t, "no longer ShardFailing", func() error {
		dc := get(t, ns, "crashy", &cachev1alpha1.DiskCache{})
		c := findCondition(dc, cachev1alpha1.ConditionDegraded)
		return want(c != nil && c.Reason != cachev1alpha1.ReasonShardFailing, "Degraded %+v", c)
	})
}

func TestFailingShards(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	status := func(name string, ready bool, state, last *corev1.ContainerStateTerminated) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}}
		p.Spec.Containers = []corev1.Container{{Name: ContainerName, Resources: corev1.ResourceRequirements{
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}}}}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ContainerName, Ready: ready, RestartCount: 2,
			State: corev1.ContainerState{Terminated: state}, LastTerminationState: corev1.ContainerState{Terminated: last}}}
		return p
	}
	waiting := func(name, reason, message string) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ContainerName,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}}}
		return p
	}
	oom := func(ago time.Duration) *corev1.ContainerStateTerminated {
		// With FallbackToLogsOnError the message is the last log line,
		// which says nothing about the kill.
		return &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled",
			Message: `{"level":"INFO","msg":"serving"}`, FinishedAt: metav1.NewTime(now.Add(-ago))}
	}
	long := strings.Repeat("x", 1000)
	pods := []corev1.Pod{
		status("c-3", false, nil, oom(time.Hour)),
		status("c-0", true, nil, &corev1.ContainerStateTerminated{ExitCode: 1, Message: "old trouble"}), // serving again
		status("c-1", false, nil, &corev1.ContainerStateTerminated{ExitCode: 0}),                        // a clean stop
		status("c-2", false, &corev1.ContainerStateTerminated{ExitCode: 2, Message: "a\n\n" + long + "\n"}, nil),
		status("c-4", false, nil, nil), // starting
		waiting("c-5", "ImagePullBackOff", "Back-off pulling image \"example.com/cacheserver:nope\""),
		waiting("c-6", "ContainerCreating", ""),                    // on its way
		status("c-7", true, nil, oom(3*time.Minute)),               // serving again, killed recently
		status("c-8", true, nil, oom(OOMKilledWindow+time.Second)), // serving again, killed long ago
	}
	got, recheck := failingShards(pods, now)
	var notes []string
	for _, f := range got {
		notes = append(notes, f.reason+" "+f.note)
	}
	wantNotes := []string{
		"ShardFailing pod c-2: cacheserver exited with code 2 (restarts: 2): " + long[:maxFailureNote] + "…",
		"ShardOOMKilled pod c-3: cacheserver was OOMKilled (memory limit 128Mi) at 2025-03-04T04:06:07Z (restarts: 2): raise spec.resources.limits.memory or lower spec.hotValueBytes (docs/operations.md, Memory)",
		`ShardFailing pod c-5: cacheserver cannot start: ImagePullBackOff: Back-off pulling image "example.com/cacheserver:nope"`,
		"ShardOOMKilled pod c-7: cacheserver was OOMKilled (memory limit 128Mi) at 2025-03-04T05:03:07Z (restarts: 2): raise spec.resources.limits.memory or lower spec.hotValueBytes (docs/operations.md, Memory)",
	}
	if strings.Join(notes, "\n") != strings.Join(wantNotes, "\n") {
		t.Errorf("failingShards:\n%s\nwant:\n%s", strings.Join(notes, "\n"), strings.Join(wantNotes, "\n"))
	}
	if recheck != OOMKilledWindow-3*time.Minute {
		t.Errorf("recheck %v, want when c-7's kill is %v old", recheck, OOMKilledWindow)
	}
}

// One Event per termination of a pod's server, not one per reconcile.
func TestFailureEventsOncePerTermination(t *testing.T) {
	var r failuresReported
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "c-0", UID: "p0"}}
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "c-1", UID: "p1"}}
	killed := func(p *corev1.Pod, restarts int32) shardFailure {
		return shardFailure{pod: p, key: terminationKey(&corev1.ContainerStateTerminated{ExitCode: 137,
			FinishedAt: metav1.NewTime(time.Unix(int64(restarts)*60, 0))})}
	}
	check := func(what string, got []shardFailure, want ...string) {
		t.Helper()
		var names []string
		for _, f := range got {
			names = append(names, f.pod.Name)
		}
		if fmt.Sprint(names) != fmt.Sprint(want) {
			t.Errorf("%s: reported %v, want %v", what, names, want)
		}
	}
	check("first kill", r.fresh("dc", []shardFailure{killed(pod, 1)}), "c-0")
	check("same kill, next reconcile", r.fresh("dc", []shardFailure{killed(pod, 1)}))
	check("same kill, another pod fails", r.fresh("dc", []shardFailure{killed(pod, 1), killed(other, 1)}), "c-1")
	check("another DiskCache", r.fresh("dc2", []shardFailure{killed(pod, 1)}), "c-0")
	check("next kill", r.fresh("dc", []shardFailure{killed(pod, 2), killed(other, 1)}), "c-0")
	check("both serving", r.fresh("dc", nil))
	check("failing again", r.fresh("dc", []shardFailure{killed(pod, 3)}), "c-0")
}

// A shard killed at its memory limit is reported as OOMKilled, with the
// limit and what to change, not by its last log line; the DiskCache stays
// Degraded while the kill is recent, also once the shard serves again, and
// each kill raises one Event.
func TestOOMKilledShardIsReported(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "oom", nil)
	waitChildren(t, ns, "oom")
	pod := createPod(t, ns, "oom", "oom-0", true)
	killed := func(at time.Time, restarts int32) {
		t.Helper()
		eventually(t, "pod OOMKilled and serving again", func() error {
			if err := k8s.Get(bg, client.ObjectKeyFromObject(pod), pod); err != nil {
				return err
			}
			pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
				Name: ContainerName, Image: testImage, ImageID: testImage, RestartCount: restarts, Ready: true,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 137, Reason: "OOMKilled", Message: `{"level":"INFO","msg":"serving"}`, FinishedAt: metav1.NewTime(at),
				}},
			}}
			return k8s.Status().Update(bg, pod)
		})
	}
	oomEvents := func() []string {
		var notes []string
		for _, e := range eventsFor(t, ns, "oom") {
			if e.Reason == cachev1alpha1.ReasonShardOOMKilled && e.Type == corev1.EventTypeWarning && e.Related != nil && e.Related.Name == "oom-0" {
				notes = append(notes, e.Note)
			}
		}
		return notes
	}
	first := time.Now().Add(-time.Minute).Truncate(time.Second)
	killed(first, 1)
	wantNote := "pod oom-0: cacheserver was OOMKilled (no memory limit: the node ran out of memory) at " + first.UTC().Format(time.RFC3339) + " (restarts: 1)"
	eventually(t, "Degraded: ShardOOMKilled", func() error {
		dc := get(t, ns, "oom", &cachev1alpha1.DiskCache{})
		if err := conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionTrue, cachev1alpha1.ReasonShardOOMKilled); err != nil {
			return err
		}
		c := findCondition(dc, cachev1alpha1.ConditionDegraded)
		return want(strings.Contains(c.Message, wantNote) && !strings.Contains(c.Message, "serving"), "message %q, want it to hold %q", c.Message, wantNote)
	})
	eventually(t, "one ShardOOMKilled event", func() error {
		notes := oomEvents()
		return want(len(notes) == 1 && strings.HasPrefix(notes[0], wantNote), "events %q", notes)
	})

	second := first.Add(30 * time.Second)
	killed(second, 2)
	eventually(t, "an event for the second kill", func() error {
		notes := oomEvents()
		return want(len(notes) == 2, "events %q", notes)
	})

	// Long enough ago: no longer Degraded.
	killed(time.Now().Add(-OOMKilledWindow-time.Minute), 2)
	eventually(t, "no longer ShardOOMKilled", func() error {
		dc := get(t, ns, "oom", &cachev1alpha1.DiskCache{})
		c := findCondition(dc, cachev1alpha1.ConditionDegraded)
		return want(c != nil && c.Reason != cachev1alpha1.ReasonShardOOMKilled, "Degraded %+v", c)
	})
}
