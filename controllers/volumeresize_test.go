package controllers

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

func TestPendingResize(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	claim := func(request, capacity string, mutate func(*corev1.PersistentVolumeClaim)) *corev1.PersistentVolumeClaim {
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data-web-0"}}
		pvc.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(request)}
		if capacity != "" {
			pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(capacity)}
		}
		if mutate != nil {
			mutate(pvc)
		}
		return pvc
	}
	for _, tc := range []struct {
		name    string
		pvc     *corev1.PersistentVolumeClaim
		age     time.Duration
		message string // "": not pending
		reason  string // "": no problem
	}{
		{"grown", claim("256Mi", "256Mi", nil), time.Minute, "", ""},
		{"larger than asked", claim("256Mi", "1Gi", nil), time.Minute, "", ""},
		{"not bound yet", claim("256Mi", "", nil), time.Hour, "", ""},
		{"nothing acted", claim("256Mi", "128Mi", nil), time.Minute,
			"PersistentVolumeClaim data-web-0 requests 256Mi and has 128Mi: no resize condition: nothing has acted on the request yet", ""},
		{"nothing acted past the deadline", claim("256Mi", "128Mi", nil), 10 * time.Minute,
			"PersistentVolumeClaim data-web-0 requests 256Mi and has 128Mi: no resize condition", cachev1alpha1.ReasonVolumeResizePending},
		{"resizing", claim("256Mi", "128Mi", func(pvc *corev1.PersistentVolumeClaim) {
			pvc.Status.Conditions = []corev1.PersistentVolumeClaimCondition{{Type: corev1.PersistentVolumeClaimResizing, Status: corev1.ConditionTrue}}
			pvc.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{corev1.ResourceStorage: corev1.PersistentVolumeClaimControllerResizeInProgress}
		}), time.Minute, "requests 256Mi and has 128Mi: Resizing; allocatedResourceStatus ControllerResizeInProgress", ""},
		{"file system pending", claim("256Mi", "128Mi", func(pvc *corev1.PersistentVolumeClaim) {
			pvc.Status.Conditions = []corev1.PersistentVolumeClaimCondition{{Type: corev1.PersistentVolumeClaimFileSystemResizePending, Status: corev1.ConditionTrue,
				Message: "Waiting for user to (re-)start a pod to finish file system resize of volume on node."}}
		}), time.Minute, "FileSystemResizePending: Waiting for user to (re-)start a pod", ""},
		{"controller error", claim("256Mi", "128Mi", func(pvc *corev1.PersistentVolumeClaim) {
			pvc.Status.Conditions = []corev1.PersistentVolumeClaimCondition{{Type: corev1.PersistentVolumeClaimControllerResizeError, Status: corev1.ConditionTrue,
				Message: "resize volume pvc-1 failed: quota exceeded"}}
		}), time.Minute, "ControllerResizeError: resize volume pvc-1 failed: quota exceeded", cachev1alpha1.ReasonVolumeResizeFailed},
		{"infeasible", claim("256Mi", "128Mi", func(pvc *corev1.PersistentVolumeClaim) {
			pvc.Status.AllocatedResourceStatuses = map[corev1.ResourceName]corev1.ClaimResourceStatus{corev1.ResourceStorage: corev1.PersistentVolumeClaimNodeResizeInfeasible}
		}), time.Minute, "allocatedResourceStatus NodeResizeInfeasible", cachev1alpha1.ReasonVolumeResizeFailed},
	} {
		st, p := pendingResize(tc.pvc, now.Add(-tc.age), now, 10*time.Minute)
		switch {
		case tc.message == "" && (st != nil || p != nil):
			t.Errorf("%s: pending %+v, problem %+v; want none", tc.name, st, p)
		case tc.message != "" && (st == nil || !strings.Contains(st.Message, tc.message) || st.Claim != "data-web-0" || !st.RequestTime.Time.Equal(now.Add(-tc.age))):
			t.Errorf("%s: pending %+v; want a message holding %q", tc.name, st, tc.message)
		case tc.reason == "" && p != nil, tc.reason != "" && (p == nil || p.reason != tc.reason || !strings.Contains(p.message, tc.message)):
			t.Errorf("%s: problem %+v; want reason %q", tc.name, p, tc.reason)
		}
	}
}

