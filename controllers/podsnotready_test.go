package controllers

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

func testPod(name string, age time.Duration, ready bool) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Now().Add(-age))}}
	if ready {
		p.Status.Phase = corev1.PodRunning
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		return p
	}
	p.Status.Phase = corev1.PodPending
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
		Reason: "Unschedulable", Message: "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims"}}
	return p
}

func testAnnouncement(epoch int64, shards, previous int) topology.Announcement {
	urls := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "http://s" + string(rune('0'+i))
		}
		return out
	}
	a := topology.Announcement{Layout: topology.Layout{Epoch: epoch, Shards: urls(shards)}}
	if previous > 0 {
		a.Previous = &topology.Layout{Epoch: epoch - 1, Shards: urls(previous)}
	}
	return a
}

// A scale-up whose new pod cannot start (a claim that cannot bind) leaves
// the cache serving every key by the announced layout: Available, and,
// once the pod has been waiting past the deadline, Degraded naming it and
// why. It was Available=False while serving, and never Degraded.
func TestAPodStuckInAScaleUp(t *testing.T) {
	dc := defaulted(func(dc *cachev1alpha1.DiskCache) { dc.Name, dc.Spec.Shards = "web", 5 })
	r := &DiskCacheReconciler{PodReadyDeadline: 10 * time.Minute}
	pods := []corev1.Pod{testPod("web-0", time.Hour, true), testPod("web-1", time.Hour, true), testPod("web-2", time.Hour, true),
		testPod("web-3", 11*time.Minute, false), testPod("web-4", time.Minute, false)}

	layoutReady, problems := r.podsNotReady(dc, pods, testAnnouncement(4, 3, 0), 5)
	if !layoutReady {
		t.Error("the 3 shards of the layout are ready, and the layout was not")
	}
	if len(problems) != 1 || problems[0].reason != cachev1alpha1.ReasonPodsNotReady ||
		!strings.Contains(problems[0].message, "pod web-3 is not ready") || !strings.Contains(problems[0].message, "unbound immediate PersistentVolumeClaims") {
		t.Errorf("problems %+v; want web-3 (past the deadline) and why, not web-4", problems)
	}

	// During a move from 5 shards, the keys of shards 3 and 4 are not served.
	if layoutReady, _ := r.podsNotReady(dc, pods, testAnnouncement(5, 3, 5), 5); layoutReady {
		t.Error("a move from 5 shards with shards 3 and 4 not ready: the layout was ready")
	}

	sts := &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{Replicas: ptrTo[int32](5)},
		Status: appsv1.StatefulSetStatus{Replicas: 5, ReadyReplicas: 3, UpdatedReplicas: 5}}
	topo := &topologyOutcome{announced: testAnnouncement(4, 3, 0), replicas: 5, layoutReady: true}
	st := computeStatus(dc, &cachev1alpha1.DiskCacheStatus{}, sts, problems, topo)
	if err := conditionIs(&cachev1alpha1.DiskCache{Status: *st}, cachev1alpha1.ConditionAvailable, metav1.ConditionTrue, ""); err != nil {
		t.Error(err)
	}
	if err := conditionIs(&cachev1alpha1.DiskCache{Status: *st}, cachev1alpha1.ConditionDegraded, metav1.ConditionTrue, cachev1alpha1.ReasonPodsNotReady); err != nil {
		t.Error(err)
	}
	topo.layoutReady = false
	st = computeStatus(dc, &cachev1alpha1.DiskCacheStatus{}, sts, nil, topo)
	if err := conditionIs(&cachev1alpha1.DiskCache{Status: *st}, cachev1alpha1.ConditionAvailable, metav1.ConditionFalse, cachev1alpha1.ReasonShardsUnavailable); err != nil {
		t.Error(err)
	}
}
