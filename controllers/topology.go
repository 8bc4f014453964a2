package controllers

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// topologyRetry is when a reconcile comes back after a ready shard could
// not be given the announced topology (rather than the controller's
// exponential backoff, which grows to minutes).
const topologyRetry = 10 * time.Second

// ShardURLFunc returns the base URL of shard i as the cache servers reach
// each other (the URLs of the topology).
type ShardURLFunc func(dc *cachev1alpha1.DiskCache, shard int) string

// shardURL is the stable name of shard i through the headless peer Service:
// <scheme>://<sts>-<i>.<name>-peers.<namespace>.svc.<clusterDomain>:8080.
func (r *DiskCacheReconciler) shardURL(dc *cachev1alpha1.DiskCache, i int) string {
	if r.ShardURL != nil {
		return r.ShardURL(dc, i)
	}
	domain := r.ClusterDomain
	if domain == "" {
		domain = DefaultClusterDomain
	}
	return fmt.Sprintf("%s://%s.%s:%d", scheme(dc), podHost(dc, fmt.Sprintf("%s-%d", stsName(dc), i)), domain, Port)
}

// shardReport is what one ready pod said about its topology.
type shardReport struct {
	pod  *corev1.Pod
	topo *topology.Topology // nil when the pod did not answer
	err  error
	// config is the pod's GET /v1/config (read with the admin token: the
	// tokens it accepts, the databases it quarantined); nil when it did
	// not answer.
	config *wire.ServerConfig
}

// topologyOutcome is what reconcileTopology leaves for the status.
type topologyOutcome struct {
	announced topology.Announcement
	reports   []shardReport
	// ready is the number of ready pods.
	ready   int
	problem *problem
	requeue time.Duration
	// rotation is what reconcileRotation did with these reports.
	rotation rotationOutcome
}

