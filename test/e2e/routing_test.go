//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/loadcheck"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

const (
	djangoImage = "localhost/diskcache-django:v1"
	// clusterDNS is the local cluster's CoreDNS, which resolves the pods'
	// names under the headless Service (this machine's resolver does not).
	clusterDNS = "10.87.0.1:53"
	// loadPhase is how long each client drives the load.
	loadPhase = 10 * time.Second
)

// 9. Clients of the sample's three shards, given only the Service: a
// Django process in a pod round-trips through Django's cache API, and Go
// clients under load (one through the Service, one routing each key to its
// owner's pod itself) lose nothing.
func TestRoutedClients(t *testing.T) {
	p := newPhases(t)
	defer p.done()
	p.next("create 3 shards + Available + topology")
	ns := newNamespace(t, "routed")
	const name = "routed"
	createDiskCache(t, newDiskCache(ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Shards = 3
		dc.Spec.Statistics = true
	}))
	waitAvailable(t, ns, name, 5*time.Minute)
	waitTopologyAnnounced(t, ns, name, 3)
	tok := token(t, ns, name)

	p.next("Django in a pod")
	t.Run("Django", func(t *testing.T) { djangoRoundTrip(t, ns, name) })
	p.next("routed load")
	t.Run("RoutedLoad", func(t *testing.T) { routedLoad(t, ns, name, tok) })
}

// djangoRoundTrip runs testdata/django_roundtrip.py in a pod of the django
// image with LOCATION = the Service's cluster DNS URL (status.endpoint): the
// pod succeeds and prints DJANGO-ROUNDTRIP OK only when every check passed.
func djangoRoundTrip(t *testing.T, ns, name string) {
	script, err := os.ReadFile(filepath.Join(repoRoot, "test", "e2e", "testdata", "django_roundtrip.py"))
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "django-roundtrip", Namespace: ns},
		Data: map[string]string{"django_roundtrip.py": string(script)}}
	if err := k8s.Create(ctxT(t, 30*time.Second), cm); err != nil {
		t.Fatalf("create ConfigMap: %v", err)
	}
	endpoint := getDiskCache(t, ns, name).Status.Endpoint
	if want := fmt.Sprintf("http://%s.%s.svc:%d", name, ns, cachePort); endpoint != want {
		t.Fatalf("status.endpoint %q, want the Service URL %q", endpoint, want)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "django", Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			SecurityContext:               restrictedPod(),
			Containers: []corev1.Container{{
				Name:            "django",
				Image:           djangoImage,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Args:            []string{"/app/django_roundtrip.py"},
				Env: []corev1.EnvVar{
					{Name: "DISKCACHE_URL", Value: endpoint},
					{Name: "DISKCACHE_TOKEN_FILE", Value: "/var/run/secrets/diskcache/" + cachev1alpha1.TokenKey},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "app", MountPath: "/app", ReadOnly: true},
					{Name: "token", MountPath: "/var/run/secrets/diskcache", ReadOnly: true},
				},
				SecurityContext: restrictedContainer(),
			}},
			Volumes: []corev1.Volume{
				{Name: "app", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name}}}},
				{Name: "token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
					SecretName: name + "-token"}}},
			},
		},
	}
	if err := k8s.Create(ctxT(t, 30*time.Second), pod); err != nil {
		t.Fatalf("create Django pod: %v", err)
	}
	var phase corev1.PodPhase
	eventually(t, 3*time.Minute, "Django pod finished", func(ctx context.Context) (bool, string) {
		got := &corev1.Pod{}
		if err := k8s.Get(ctx, ctrlclient.ObjectKeyFromObject(pod), got); err != nil {
			return false, err.Error()
		}
		phase = got.Status.Phase
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed,
			fmt.Sprintf("phase %s, containers %+v", phase, got.Status.ContainerStatuses)
	})
	logs, err := kubectl(t, "-n", ns, "logs", pod.Name)
	if err != nil {
		t.Fatalf("logs of the Django pod: %v\n%s", err, logs)
	}
	t.Logf("Django pod (%s, LOCATION %s):\n%s", phase, endpoint, strings.TrimSpace(logs))
	if phase != corev1.PodSucceeded || !strings.Contains(logs, "DJANGO-ROUNDTRIP OK ") {
		t.Fatalf("Django's cache API through the Service failed (pod %s)", phase)
	}
}

