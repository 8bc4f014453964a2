package controllers

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
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
	status := func(name string, ready bool, state, last *corev1.ContainerStateTerminated) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}}
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
	long := strings.Repeat("x", 1000)
	pods := []corev1.Pod{
		status("c-3", false, nil, &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}),
		status("c-0", true, nil, &corev1.ContainerStateTerminated{ExitCode: 1, Message: "old trouble"}), // serving again
		status("c-1", false, nil, &corev1.ContainerStateTerminated{ExitCode: 0}),                        // a clean stop
		status("c-2", false, &corev1.ContainerStateTerminated{ExitCode: 2, Message: "a\n\n" + long + "\n"}, nil),
		status("c-4", false, nil, nil), // starting
		waiting("c-5", "ImagePullBackOff", "Back-off pulling image \"example.com/cacheserver:nope\""),
		waiting("c-6", "ContainerCreating", ""), // on its way
	}
	got := failingShards(pods)
	var notes []string
	for _, f := range got {
		notes = append(notes, f.note)
	}
	wantNotes := []string{
		"pod c-2: cacheserver exited with code 2 (restarts: 2): " + long[:maxFailureNote] + "…",
		"pod c-3: cacheserver exited with code 137 (restarts: 2): OOMKilled",
		`pod c-5: cacheserver cannot start: ImagePullBackOff: Back-off pulling image "example.com/cacheserver:nope"`,
	}
	if strings.Join(notes, "\n") != strings.Join(wantNotes, "\n") {
		t.Errorf("failingShards:\n%s\nwant:\n%s", strings.Join(notes, "\n"), strings.Join(wantNotes, "\n"))
	}
}
