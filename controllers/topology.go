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

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
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

// topologyOutcome is what reconcileTopology leaves for the StatefulSet and
// the status.
type topologyOutcome struct {
	announced topology.Announcement
	reports   []shardReport
	// ready is the number of ready pods.
	ready int
	// replicas is the size the StatefulSet must have now.
	replicas int32
	// layoutReady: every shard the announced layout (and the previous
	// one, during a move) routes keys to has a ready pod, so every key is
	// served even while pods outside it are not ready yet.
	layoutReady bool
	// progress and blocked describe the move in force, if any.
	progress []cachev1alpha1.ShardRebalanceProgress
	blocked  []string
	// started is when the move in force was announced.
	started  *time.Time
	problems []problem
	requeue  time.Duration
	// rotation is what reconcileRotation did with these reports.
	rotation rotationOutcome
}

// reconcileTopology drives the topology: it decides the announcement and
// the StatefulSet's size from what it observes (planTopology), keeps the
// announcement in the <name>-topology ConfigMap (mounted into the pods,
// outside the pod template, so a new topology never rolls them) and gives
// it to every ready pod that has an older one, with PUT /v1/topology and
// the admin token.
//
// Every change of the announcement is a new epoch. An epoch is never
// reused for another announcement: when a server reports a newer epoch, or
// the same epoch with other shards (a lost ConfigMap, a hand-made PUT), the
// next announcement goes above it.
func (r *DiskCacheReconciler) reconcileTopology(ctx context.Context, dc *cachev1alpha1.DiskCache, tlsConfig *tls.Config) (*topologyOutcome, error) {
	adminToken, err := r.reconcileAdminToken(ctx, dc)
	if err != nil {
		return nil, err
	}
	// The announcement is the orchestration's state of record: read it
	// from the API server, never from a cache that may lag behind the
	// last step.
	var cm corev1.ConfigMap
	var existing *corev1.ConfigMap
	switch err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: dc.Namespace, Name: topologyName(dc)}, &cm); {
	case err == nil:
		existing = &cm
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("get ConfigMap %s: %w", topologyName(dc), err)
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
	for i := range pods.Items {
		if podReady(&pods.Items[i]) {
			ready = append(ready, &pods.Items[i])
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
	// The ConfigMap is new, was lost, or is behind the shards (the
	// DiskCache was deleted and created again on kept or restored volumes,
	// and its first reconcile wrote epoch 1): carry on from the newest
	// announcement a shard has, a move in force included. Starting from
	// the spec instead would route the keys by a layout they were never
	// moved to, and leave them where no read looks.
	kept := current
	reportedAll := existing != nil && existing.Annotations[ShardsReportedAnno] == "true"
	var announced []string
	if existing != nil && !reportedAll {
		announced = strings.Fields(existing.Annotations[AnnouncedLayoutsAnno])
	}
	current = r.layoutFromShards(dc, kept, reports, reportedAll, announced)
	if kept != nil && current != kept {
		r.event(dc, corev1.EventTypeWarning, "TopologyFromShards", "Announce",
			"the shards hold topology epoch %d (%d shards%s), which the ConfigMap's epoch %d does not describe: carrying on from it (volumes kept or restored from an earlier DiskCache of this name)",
			current.Epoch, len(current.Shards), previousNote(*current), kept.Epoch)
	}
	var stsReplicas int32
	if sts, err := getExisting(ctx, r.Client, dc, stsName(dc), &appsv1.StatefulSet{}); err != nil {
		return nil, err
	} else if sts != nil && sts.Spec.Replicas != nil {
		stsReplicas = *sts.Spec.Replicas
	}
	if ts := dc.Status.Topology; current == nil && ts != nil && ts.Epoch > 0 && ts.Shards > 0 {
		// The ConfigMap was lost and no server answers: carry on from
		// the layout the status last saw, a move in force included.
		a := topology.Announcement{Layout: topology.Layout{Epoch: ts.Epoch, Shards: r.shardURLs(dc, int(ts.Shards))}}
		if ts.Rebalancing && ts.PreviousShards > 0 && ts.Epoch > 1 {
			a.Previous = &topology.Layout{Epoch: ts.Epoch - 1, Shards: r.shardURLs(dc, int(ts.PreviousShards))}
		}
		current = &a
	}
	p := planTopology(planInput{
		cur:         current,
		target:      int(dc.Spec.Shards),
		urls:        func(n int) []string { return r.shardURLs(dc, n) },
		shards:      shardStates(dc, pods.Items, reports),
		stsReplicas: stsReplicas,
	})
	want := p.want
	want.Epoch = aboveServers(want, reports)

	// When the move in force started: kept across reconciles on the
	// ConfigMap, so that a restarted operator still knows.
	var started *time.Time
	if want.Previous != nil {
		if started = moveStart(existing, current, want, dc.Status.Topology); started == nil {
			now := time.Now().UTC().Truncate(time.Second)
			started = &now
		}
	}
	var endedStart *time.Time // the start of the move this reconcile ends
	if p.finish && current != nil && current.Previous != nil {
		endedStart = moveStart(existing, current, *current, dc.Status.Topology)
	}

	desiredCM := buildTopologyConfigMap(dc, want, started)
	if desiredCM.Annotations == nil {
		desiredCM.Annotations = map[string]string{}
	}
	if reportedAll || everyShardReported(dc, reports, len(want.Shards)) {
		desiredCM.Annotations[ShardsReportedAnno] = "true"
	} else {
		// Until then, remember what this operator announced: a shard
		// holding it holds no history.
		desiredCM.Annotations[AnnouncedLayoutsAnno] = strings.Join(rememberLayout(announced, layoutID(want)), " ")
	}
	if err := r.applyChild(ctx, dc, desiredCM, &corev1.ConfigMap{}); err != nil {
		return nil, err
	}
	if current == nil || current.Epoch != want.Epoch {
		r.event(dc, corev1.EventTypeNormal, "TopologyChanged", "Announce",
			"announcing topology epoch %d: %d shards%s", want.Epoch, len(want.Shards), previousNote(want))
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
	asked := slices.Clone(reports) // the figures of the move this reconcile may end
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

	replicas := p.replicas
	if !reportedAll {
		// Claims kept from an earlier DiskCache of this name may hold
		// another layout: a pod on a new claim would serve the keys by the
		// layout from the spec (a delete there answered, and the key
		// brought back by the move that follows), so no shard is added
		// until the shards on kept claims have said which layout they
		// hold. Never below the StatefulSet's size: its pods are running.
		n, err := r.keptClaimShards(ctx, dc)
		if err != nil {
			return nil, err
		}
		if n > 0 && !everyShardReported(dc, asked, int(n)) {
			replicas = min(replicas, max(n, stsReplicas))
		}
	}
	out := &topologyOutcome{announced: want, reports: reports, ready: len(ready), replicas: replicas, started: started}
	out.layoutReady, out.problems = r.podsNotReady(dc, pods.Items, want, replicas)
	out.problems = append(out.problems, r.fullVolumes(dc, reports)...)
	// A volume filling up or a pod stuck changes nothing the operator
	// watches: it asks the shards again after a while.
	out.requeue = shardPoll
	r.recordMove(dc, current, p, want, endedStart, asked)
	if want.Previous != nil {
		out.progress, out.blocked = moveStatus(want, shardStates(dc, pods.Items, reports), func(i int) string { return fmt.Sprintf("%s-%d", stsName(dc), i) })
		if len(out.blocked) > 0 {
			if c := meta.FindStatusCondition(dc.Status.Conditions, cachev1alpha1.ConditionDegraded); c == nil || c.Reason != cachev1alpha1.ReasonRebalanceBlocked {
				r.event(dc, corev1.EventTypeWarning, cachev1alpha1.ReasonRebalanceBlocked, "Rebalance",
					"the move from %d to %d shards waits for %s; nothing is deleted", len(want.Previous.Shards), len(want.Shards), strings.Join(out.blocked, ", "))
			}
			out.problems = append(out.problems, problem{cachev1alpha1.ReasonRebalanceBlocked, fmt.Sprintf(
				"the move from %d to %d shards (topology epoch %d) waits for %s: nothing is deleted, and it resumes when they are back",
				len(want.Previous.Shards), len(want.Shards), want.Epoch, strings.Join(out.blocked, ", "))})
		}
	}
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
		out.problems = append(out.problems, problem{cachev1alpha1.ReasonTopologyNotAnnounced,
			fmt.Sprintf("topology epoch %d not announced: %s", want.Epoch, strings.Join(failed, "; "))})
		out.requeue = topologyRetry
	}
	if want.Previous != nil || len(want.Shards) != int(dc.Spec.Shards) || replicas != dc.Spec.Shards {
		// A scale is under way: look again soon.
		out.requeue = rebalancePoll
	}
	return out, nil
}

// maxShards is spec.shards' maximum (the CRD's validation).
const maxShards = 128

// moveStart is when the move that want names started: as the ConfigMap
// recorded it, or, the ConfigMap lost (or its record), as status.topology
// last showed the same move (its epoch and previous shard count); nil when
// neither knows this move.
func moveStart(existing *corev1.ConfigMap, current *topology.Announcement, want topology.Announcement, st *cachev1alpha1.TopologyStatus) *time.Time {
	recorded := ""
	if existing != nil {
		recorded = existing.Annotations[RebalanceStartedAnno]
	}
	if recorded != "" && current != nil && current.Previous != nil && want.Previous != nil && current.Previous.Equal(*want.Previous) {
		if t, err := time.Parse(time.RFC3339, recorded); err == nil {
			return &t
		}
	}
	if recorded == "" && want.Previous != nil && st != nil && st.Rebalancing && st.RebalanceStartTime != nil &&
		st.Epoch == want.Epoch && int(st.PreviousShards) == len(want.Previous.Shards) {
		t := st.RebalanceStartTime.UTC()
		return &t
	}
	return nil
}

// keptClaimShards is 1 + the highest ordinal with a data claim of this
// DiskCache's StatefulSet, 0 when there is none.
func (r *DiskCacheReconciler) keptClaimShards(ctx context.Context, dc *cachev1alpha1.DiskCache) (int32, error) {
	var claims corev1.PersistentVolumeClaimList
	if err := r.List(ctx, &claims, client.InNamespace(dc.Namespace), client.MatchingLabels(selectorLabels(dc))); err != nil {
		return 0, fmt.Errorf("list claims: %w", err)
	}
	var n int32
	for i := range claims.Items {
		pvc := &claims.Items[i]
		s, ok := strings.CutPrefix(pvc.Name, DataVolume+"-"+stsName(dc)+"-")
		if !ok || pvc.DeletionTimestamp != nil {
			continue
		}
		if i, err := strconv.Atoi(s); err == nil && i >= 0 && i < maxShards {
			n = max(n, int32(i)+1)
		}
	}
	return n, nil
}

// shardStates arranges the pods and their answers by ordinal.
func shardStates(dc *cachev1alpha1.DiskCache, pods []corev1.Pod, reports []shardReport) map[int]shardState {
	out := map[int]shardState{}
	for i := range pods {
		if n, ok := podOrdinal(dc, &pods[i]); ok {
			out[n] = shardState{pod: pods[i].Name, ready: podReady(&pods[i])}
		}
	}
	for i := range reports {
		if n, ok := podOrdinal(dc, reports[i].pod); ok {
			s := out[n]
			s.rep = &reports[i]
			out[n] = s
		}
	}
	return out
}

// shardURLs are the URLs of the first n shards.
func (r *DiskCacheReconciler) shardURLs(dc *cachev1alpha1.DiskCache, n int) []string {
	urls := make([]string, n)
	for i := range urls {
		urls[i] = r.shardURL(dc, i)
	}
	return urls
}

func previousNote(a topology.Announcement) string {
	if a.Previous == nil {
		return ""
	}
	return fmt.Sprintf(", moving keys from the %d shards of epoch %d", len(a.Previous.Shards), a.Previous.Epoch)
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
			same := slices.Equal(t.Shards, want.Shards) && samePrevious(t.Previous, want.Previous)
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

func samePrevious(a, b *topology.Layout) bool {
	return (a == nil) == (b == nil) && (a == nil || a.Equal(*b))
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
func buildTopologyConfigMap(dc *cachev1alpha1.DiskCache, t topology.Announcement, started *time.Time) *corev1.ConfigMap {
	b, _ := json.MarshalIndent(t, "", "  ") // plain strings and numbers: cannot fail
	cm := &corev1.ConfigMap{
		ObjectMeta: objectMeta(dc, topologyName(dc), ComponentTopology),
		Data:       map[string]string{TopologyKey: string(b) + "\n"},
	}
	if started != nil {
		if cm.Annotations == nil {
			cm.Annotations = map[string]string{}
		}
		cm.Annotations[RebalanceStartedAnno] = started.UTC().Format(time.RFC3339)
	}
	return cm
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

// ownLayout reports whether every layout of a names this DiskCache's
// shards.
func (r *DiskCacheReconciler) ownLayout(dc *cachev1alpha1.DiskCache, a topology.Announcement) bool {
	if !slices.Equal(a.Shards, r.shardURLs(dc, len(a.Shards))) {
		return false
	}
	return a.Previous == nil || slices.Equal(a.Previous.Shards, r.shardURLs(dc, len(a.Previous.Shards)))
}

// layoutFromShards is the announcement to carry on from: kept (the
// ConfigMap's), or a newer one a shard of this DiskCache holds, or one on
// kept's epoch with another layout.
//
// The operator writes the ConfigMap before it announces, so a shard ahead
// of it holds what an earlier DiskCache's operator announced. So does one
// on its epoch with another layout, until every shard of the ConfigMap's
// layout has answered once (reportedAll): a new DiskCache's first ConfigMap
// (epoch 1) is written before any pod runs, and kept volumes may hold
// another epoch 1. After that, such a shard only took what this operator
// announced. Until then the layouts this operator announced itself
// (announced, by layoutID) are not history either: a new pod given the
// first layout from the spec, ready before the kept ones, would otherwise
// be taken for history once the kept layout is in the ConfigMap, and the
// keys never moved from it.
func (r *DiskCacheReconciler) layoutFromShards(dc *cachev1alpha1.DiskCache, kept *topology.Announcement, reports []shardReport,
	reportedAll bool, announced []string) *topology.Announcement {
	current := kept
	for _, rep := range reports {
		t := rep.topo
		if rep.err != nil || t == nil || t.Epoch <= 0 || t.Validate() != nil {
			continue
		}
		if current != nil && (t.Epoch < current.Epoch || t.Epoch == current.Epoch &&
			(reportedAll || current != kept || slices.Equal(t.Shards, current.Shards) && samePrevious(t.Previous, current.Previous))) {
			continue
		}
		if kept != nil && (!r.ownLayout(dc, t.Announcement) || slices.Contains(announced, layoutID(t.Announcement))) {
			continue // another cache's volume, or what this operator announced: not this cache's history
		}
		a := t.Announcement
		current = &a
	}
	return current
}

// AnnouncedLayoutsAnno on the topology ConfigMap lists, until every shard
// has reported (ShardsReportedAnno), the layouts the operator announced
// (layoutID, space separated), so that a shard holding one is not taken
// for an earlier DiskCache's history.
const AnnouncedLayoutsAnno = labelPrefix + "announced-layouts"

// maxAnnouncedLayouts bounds AnnouncedLayoutsAnno.
const maxAnnouncedLayouts = 32

// rememberLayout adds id to the announced layouts, keeping the newest
// maxAnnouncedLayouts: a pod that never reports (stuck) must not grow the
// list without bound, and a ready pod is given each announcement, so none
// holds one of the oldest.
func rememberLayout(announced []string, id string) []string {
	if !slices.Contains(announced, id) {
		announced = append(announced, id)
	}
	return announced[max(0, len(announced)-maxAnnouncedLayouts):]
}

// layoutID names an announcement by its epoch and shard count, and its
// previous layout's during a move: "3:4" or "3:4<2:3". The shards' URLs
// follow from the count (ownLayout).
func layoutID(a topology.Announcement) string {
	id := fmt.Sprintf("%d:%d", a.Epoch, len(a.Shards))
	if a.Previous != nil {
		id += fmt.Sprintf("<%d:%d", a.Previous.Epoch, len(a.Previous.Shards))
	}
	return id
}

// ShardsReportedAnno on the topology ConfigMap says that every shard of a
// layout it held has reported its topology once: from then on a shard on
// the ConfigMap's epoch with another layout is not read as history.
const ShardsReportedAnno = labelPrefix + "shards-reported"

// everyShardReported says whether shards 0 to n-1 all answered with a
// topology.
func everyShardReported(dc *cachev1alpha1.DiskCache, reports []shardReport, n int) bool {
	seen := map[int]bool{}
	for _, rep := range reports {
		if rep.err == nil && rep.topo != nil {
			if i, ok := podOrdinal(dc, rep.pod); ok {
				seen[i] = true
			}
		}
	}
	for i := range n {
		if !seen[i] {
			return false
		}
	}
	return true
}

// shardPoll is how often the operator reads the shards' state (topology,
// configuration, full volumes) when nothing else brings it back.
const shardPoll = time.Minute

// DefaultPodReadyDeadline is DiskCacheReconciler.PodReadyDeadline when
// unset: as long as a Deployment's default progress deadline.
const DefaultPodReadyDeadline = 10 * time.Minute

// podsNotReady says whether every shard of the announcement has a ready
// pod, and lists as problems (Degraded) the pods of the StatefulSet's
// replicas that are still not ready PodReadyDeadline after their creation,
// with what holds them (a claim that cannot bind, an image that cannot be
// pulled): a scale-up waiting on them waited without a word.
func (r *DiskCacheReconciler) podsNotReady(dc *cachev1alpha1.DiskCache, pods []corev1.Pod, a topology.Announcement, replicas int32) (bool, []problem) {
	deadline := r.PodReadyDeadline
	if deadline <= 0 {
		deadline = DefaultPodReadyDeadline
	}
	layout := len(a.Shards)
	if a.Previous != nil {
		layout = max(layout, len(a.Previous.Shards))
	}
	byOrdinal := map[int]*corev1.Pod{}
	for i := range pods {
		if n, ok := podOrdinal(dc, &pods[i]); ok {
			byOrdinal[n] = &pods[i]
		}
	}
	layoutReady := true
	var problems []problem
	for i := 0; i < max(layout, int(replicas)); i++ {
		pod := byOrdinal[i]
		if pod != nil && podReady(pod) {
			continue
		}
		if i < layout {
			layoutReady = false
		}
		if pod == nil || pod.DeletionTimestamp != nil || time.Since(pod.CreationTimestamp.Time) < deadline {
			continue
		}
		problems = append(problems, problem{reason: cachev1alpha1.ReasonPodsNotReady,
			message: fmt.Sprintf("pod %s is not ready (created %s ago): %s", pod.Name,
				time.Since(pod.CreationTimestamp.Time).Round(time.Second), whyNotReady(pod))})
	}
	return layoutReady, problems
}

// whyNotReady is what the pod's status says holds it: an unschedulable
// pod's reason (an unbound claim, no node with room), a container's
// waiting reason, or its phase.
func whyNotReady(pod *corev1.Pod) string {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue && c.Message != "" {
			return "not scheduled: " + c.Message
		}
	}
	for _, cs := range append(slices.Clone(pod.Status.InitContainerStatuses), pod.Status.ContainerStatuses...) {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			return fmt.Sprintf("container %s waiting: %s %s", cs.Name, w.Reason, w.Message)
		}
	}
	return fmt.Sprintf("phase %s; see its events", pod.Status.Phase)
}

// fullVolumes lists as problems (Degraded DiskFull) the shards that report
// a full data volume, with a Warning Event when one becomes full: they stay
// ready, serving reads and the deletes that free space, so nothing else
// would say why their writes answer 507.
func (r *DiskCacheReconciler) fullVolumes(dc *cachev1alpha1.DiskCache, reports []shardReport) []problem {
	var problems []problem
	for _, rep := range reports {
		if rep.config == nil {
			continue
		}
		if !rep.config.DiskFull {
			r.fullPods.Delete(rep.pod.UID)
			continue
		}
		msg := fmt.Sprintf("pod %s: its data volume is full, so it refuses writes of new data (507) until items are deleted, evicted, expired or culled; keep spec.sizeLimit below the volume, or grow spec.storage", rep.pod.Name)
		problems = append(problems, problem{reason: cachev1alpha1.ReasonDiskFull, message: msg})
		if _, seen := r.fullPods.LoadOrStore(rep.pod.UID, true); !seen {
			r.eventRelated(dc, rep.pod, corev1.EventTypeWarning, cachev1alpha1.ReasonDiskFull, "Write", "%s", msg)
		}
	}
	return problems
}
