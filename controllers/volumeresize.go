package controllers

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// DefaultVolumeResizeDeadline is DiskCacheReconciler.VolumeResizeDeadline
// when unset.
const DefaultVolumeResizeDeadline = 10 * time.Minute

// volumeResizeRecheck is how often a DiskCache with a pending resize is
// reconciled to look at its claims again (claims are not watched).
const volumeResizeRecheck = 30 * time.Second

// resizeConditions are the claim conditions that tell how a resize goes.
var resizeConditions = map[corev1.PersistentVolumeClaimConditionType]bool{
	corev1.PersistentVolumeClaimResizing:                true,
	corev1.PersistentVolumeClaimFileSystemResizePending: true,
	corev1.PersistentVolumeClaimControllerResizeError:   true,
	corev1.PersistentVolumeClaimNodeResizeError:         true,
}

// pendingResize tells whether pvc's volume is still smaller than its
// request, with what its conditions say; and a problem when the resize
// failed (a resize error condition, or an infeasible allocated resource
// status) or is still pending deadline after since. Nil for a claim that
// has what it asks for, or is not bound yet.
func pendingResize(pvc *corev1.PersistentVolumeClaim, since time.Time, now time.Time, deadline time.Duration) (*cachev1alpha1.VolumeResizeStatus, *problem) {
	req, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	capacity, hasCap := pvc.Status.Capacity[corev1.ResourceStorage]
	if !ok || !hasCap || capacity.Cmp(req) >= 0 {
		return nil, nil
	}
	var said []string
	failed := false
	for _, c := range pvc.Status.Conditions {
		if !resizeConditions[c.Type] || c.Status != corev1.ConditionTrue {
			continue
		}
		s := string(c.Type)
		if m := lastLine(c.Message); m != "" {
			s += ": " + m
		}
		said = append(said, s)
		failed = failed || c.Type == corev1.PersistentVolumeClaimControllerResizeError || c.Type == corev1.PersistentVolumeClaimNodeResizeError
	}
	if st, ok := pvc.Status.AllocatedResourceStatuses[corev1.ResourceStorage]; ok {
		said = append(said, "allocatedResourceStatus "+string(st))
		failed = failed || st == corev1.PersistentVolumeClaimControllerResizeInfeasible || st == corev1.PersistentVolumeClaimNodeResizeInfeasible
	}
	if len(said) == 0 {
		said = append(said, "no resize condition: nothing has acted on the request yet (does the storage class's provisioner have a resizer?)")
	}
	msg := fmt.Sprintf("PersistentVolumeClaim %s requests %s and has %s: %s", pvc.Name, req.String(), capacity.String(), strings.Join(said, "; "))
	st := &cachev1alpha1.VolumeResizeStatus{Claim: pvc.Name, Requested: req.String(), Capacity: capacity.String(),
		RequestTime: &metav1.Time{Time: since}, Message: msg}
	switch age := now.Sub(since); {
	case failed:
		return st, &problem{cachev1alpha1.ReasonVolumeResizeFailed, "volume resize failed: " + msg}
	case age >= deadline:
		return st, &problem{cachev1alpha1.ReasonVolumeResizePending,
			fmt.Sprintf("volume resize pending for %s: %s", age.Truncate(time.Second), msg)}
	}
	return st, nil
}

// resizeRequestTime is when the operator grew pvc's request (its
// annotation), zero when it does not say.
func resizeRequestTime(pvc *corev1.PersistentVolumeClaim) time.Time {
	t, err := time.Parse(time.RFC3339, pvc.Annotations[cachev1alpha1.ResizeRequestedAnnotation])
	if err != nil {
		return time.Time{}
	}
	return t
}
