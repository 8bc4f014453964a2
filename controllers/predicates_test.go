package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// TestAutoscalerReadingsDoNotReconcile: a write of status.autoscaling
// alone (the autoscaler's reading, every pollInterval) does not queue a
// reconcile; any other change does.
func TestAutoscalerReadingsDoNotReconcile(t *testing.T) {
	old := defaulted(nil)
	old.ResourceVersion = "1"
	old.Status.Autoscaling = &cachev1alpha1.AutoscalingStatus{Decision: "held"}
	p := notAutoscalerReadings()
	for _, c := range []struct {
		name   string
		change func(*cachev1alpha1.DiskCache)
		want   bool
	}{
		{"a new reading", func(dc *cachev1alpha1.DiskCache) {
			now := metav1.NewTime(time.Now())
			dc.Status.Autoscaling.LastObservationTime = &now
			dc.Status.Autoscaling.Decision = "changed"
		}, false},
		{"the spec", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 3; dc.Generation++ }, true},
		{"an annotation", func(dc *cachev1alpha1.DiskCache) {
			dc.Annotations = map[string]string{cachev1alpha1.RotateTokenAnnotation: "now"}
		}, true},
		{"a condition", func(dc *cachev1alpha1.DiskCache) {
			dc.Status.Conditions = append(dc.Status.Conditions, metav1.Condition{Type: cachev1alpha1.ConditionAutoscalingConflict, Status: metav1.ConditionTrue})
		}, true},
		{"deletion", func(dc *cachev1alpha1.DiskCache) { now := metav1.Now(); dc.DeletionTimestamp = &now }, true},
	} {
		updated := old.DeepCopy()
		updated.ResourceVersion = "2"
		c.change(updated)
		if got := p.Update(event.UpdateEvent{ObjectOld: old, ObjectNew: updated}); got != c.want {
			t.Errorf("%s: reconcile %v, want %v", c.name, got, c.want)
		}
	}
}