// reconcileTopology keeps the topology the operator announces in the
// <name>-topology ConfigMap (mounted into the pods, outside the pod
// template, so a new topology never rolls them) and gives it to every ready
// pod that has an older one, with PUT /v1/topology and the admin token.
//
// The announced list has spec.shards URLs, except that a scale-up adds the
// new shards only once all their pods are ready (until then the new pods
// know themselves outside the list and forward everything). Every change of
// the list is a new epoch. An epoch is never reused for another list: when
// a server reports a newer epoch, or the same epoch with other shards (a
// lost ConfigMap, a hand-made PUT), the next announcement goes above it.
func (r *DiskCacheReconciler) reconcileTopology(ctx context.Context, dc *cachev1alpha1.DiskCache, tlsConfig *tls.Config) (*topologyOutcome, error) {
	adminToken, err := r.reconcileAdminToken(ctx, dc)
	if err != nil {
		return nil, err
	}
	var cm corev1.ConfigMap
	existing, err := getExisting(ctx, r.Client, dc, topologyName(dc), &cm)
	if err != nil {
		return nil, err
	}
	var current *topology.Announcement
	if existing != nil {
		current = parseAnnouncement(existing.Data[TopologyKey])
	}
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(dc.Namespace), client.MatchingLabels(selectorLabels(dc))); err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	var ready []*corev1.Pod
	readyShards := map[int]bool{}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !podReady(pod) {
			continue
		}
		ready = append(ready, pod)
		if n, ok := podOrdinal(dc, pod); ok {
			readyShards[n] = true
		}
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].Name < ready[j].Name })

	hc := r.httpClient(tlsConfig)
	reports := r.forEachPod(ctx, dc, ready, adminToken, hc, func(ctx context.Context, c *cacheclient.Client, rep *shardReport) {
		rep.topo, rep.err = c.Topology(ctx)
		if cfg, err := c.ServerConfig(ctx); err == nil {
			rep.config = cfg
		}
	})

	// The list to announce.
	n := int(dc.Spec.Shards)
	if current != nil && n > len(current.Shards) {
		for i := len(current.Shards); i < n; i++ {
			if !readyShards[i] {
				n = len(current.Shards) // grow once the new shards are ready
				break
			}
		}
	}
	urls := make([]string, n)
	for i := range urls {
		urls[i] = r.shardURL(dc, i)
	}
	want := topology.Announcement{Layout: topology.Layout{Epoch: 1, Shards: urls}}
	switch {
	case current != nil && slices.Equal(current.Shards, urls):
		want.Epoch = current.Epoch
	case current != nil:
		want.Epoch = current.Epoch + 1
	case dc.Status.Topology != nil:
		// The ConfigMap was lost: never go below what the servers had.
		want.Epoch = dc.Status.Topology.Epoch + 1
	}
	want.Epoch = aboveServers(want, reports)

	if err := r.applyChild(ctx, dc, buildTopologyConfigMap(dc, want), &corev1.ConfigMap{}); err != nil {
		return nil, err
	}
	if current == nil || current.Epoch != want.Epoch {
		r.event(dc, corev1.EventTypeNormal, "TopologyChanged", "Announce",
			"announcing topology epoch %d: %d shards", want.Epoch, len(want.Shards))
	}

	// Announce it to every ready pod that has an older one (or did not say).
	var behind []*corev1.Pod
	idx := map[string]int{}
	for i, rep := range reports {
		idx[rep.pod.Name] = i
		if rep.topo == nil || rep.topo.Epoch < want.Epoch {
			behind = append(behind, rep.pod)
		}
	}
	puts := r.forEachPod(ctx, dc, behind, adminToken, hc, func(ctx context.Context, c *cacheclient.Client, rep *shardReport) {
		rep.topo, rep.err = c.PutTopology(ctx, want)
		if cur, ok := cacheclient.IsTopologyConflict(rep.err); ok {
			rep.topo = cur // the next reconcile announces above it
		}
	})
	for _, p := range puts {
		p.config = reports[idx[p.pod.Name]].config
		reports[idx[p.pod.Name]] = p
	}

	out := &topologyOutcome{announced: want, reports: reports, ready: len(ready)}
	var failed []string
	for _, rep := range reports {
		switch {
		case rep.err != nil:
			r.eventRelated(dc, rep.pod, corev1.EventTypeWarning, cachev1alpha1.ReasonTopologyNotAnnounced, "Announce",
				"pod %s: topology epoch %d: %v", rep.pod.Name, want.Epoch, rep.err)
			failed = append(failed, fmt.Sprintf("pod %s: %v", rep.pod.Name, rep.err))
		case rep.topo.Epoch != want.Epoch:
			failed = append(failed, fmt.Sprintf("pod %s has topology epoch %d, not %d", rep.pod.Name, rep.topo.Epoch, want.Epoch))
		}
	}
	if len(failed) > 0 {
		out.problem = &problem{cachev1alpha1.ReasonTopologyNotAnnounced,
			fmt.Sprintf("topology epoch %d not announced: %s", want.Epoch, strings.Join(failed, "; "))}
		out.requeue = topologyRetry
	}
	return out, nil
}

// aboveServers is the epoch to announce want with: its own, unless a server
// has a newer epoch (then that one if it has the same shards) or the same
// epoch with other shards.
func aboveServers(want topology.Announcement, reports []shardReport) int64 {
	epoch := want.Epoch
	for {
		raised := epoch
		for _, rep := range reports {
			t := rep.topo
			if t == nil {
				continue
			}
			same := slices.Equal(t.Shards, want.Shards)
			switch {
			case t.Epoch > raised && same:
				raised = t.Epoch
			case t.Epoch > raised || (t.Epoch == raised && !same):
				raised = t.Epoch + 1
			}
		}
		if raised == epoch {
			return epoch
		}
		epoch = raised
	}
}