// A grown claim whose volume does not grow (an expandable class with no
// resizer) is reported in status.volumeResizes at once, with what its
// conditions say, and makes the DiskCache Degraded once the resize failed
// or is still pending after the deadline; then it clears.
func TestVolumeResizePendingIsReported(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "noresizer-" + ns}, Provisioner: "example.com/disk", AllowVolumeExpansion: ptrTo(true)}
	if err := k8s.Create(bg, sc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(bg, sc) })
	newDiskCache(t, ns, "grow", func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Storage.StorageClassName = &sc.Name
		dc.Spec.Storage.Size = ptrTo(resource.MustParse("1Gi"))
		dc.Spec.SizeLimit = ptrTo(resource.MustParse("512Mi"))
	})
	c := waitChildren(t, ns, "grow")
	vct := c.sts.Spec.VolumeClaimTemplates[0]
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "data-grow-0", Labels: vct.Labels}, Spec: vct.Spec}
	if err := k8s.Create(bg, pvc); err != nil {
		t.Fatal(err)
	}
	setClaimStatus := func(mutate func(*corev1.PersistentVolumeClaim)) {
		t.Helper()
		eventually(t, "set claim status", func() error {
			if err := k8s.Get(bg, client.ObjectKeyFromObject(pvc), pvc); err != nil {
				return err
			}
			mutate(pvc)
			return k8s.Status().Update(bg, pvc)
		})
	}
	setClaimStatus(func(pvc *corev1.PersistentVolumeClaim) {
		pvc.Status.Phase = corev1.ClaimBound
		pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}
	})
	// Claims are not watched: a change of the DiskCache's annotations
	// makes it look at them now.
	poke := func(v string) {
		updateDiskCache(t, ns, "grow", func(dc *cachev1alpha1.DiskCache) { metav1.SetMetaDataAnnotation(&dc.ObjectMeta, "test/poke", v) })
	}
	degraded := func(what, reason, contains string) {
		t.Helper()
		eventually(t, what, func() error {
			dc := get(t, ns, "grow", &cachev1alpha1.DiskCache{})
			if err := conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionTrue, reason); err != nil {
				return err
			}
			c := findCondition(dc, cachev1alpha1.ConditionDegraded)
			return want(strings.Contains(c.Message, contains), "message %q, want it to hold %q", c.Message, contains)
		})
	}

	updateDiskCache(t, ns, "grow", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Storage.Size = ptrTo(resource.MustParse("2Gi")) })
	eventually(t, "resize pending in status", func() error {
		dc := get(t, ns, "grow", &cachev1alpha1.DiskCache{})
		r := dc.Status.VolumeResizes
		if len(r) != 1 || r[0].Claim != "data-grow-0" || r[0].Requested != "2Gi" || r[0].Capacity != "1Gi" || r[0].RequestTime == nil ||
			!strings.Contains(r[0].Message, "nothing has acted on the request") {
			return want(false, "volumeResizes %+v", r)
		}
		c := findCondition(dc, cachev1alpha1.ConditionDegraded)
		return want(c != nil && c.Status == metav1.ConditionFalse, "Degraded before the deadline: %+v", c)
	})
	got := get(t, ns, "data-grow-0", &corev1.PersistentVolumeClaim{})
	if _, err := time.Parse(time.RFC3339, got.Annotations[cachev1alpha1.ResizeRequestedAnnotation]); err != nil {
		t.Errorf("claim annotations %v: %v", got.Annotations, err)
	}

	// A resize error: Degraded at once.
	setClaimStatus(func(pvc *corev1.PersistentVolumeClaim) {
		pvc.Status.Conditions = []corev1.PersistentVolumeClaimCondition{{Type: corev1.PersistentVolumeClaimControllerResizeError,
			Status: corev1.ConditionTrue, Message: "resize volume failed: quota exceeded"}}
	})
	poke("1")
	degraded("Degraded: VolumeResizeFailed", cachev1alpha1.ReasonVolumeResizeFailed, "PersistentVolumeClaim data-grow-0 requests 2Gi and has 1Gi: ControllerResizeError: resize volume failed: quota exceeded")

	// No error, but requested long ago: Degraded, pending.
	setClaimStatus(func(pvc *corev1.PersistentVolumeClaim) { pvc.Status.Conditions = nil })
	eventually(t, "request made long ago", func() error {
		if err := k8s.Get(bg, client.ObjectKeyFromObject(pvc), pvc); err != nil {
			return err
		}
		pvc.Annotations[cachev1alpha1.ResizeRequestedAnnotation] = time.Now().Add(-DefaultVolumeResizeDeadline - time.Minute).UTC().Format(time.RFC3339)
		return k8s.Update(bg, pvc)
	})
	poke("2")
	degraded("Degraded: VolumeResizePending", cachev1alpha1.ReasonVolumeResizePending, "PersistentVolumeClaim data-grow-0 requests 2Gi and has 1Gi: no resize condition")

	// Grown: nothing pending.
	setClaimStatus(func(pvc *corev1.PersistentVolumeClaim) {
		pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("2Gi")}
	})
	poke("3")
	eventually(t, "resize done", func() error {
		dc := get(t, ns, "grow", &cachev1alpha1.DiskCache{})
		c := findCondition(dc, cachev1alpha1.ConditionDegraded)
		return want(len(dc.Status.VolumeResizes) == 0 && c != nil && c.Status == metav1.ConditionFalse, "volumeResizes %+v, Degraded %+v", dc.Status.VolumeResizes, c)
	})
}
