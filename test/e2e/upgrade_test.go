//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/util/retry"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// operatorImage returns the operator Deployment's image.
func operatorImage(t *testing.T) string {
	t.Helper()
	var d appsv1.Deployment
	if err := k8s.Get(ctxT(t, 30*time.Second), ctrlclient.ObjectKey{Namespace: operatorNamespace, Name: operatorDeployment}, &d); err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Spec.Containers[0].Image
}

// tagImage gives the local cluster's containerd image src the name dst, as
// a registry would serve a new release: same content, a new reference.
func tagImage(t *testing.T, src, dst string) {
	t.Helper()
	sock := filepath.Join(filepath.Dir(kubeconfig), "run", "containerd", "containerd.sock")
	if out, err := exec.Command("ctr", "--address", sock, "-n", "k8s.io", "images", "tag", "--force", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("ctr images tag %s %s: %v %s", src, dst, err, out)
	}
}

// deployOperator moves the operator to image, as applying a release's
// install.yaml does (the manager's image, and the cacheserver image it
// defaults to, which is the same), and waits for the new operator pod to
// be the only one, ready.
func deployOperator(t *testing.T, image string) {
	t.Helper()
	key := ctrlclient.ObjectKey{Namespace: operatorNamespace, Name: operatorDeployment}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var d appsv1.Deployment
		if err := k8s.Get(ctxT(t, 30*time.Second), key, &d); err != nil {
			return err
		}
		c := &d.Spec.Template.Spec.Containers[0]
		c.Image = image
		for i := range c.Env {
			if c.Env[i].Name == "CACHESERVER_IMAGE" {
				c.Env[i].Value = image
			}
		}
		return k8s.Update(ctxT(t, 30*time.Second), &d)
	})
	if err != nil {
		t.Fatalf("set the operator's image to %s: %v", image, err)
	}
	eventually(t, 3*time.Minute, "the operator rolled to "+image, func(ctx context.Context) (bool, string) {
		var d appsv1.Deployment
		if err := k8s.Get(ctx, key, &d); err != nil {
			return false, err.Error()
		}
		s := d.Status
		return s.ObservedGeneration == d.Generation && s.Replicas == 1 && s.UpdatedReplicas == 1 && s.ReadyReplicas == 1,
			fmt.Sprintf("%+v", s)
	})
}

// waitCachePodsOn waits until each of the shards of DiskCache name runs
// image, ready, and the StatefulSet has settled.
func waitCachePodsOn(t *testing.T, ns, name, image string, shards int) {
	t.Helper()
	eventually(t, 5*time.Minute, fmt.Sprintf("%d shards ready on %s", shards, image), func(ctx context.Context) (bool, string) {
		var pods corev1.PodList
		if err := k8s.List(ctx, &pods, ctrlclient.InNamespace(ns), ctrlclient.MatchingLabels{"app.kubernetes.io/instance": name}); err != nil {
			return false, err.Error()
		}
		on := 0
		for _, pod := range pods.Items {
			for _, c := range pod.Spec.Containers {
				if c.Name == cacheContainer && c.Image == image && podReady(&pod) && pod.DeletionTimestamp == nil {
					on++
				}
			}
		}
		return on == shards && len(pods.Items) == shards, fmt.Sprintf("%d of %d pods ready on the image", on, len(pods.Items))
	})
	waitStatefulSetSettled(t, ns, name, 5*time.Minute)
}

