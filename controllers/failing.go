package controllers

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// maxFailureNote bounds the server's words quoted in a condition or Event.
const maxFailureNote = 400

// OOMKilledWindow is how long after a shard's cacheserver was OOMKilled
// the DiskCache stays Degraded (ShardOOMKilled), even once the shard serves
// again: a shard killed every few minutes is ready most of the time.
const OOMKilledWindow = 10 * time.Minute

// reasonOOMKilled is the kubelet's reason for a container the kernel killed
// at its memory limit.
const reasonOOMKilled = "OOMKilled"

// shardFailure is a cache pod whose cacheserver exited with an error, or
// cannot be started, and is not serving; or whose cacheserver was
// OOMKilled within OOMKilledWindow.
type shardFailure struct {
	pod    *corev1.Pod
	reason string // ReasonShardFailing or ReasonShardOOMKilled
	note   string // "pod NAME: cacheserver exited with code N (restarts: M): WHY", "… cannot start: REASON: WHY", or "… was OOMKilled …"
	// key names this failure of this pod (the termination, or the start
	// failure): one Event is raised per key, not one per reconcile.
	key string
}

// startFailures are the reasons a container waits with when the kubelet
// cannot start it at all (no exit code to look at).
var startFailures = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
}

// failingShards finds the pods whose cacheserver container is not ready
// and either last ended with a non-zero exit code or cannot be started. A
// server that refuses to start (a data directory made for another fanout,
// a flag it rejects) restarts in a loop, and its last line on the way out,
// which the container's termination message holds
// (TerminationMessageFallbackToLogsOnError), says why; a container the
// kubelet cannot start (an image it cannot pull) waits with a reason and
// message that say why. A container the kernel killed at its memory limit
// (OOMKilled) is reported as that, not by its last log line, which is just
// whatever it was doing, and until OOMKilledWindow after the kill also
// while it is ready again. recheck is when the first of those stops being
// reported (0: none). Sorted by pod name.
func failingShards(pods []corev1.Pod, now time.Time) (out []shardFailure, recheck time.Duration) {
	for i := range pods {
		pod := &pods[i]
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.Name != ContainerName {
				continue
			}
			t := cs.State.Terminated
			if t == nil {
				t = cs.LastTerminationState.Terminated
			}
			if t != nil && t.Reason == reasonOOMKilled {
				if cs.Ready {
					left := t.FinishedAt.Add(OOMKilledWindow).Sub(now)
					if t.FinishedAt.IsZero() || left <= 0 {
						continue
					}
					if recheck == 0 || left < recheck {
						recheck = left
					}
				}
				out = append(out, shardFailure{pod: pod, reason: cachev1alpha1.ReasonShardOOMKilled,
					note: oomNote(pod, t, cs.RestartCount), key: terminationKey(t)})
				continue
			}
			if cs.Ready {
				continue
			}
			if w := cs.State.Waiting; w != nil && startFailures[w.Reason] {
				note := fmt.Sprintf("pod %s: %s cannot start: %s", pod.Name, ContainerName, w.Reason)
				if m := lastLine(w.Message); m != "" {
					note += ": " + m
				}
				// ErrImagePull and ImagePullBackOff alternate: one key for
				// the pod's start failures until it restarts.
				out = append(out, shardFailure{pod: pod, reason: cachev1alpha1.ReasonShardFailing, note: note,
					key: fmt.Sprintf("start/%d", cs.RestartCount)})
				continue
			}
			if t == nil || t.ExitCode == 0 {
				continue
			}
			why := lastLine(t.Message)
			if why == "" {
				why = t.Reason
			}
			note := fmt.Sprintf("pod %s: %s exited with code %d (restarts: %d)", pod.Name, ContainerName, t.ExitCode, cs.RestartCount)
			if why != "" {
				note += ": " + why
			}
			out = append(out, shardFailure{pod: pod, reason: cachev1alpha1.ReasonShardFailing, note: note, key: terminationKey(t)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pod.Name < out[j].pod.Name })
	return out, recheck
}

// terminationKey names one termination of a container: the same while the
// kubelet moves it from state to lastState, another for the next one.
func terminationKey(t *corev1.ContainerStateTerminated) string {
	return fmt.Sprintf("exit/%s/%s/%d", t.ContainerID, t.FinishedAt.UTC().Format(time.RFC3339Nano), t.ExitCode)
}

// oomNote says that a shard was OOMKilled, at what limit and when, and what
// to change.
func oomNote(pod *corev1.Pod, t *corev1.ContainerStateTerminated, restarts int32) string {
	limit := "no memory limit: the node ran out of memory"
	for _, c := range pod.Spec.Containers {
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok && c.Name == ContainerName {
			limit = "memory limit " + q.String()
		}
	}
	when := ""
	if !t.FinishedAt.IsZero() {
		when = " at " + t.FinishedAt.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("pod %s: %s was OOMKilled (%s)%s (restarts: %d): raise spec.resources.limits.memory or lower spec.hotValueBytes (docs/operations.md, Memory)",
		pod.Name, ContainerName, limit, when, restarts)
}

// failuresReported remembers, per DiskCache, the failure of each of its
// pods last raised as an Event (pod UID to shardFailure.key).
type failuresReported struct{ m sync.Map }

// fresh returns the failures not reported yet, and remembers the current
// ones (forgetting pods that no longer fail). An operator restart reports
// each current failure once more.
func (f *failuresReported) fresh(dc types.UID, failures []shardFailure) []shardFailure {
	var last map[types.UID]string
	if v, ok := f.m.Load(dc); ok {
		last = v.(map[types.UID]string)
	}
	now := make(map[types.UID]string, len(failures))
	var out []shardFailure
	for _, sf := range failures {
		now[sf.pod.UID] = sf.key
		if last[sf.pod.UID] != sf.key {
			out = append(out, sf)
		}
	}
	if len(now) == 0 {
		f.m.Delete(dc)
	} else {
		f.m.Store(dc, now)
	}
	return out
}

// lastLine is the last non-empty line of s, at most maxFailureNote bytes.
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[i+1:])
	}
	if len(s) > maxFailureNote {
		s = strings.ToValidUTF8(s[:maxFailureNote], "") + "…"
	}
	return s
}