// forEachPod runs call against each pod with a client holding the admin
// token.
func (r *DiskCacheReconciler) forEachPod(ctx context.Context, dc *cachev1alpha1.DiskCache, pods []*corev1.Pod, token string,
	hc *http.Client, call func(context.Context, *cacheclient.Client, *shardReport)) []shardReport {
	out := make([]shardReport, len(pods))
	r.eachPod(ctx, dc, pods, func(ctx context.Context, i int, url string) {
		out[i].pod = pods[i]
		c, err := cacheclient.New(url, cacheclient.Options{Token: token, HTTPClient: hc, Retries: -1, DirectOnly: true})
		if err != nil {
			out[i].err = err
			return
		}
		call(ctx, c, &out[i])
	})
	return out
}

// eachPod calls call(i, URL of pods[i]) for every pod, at most 8 at a
// time, each with a context bounded by the settings timeout, and returns
// when all are done.
func (r *DiskCacheReconciler) eachPod(ctx context.Context, dc *cachev1alpha1.DiskCache, pods []*corev1.Pod, call func(ctx context.Context, i int, url string)) {
	address := r.PodAddress
	if address == nil {
		address = DNSPodAddress
	}
	timeout := r.SettingsTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, pod := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			call(ctx, i, address(dc, pod))
		}()
	}
	wg.Wait()
}

// podOrdinal is the StatefulSet ordinal of a cache pod, from its name.
func podOrdinal(dc *cachev1alpha1.DiskCache, pod *corev1.Pod) (int, bool) {
	s, ok := strings.CutPrefix(pod.Name, stsName(dc)+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

// parseAnnouncement reads the ConfigMap's topology.json; nil when it is
// missing or not a topology.
func parseAnnouncement(s string) *topology.Announcement {
	var a topology.Announcement
	if json.Unmarshal([]byte(s), &a) != nil || a.Validate() != nil {
		return nil
	}
	return &a
}

// buildTopologyConfigMap is <name>-topology: the announced topology as the
// servers read it from --topology-file.
func buildTopologyConfigMap(dc *cachev1alpha1.DiskCache, t topology.Announcement) *corev1.ConfigMap {
	b, _ := json.MarshalIndent(t, "", "  ") // plain strings and numbers: cannot fail
	return &corev1.ConfigMap{
		ObjectMeta: objectMeta(dc, topologyName(dc), ComponentTopology),
		Data:       map[string]string{TopologyKey: string(b) + "\n"},
	}
}

// reconcileAdminToken makes sure the admin-token Secret exists and returns
// its token. Like the generated data token it is created once and never
// written again; only the operator and the servers read it.
func (r *DiskCacheReconciler) reconcileAdminToken(ctx context.Context, dc *cachev1alpha1.DiskCache) (string, error) {
	name := adminSecretName(dc)
	var secret corev1.Secret
	err := r.Get(ctx, client.ObjectKey{Namespace: dc.Namespace, Name: name}, &secret)
	if apierrors.IsNotFound(err) {
		// Not in the cache: it does not exist, or lost our labels.
		err = r.APIReader.Get(ctx, client.ObjectKey{Namespace: dc.Namespace, Name: name}, &secret)
	}
	if apierrors.IsNotFound(err) {
		s, berr := buildSecretWithToken(dc, name, ComponentAdminAuth)
		if berr != nil {
			return "", berr
		}
		if berr := controllerutil.SetControllerReference(dc, s, r.Scheme); berr != nil {
			return "", berr
		}
		err = r.Create(ctx, s, client.FieldOwner(ManagerName))
		switch {
		case err == nil:
			r.eventRelated(dc, s, corev1.EventTypeNormal, "Created", "Create", "created Secret %s with a generated admin token", name)
			secret = *s
		case apierrors.IsAlreadyExists(err):
			err = r.APIReader.Get(ctx, client.ObjectKey{Namespace: dc.Namespace, Name: name}, &secret)
		}
	}
	if err != nil {
		return "", fmt.Errorf("admin token Secret %s: %w", name, err)
	}
	token := strings.TrimSpace(string(secret.Data[cachev1alpha1.TokenKey]))
	if token == "" {
		return "", errors.New("admin token Secret " + name + " has no \"token\" key: delete it and the operator makes a new one")
	}
	return token, nil
}