// cacheStore is a loadcheck.Store over a Go client.
type cacheStore struct{ c *cacheclient.Cache }

func (s cacheStore) Set(ctx context.Context, k string, v []byte) error {
	return s.c.Set(ctx, kv.TextKey(k), kv.Bytes(v), kv.SetOptions{})
}

func (s cacheStore) Delete(ctx context.Context, k string) error {
	_, err := s.c.Delete(ctx, kv.TextKey(k))
	return err
}

func (s cacheStore) Get(ctx context.Context, k string) ([]byte, bool, error) {
	it, ok, err := s.c.Get(ctx, kv.TextKey(k))
	return it.Value.Data, ok, err
}

// phaseStore is the store of the current phase; it is changed only while
// no load runs.
type phaseStore struct{ loadcheck.Store }

// dialLog records the addresses a transport dialed.
type dialLog struct {
	mu    sync.Mutex
	hosts map[string]int
}

func (d *dialLog) add(addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hosts[addr]++
}

func (d *dialLog) snapshot() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]int, len(d.hosts))
	for h, n := range d.hosts {
		out[h] = n
	}
	return out
}

// clusterDNSClient is an HTTP client that resolves names with the
// cluster's CoreDNS, as a client inside the cluster would, and notes what
// it dials.
func clusterDNSClient(dials *dialLog) *http.Client {
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, clusterDNS)
	}}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second, Resolver: resolver}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.add(addr)
		return dialer.DialContext(ctx, network, addr)
	}
	return &http.Client{Transport: tr}
}

// shardMetrics are one pod's routing counters.
type shardMetrics struct{ forwarded, served float64 }

// scrapeShards reads the routing counters of every pod.
func scrapeShards(t *testing.T, pods []*corev1.Pod) []shardMetrics {
	t.Helper()
	out := make([]shardMetrics, len(pods))
	for i, pod := range pods {
		req, err := http.NewRequestWithContext(ctxT(t, 30*time.Second), http.MethodGet, podURL(pod)+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("metrics of %s: %v", pod.Name, err)
		}
		sawServed := false
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			fields := strings.Fields(line)
			if len(fields) != 2 {
				continue
			}
			v, err := strconv.ParseFloat(fields[1], 64)
			if err != nil {
				continue
			}
			switch {
			case strings.HasPrefix(line, "diskcache_forwarded_requests_total{"):
				out[i].forwarded += v
			case fields[0] == "diskcache_served_requests_total":
				out[i].served, sawServed = v, true
			}
		}
		resp.Body.Close()
		if err := sc.Err(); err != nil || resp.StatusCode != http.StatusOK || !sawServed {
			t.Fatalf("metrics of %s: status %d, %v, diskcache_served_requests_total found: %v", pod.Name, resp.StatusCode, err, sawServed)
		}
	}
	return out
}

