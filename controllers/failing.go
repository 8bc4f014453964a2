package controllers

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// maxFailureNote bounds the server's words quoted in a condition or Event.
const maxFailureNote = 400

// shardFailure is a cache pod whose cacheserver exited with an error, or
// cannot be started, and is not serving.
type shardFailure struct {
	pod  *corev1.Pod
	note string // "pod NAME: cacheserver exited with code N (restarts: M): WHY", or "… cannot start: REASON: WHY"
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
// message that say why. Sorted by pod name.
func failingShards(pods []corev1.Pod) []shardFailure {
	var out []shardFailure
	for i := range pods {
		for _, cs := range pods[i].Status.ContainerStatuses {
			if cs.Name != ContainerName || cs.Ready {
				continue
			}
			if w := cs.State.Waiting; w != nil && startFailures[w.Reason] {
				note := fmt.Sprintf("pod %s: %s cannot start: %s", pods[i].Name, ContainerName, w.Reason)
				if m := lastLine(w.Message); m != "" {
					note += ": " + m
				}
				out = append(out, shardFailure{pod: &pods[i], note: note})
				continue
			}
			t := cs.State.Terminated
			if t == nil {
				t = cs.LastTerminationState.Terminated
			}
			if t == nil || t.ExitCode == 0 {
				continue
			}
			why := lastLine(t.Message)
			if why == "" {
				why = t.Reason
			}
			note := fmt.Sprintf("pod %s: %s exited with code %d (restarts: %d)", pods[i].Name, ContainerName, t.ExitCode, cs.RestartCount)
			if why != "" {
				note += ": " + why
			}
			out = append(out, shardFailure{pod: &pods[i], note: note})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pod.Name < out[j].pod.Name })
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
