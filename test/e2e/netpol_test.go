//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// TestNetworkPolicyEnforced: a 2-shard DiskCache with spec.networkPolicy
// admitting pods labelled role=client. A client pod writes through the
// Service and reads every key back from each shard's pod (half of them
// forwarded to the other shard, so the shards reach each other), and the
// operator still announces the topology and applies settings; a pod
// without the label cannot reach the Service nor a pod. Turned off, the
// policy goes and that pod gets through.
func TestNetworkPolicyEnforced(t *testing.T) {
	p := newPhases(t)
	defer p.done()
	p.next("2 shards with a NetworkPolicy")
	ns := newNamespace(t, "netpol")
	const name = "np"
	createDiskCache(t, newDiskCache(ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Shards = 2
		dc.Spec.NetworkPolicy = cachev1alpha1.NetworkPolicySpec{Enabled: true, Clients: []networkingv1.NetworkPolicyPeer{
			{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}}}
	}))
	waitAvailable(t, ns, name, 5*time.Minute)
	waitTopologyAnnounced(t, ns, name, 2)
	tok := token(t, ns, name)
	client := startToolboxPod(t, ns, "client", map[string]string{"role": "client"})
	stranger := startToolboxPod(t, ns, "stranger", nil)
	svc := fmt.Sprintf("http://%s.%s.svc.cluster.local:%d", name, ns, cachePort)
	pods := []*corev1.Pod{cachePod(t, ns, name, 0), cachePod(t, ns, name, 1)}

	// reach runs one GET of url from a pod: nil when it answered at all.
	reach := func(pod, url string) error {
		out, err := kubectl(t, "-n", ns, "exec", pod, "--", "/toolbox", "http", "-timeout", "3s", "-code", url)
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
		}
		return nil
	}

	p.next("a pod outside the selection is refused")
	// The enforcer programs the policy shortly after it appears.
	eventually(t, 2*time.Minute, "stranger refused by the Service", func(context.Context) (bool, string) {
		err := reach(stranger, svc+"/healthz")
		return err != nil, fmt.Sprint(err)
	})
	for _, pod := range pods {
		if err := reach(stranger, podURL(pod)+"/healthz"); err == nil {
			t.Errorf("stranger reached pod %s", pod.Name)
		}
	}

	p.next("the client writes through the Service and reads from each shard")
	const keys = 16
	args := []string{"-n", ns, "exec", client, "--", "/toolbox", "http"}
	for i := 0; i < keys; i++ {
		if i > 0 {
			args = append(args, "--")
		}
		args = append(args, "-f", "-X", "PUT", "-H", "Authorization: Bearer "+tok, "-d", fmt.Sprint("v", i), fmt.Sprintf("%s/v1/keys/np-%d", svc, i))
	}
	if out, err := kubectl(t, args...); err != nil {
		t.Fatalf("client PUTs through the Service: %v\n%s", err, out)
	}
	for _, pod := range pods {
		args := []string{"-n", ns, "exec", client, "--", "/toolbox", "http"}
		for i := 0; i < keys; i++ {
			if i > 0 {
				args = append(args, "--")
			}
			args = append(args, "-f", "-H", "Authorization: Bearer "+tok, fmt.Sprintf("%s/v1/keys/np-%d", podURL(pod), i))
		}
		out, err := kubectl(t, args...)
		if err != nil {
			t.Fatalf("client GETs through pod %s (forwarding to the other shard): %v\n%s", pod.Name, err, out)
		}
		for i := 0; i < keys; i++ {
			if !strings.Contains(out, fmt.Sprint("v", i)) {
				t.Errorf("pod %s did not answer np-%d:\n%s", pod.Name, i, out)
			}
		}
	}

	p.next("the operator still reaches the shards")
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.Statistics = true })
	eventually(t, 2*time.Minute, "statistics applied to both shards", func(ctx context.Context) (bool, string) {
		for _, pod := range pods {
			s, err := podSettings(ctx, t, pod, tok)
			if err != nil || s.Statistics == nil || !*s.Statistics {
				return false, fmt.Sprintf("pod %s: %+v %v", pod.Name, s, err)
			}
		}
		return true, ""
	})

	p.next("policy off: the stranger gets through")
	updateDiskCache(t, ns, name, func(dc *cachev1alpha1.DiskCache) { dc.Spec.NetworkPolicy.Enabled = false })
	eventually(t, 2*time.Minute, "stranger reaches the Service", func(context.Context) (bool, string) {
		err := reach(stranger, svc+"/healthz")
		return err == nil, fmt.Sprint(err)
	})
}

// startToolboxPod runs a toolbox pod with labels in ns and waits until it
// is Ready.
func startToolboxPod(t *testing.T, ns, name string, labels map[string]string) string {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			SecurityContext:               restrictedPod(),
			Containers: []corev1.Container{{
				Name: "toolbox", Image: toolboxImage, ImagePullPolicy: corev1.PullIfNotPresent,
				SecurityContext: restrictedContainer(),
			}},
		},
	}
	if err := k8s.Create(ctxT(t, 30*time.Second), pod); err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	eventually(t, 2*time.Minute, "pod "+name+" Ready", func(ctx context.Context) (bool, string) {
		p := &corev1.Pod{}
		if err := k8s.Get(ctx, ctrlclient.ObjectKeyFromObject(pod), p); err != nil {
			return false, err.Error()
		}
		return podReady(p), fmt.Sprintf("phase %s", p.Status.Phase)
	})
	return name
}