// watchUnavailableShards watches the pods of a DiskCache of shards shards
// from now on; the function it returns stops watching and tells how many
// shards were unavailable at once at most (a pod missing, terminating or
// not Ready) and how many pod changes it saw.
func watchUnavailableShards(t *testing.T, ns, name string, shards int) func() (maxDown, changes int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sel := ctrlclient.MatchingLabels{"app.kubernetes.io/instance": name}
	var pods corev1.PodList
	if err := k8s.List(ctx, &pods, ctrlclient.InNamespace(ns), sel); err != nil {
		t.Fatal(err)
	}
	up := func(pod *corev1.Pod) bool { return podReady(pod) && pod.DeletionTimestamp == nil }
	ready := map[string]bool{}
	for i := range pods.Items {
		ready[pods.Items[i].Name] = up(&pods.Items[i])
	}
	down := func() int {
		n := 0
		for _, r := range ready {
			if r {
				n++
			}
		}
		return shards - n
	}
	w, err := k8s.Watch(ctx, &corev1.PodList{}, ctrlclient.InNamespace(ns), sel,
		&ctrlclient.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: pods.ResourceVersion}})
	if err != nil {
		t.Fatal(err)
	}
	maxDown, changes := down(), 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			changes++
			ready[pod.Name] = ev.Type != watch.Deleted && up(pod)
			maxDown = max(maxDown, down())
		}
	}()
	return func() (int, int) {
		w.Stop()
		cancel()
		<-done
		return maxDown, changes
	}
}

// 15. Upgrading the operator, and downgrading it again, under load keeps
// every acknowledged write, the cache's layout and its topology epoch. 3
// shards and a load through the Service keeping a ledger; the operator's
// Deployment is moved to a new image (the project image under a new tag:
// what applying a new release's install.yaml does), the new operator rolls
// every cache pod to its cacheserver image, one shard at a time (a watch
// of the pods never sees two unavailable at once), and the
// cache is Available, not Degraded, on the same epoch; then back to the
// old image, the same way. The ledger counts 0 lost, 0 stale, 0
// resurrected.
func TestOperatorUpgradeUnderLoad(t *testing.T) {
	const name = "upgrade"
	p := newPhases(t)
	defer p.done()
	oldImage := operatorImage(t)
	newImage := oldImage + "-e2e-next"
	tagImage(t, oldImage, newImage)
	// Registered before the namespace: runs after it is gone, so that the
	// other tests find the operator as installed, whatever happened here.
	t.Cleanup(func() {
		if operatorImage(t) != oldImage {
			deployOperator(t, oldImage)
		}
	})

	p.next("create 3 shards; load through the Service")
	ns := newNamespace(t, "upgrade")
	createDiskCache(t, newDiskCache(ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 3 }))
	waitAvailable(t, ns, name, 5*time.Minute)
	waitTopologyAnnounced(t, ns, name, 3)
	epoch := getDiskCache(t, ns, name).Status.Topology.Epoch
	tok := token(t, ns, name)
	l, store, stopLoad := startServiceLoad(t, ns, name, tok, "upgrade", 4)
	waitLoadRuns(t, store, 300)

	for _, step := range []struct{ what, image string }{{"upgrade", newImage}, {"downgrade", oldImage}} {
		p.next(step.what + " the operator; it rolls the shards")
		stopWatch := watchUnavailableShards(t, ns, name, 3)
		deployOperator(t, step.image)
		waitCachePodsOn(t, ns, name, step.image, 3)
		maxDown, changes := stopWatch()
		t.Logf("ROLL %s: %d changes of the cache pods; at most %d of the 3 shards unavailable at once", step.what, changes, maxDown)
		if maxDown > 1 || changes == 0 {
			t.Errorf("the %s rolled the shards with up to %d of 3 unavailable at once (%d pod changes seen); want one at a time", step.what, maxDown, changes)
		}
		dc := waitAvailable(t, ns, name, 2*time.Minute)
		if dc.Status.Topology == nil || dc.Status.Topology.Epoch != epoch || dc.Status.Topology.Shards != 3 {
			t.Errorf("after the %s: topology %+v; want epoch %d, 3 shards", step.what, dc.Status.Topology, epoch)
		}
		eventually(t, 2*time.Minute, "Degraded false", func(context.Context) (bool, string) {
			c := meta.FindStatusCondition(getDiskCache(t, ns, name).Status.Conditions, cachev1alpha1.ConditionDegraded)
			return c != nil && c.Status == metav1.ConditionFalse, fmt.Sprintf("%+v", c)
		})
		waitServiceRoutes(t, ns, name, 0, 1, 2)
		waitLoadGoesOn(t, l, "the load to go on")
	}

	p.next("stop the load; every acknowledged write reads back")
	stopLoad()
	verifyServiceLoad(t, l, serviceClient(t, ns, name, tok), "across an operator upgrade and downgrade")
}