// routedLoad: writers, deleters and readers (internal/loadcheck) first
// through a Go client that sends everything to the Service's ClusterIP
// (the servers forward), then through a smart Go client that resolves the
// pods' names with CoreDNS and sends each key to its owner; afterwards
// every acknowledged write reads back as acknowledged through the Service,
// the smart client and each pod, and the pods' metrics show that the
// smart client's requests were all served by their owners, none forwarded.
func routedLoad(t *testing.T, ns, name, tok string) {
	svcURL := serviceURL(t, ns, name)
	viaService, err := cacheclient.New(svcURL, cacheclient.Options{Token: tok, DirectOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	dials := &dialLog{hosts: map[string]int{}}
	smart, err := cacheclient.New(svcURL, cacheclient.Options{Token: tok, HTTPClient: clusterDNSClient(dials)})
	if err != nil {
		t.Fatal(err)
	}
	var pods []*corev1.Pod
	for i := range 3 {
		pods = append(pods, cachePod(t, ns, name, i))
	}

	store := &phaseStore{}
	l := loadcheck.New(store, loadcheck.Config{Workers: 8, KeysPerWorker: 200, Prefix: "routed"})
	run := func(s loadcheck.Store) {
		store.Store = s
		stop := make(chan struct{})
		timer := time.AfterFunc(loadPhase, func() { close(stop) })
		defer timer.Stop()
		l.Run(ctxT(t, loadPhase+time.Minute), stop)
	}
	verify := func(what string, s loadcheck.Store) loadcheck.Counts {
		t.Helper()
		counts, err := l.VerifyThrough(ctxT(t, 2*time.Minute), s)
		if err != nil {
			t.Fatalf("verify through %s: %v", what, err)
		}
		t.Logf("read back through %s: %v", what, counts)
		if !counts.Safe() || counts.Errors != 0 || counts.Sets == 0 || counts.Deletes == 0 || counts.Reads == 0 {
			t.Errorf("through %s: %v; last: %v", what, counts, l.LastError())
		}
		return counts
	}

	// Phase 1: through the Service only; two keys in three are forwarded,
	// which shows the forwarding counter counts.
	before := scrapeShards(t, pods)
	run(cacheStore{viaService.Cache("")})
	after := scrapeShards(t, pods)
	var forwarded float64
	for i := range pods {
		forwarded += after[i].forwarded - before[i].forwarded
	}
	first := verify("the Service after its phase", cacheStore{viaService.Cache("")})
	t.Logf("phase 1, %s through the Service %s: %.0f requests forwarded between the pods",
		loadPhase, svcURL, forwarded)
	if forwarded == 0 {
		t.Errorf("the load through the Service made no pod forward: the shards do not route")
	}

	// Phase 2: the smart client, on the same keys. Its first call reads the
	// topology; calls made while that read is under way go through the
	// Service (the client does not wait for it), so it is made before.
	if _, _, err := smart.Cache("").Get(ctxT(t, time.Minute), kv.TextKey("routed-warm-up")); err != nil {
		t.Fatalf("first call of the smart client: %v", err)
	}
	before = scrapeShards(t, pods)
	run(cacheStore{smart.Cache("")})
	after = scrapeShards(t, pods)
	total := verify("the smart client after its phase", cacheStore{smart.Cache("")})
	ops := (total.Sets + total.Deletes + total.Reads) - (first.Sets + first.Deletes + first.Reads)
	var served float64
	for i, pod := range pods {
		f, s := after[i].forwarded-before[i].forwarded, after[i].served-before[i].served
		served += s
		t.Logf("phase 2 (smart client), shard %d (%s): served %.0f, forwarded %.0f", i, pod.Name, s, f)
		if f != 0 {
			t.Errorf("shard %d forwarded %.0f requests of the smart client: they did not go to their owner", i, f)
		}
		if s == 0 {
			t.Errorf("shard %d served none of the smart client's requests", i)
		}
	}
	if served < float64(ops) {
		t.Errorf("the shards served %.0f requests in the smart client's phase, fewer than its %d operations", served, ops)
	}
	var podHosts []string
	for addr := range dials.snapshot() {
		if strings.Contains(addr, "."+name+"-peers.") {
			podHosts = append(podHosts, addr)
		}
	}
	slices.Sort(podHosts)
	t.Logf("phase 2, %s, %d operations through the smart client; it dialed %v", loadPhase, ops, dials.snapshot())
	if len(podHosts) != len(pods) {
		t.Errorf("the smart client dialed pods %v, want all %d by their names under %s-peers", podHosts, len(pods), name)
	}

	// Every path reads the same: the Service, and each pod (which forwards
	// what it does not own).
	verify("the Service", cacheStore{viaService.Cache("")})
	for _, pod := range pods {
		pc, err := cacheclient.New(podURL(pod), cacheclient.Options{Token: tok, DirectOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		verify("pod "+pod.Name, cacheStore{pc.Cache("")})
	}
}
