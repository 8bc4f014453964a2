package controllers

import (
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// notAutoscalerReadings passes every DiskCache event but an update that
// only wrote the autoscaler's readings (status.autoscaling, every
// pollInterval): those change nothing the reconciler acts on, and each
// would otherwise cost a full reconcile, calls to every shard included.
func notAutoscalerReadings() predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		before, ok1 := e.ObjectOld.(*cachev1alpha1.DiskCache)
		after, ok2 := e.ObjectNew.(*cachev1alpha1.DiskCache)
		if !ok1 || !ok2 {
			return true
		}
		return !equality.Semantic.DeepEqual(withoutReadings(before), withoutReadings(after))
	}}
}

// withoutReadings is dc less status.autoscaling and the metadata every
// write changes.
func withoutReadings(dc *cachev1alpha1.DiskCache) *cachev1alpha1.DiskCache {
	c := dc.DeepCopy()
	c.Status.Autoscaling = nil
	c.ResourceVersion = ""
	c.ManagedFields = nil
	return c
}
