package controllers

import (
	"context"
	"errors"
	"fmt"
	"k8s.io/client-go/util/retry"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

var bg = context.Background()

// newDiskCache creates a DiskCache and returns it as the API server stored it.
func newDiskCache(t *testing.T, ns, name string, mutate func(*cachev1alpha1.DiskCache)) *cachev1alpha1.DiskCache {
	t.Helper()
	dc := &cachev1alpha1.DiskCache{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if mutate != nil {
		mutate(dc)
	}
	if err := k8s.Create(bg, dc); err != nil {
		t.Fatalf("create DiskCache: %v", err)
	}
	return dc
}

// updateDiskCache re-reads the DiskCache, mutates and updates it, retrying
// on conflicts with the operator's status writes.
func updateDiskCache(t *testing.T, ns, name string, mutate func(*cachev1alpha1.DiskCache)) *cachev1alpha1.DiskCache {
	t.Helper()
	var dc cachev1alpha1.DiskCache
	eventually(t, "update DiskCache", func() error {
		if err := k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: name}, &dc); err != nil {
			return err
		}
		mutate(&dc)
		return k8s.Update(bg, &dc)
	})
	return &dc
}

func get[T client.Object](t *testing.T, ns, name string, obj T) T {
	t.Helper()
	if err := k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: name}, obj); err != nil {
		t.Fatalf("get %T %s: %v", obj, name, err)
	}
	return obj
}

// children lists the eight children of a DiskCache; an error names the first missing.
type children struct {
	sts     appsv1.StatefulSet
	svc     corev1.Service
	peers   corev1.Service
	cm      corev1.ConfigMap
	secret  corev1.Secret
	pdb     policyv1.PodDisruptionBudget
	topo    corev1.ConfigMap
	admin   corev1.Secret
	objects []client.Object
}

func getChildren(ns, name string) (*children, error) {
	c := &children{}
	for _, o := range []struct {
		name string
		obj  client.Object
	}{
		{name, &c.sts}, {name, &c.svc}, {name + "-peers", &c.peers}, {name + "-config", &c.cm},
		{name + "-token", &c.secret}, {name, &c.pdb}, {name + "-topology", &c.topo}, {name + "-admin-token", &c.admin},
	} {
		if err := k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: o.name}, o.obj); err != nil {
			return nil, fmt.Errorf("%T %s: %w", o.obj, o.name, err)
		}
		c.objects = append(c.objects, o.obj)
	}
	return c, nil
}

func waitChildren(t *testing.T, ns, name string) *children {
	t.Helper()
	var c *children
	eventually(t, "all children present", func() (err error) {
		c, err = getChildren(ns, name)
		return err
	})
	return c
}

func container(sts *appsv1.StatefulSet) *corev1.Container {
	return &sts.Spec.Template.Spec.Containers[0]
}

func TestCreateProducesEveryChild(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	start := time.Now()
	dc := newDiskCache(t, ns, "orders", func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Shards = 3
		dc.Spec.Storage.StorageClassName = ptrTo("fast")
		dc.Spec.Storage.Size = ptrTo(resource.MustParse("10Gi"))
		dc.Spec.Storage.PVCRetentionPolicy = cachev1alpha1.PVCRetentionPolicy{WhenDeleted: cachev1alpha1.DeletePVC, WhenScaled: cachev1alpha1.RetainPVC}
		dc.Spec.SizeLimit = ptrTo(resource.MustParse("4Gi"))
		dc.Spec.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
		}
		dc.Spec.NodeSelector = map[string]string{"disktype": "ssd"}
		dc.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "cache", Effect: corev1.TaintEffectNoSchedule}}
		dc.Spec.PodAnnotations = map[string]string{"prometheus.io/scrape": "true"}
		dc.Spec.PodLabels = map[string]string{"team": "checkout", LabelInstance: "hijack"}
		dc.Spec.PriorityClassName = "cache-critical"
		dc.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway}}
	})
	c := waitChildren(t, ns, "orders")
	t.Logf("reconcile latency, create → all 8 children present: %v", time.Since(start).Round(time.Millisecond))

	// Owner references: the DiskCache controls every child, so the garbage
	// collector deletes them with it (envtest runs no garbage collector).
	for _, o := range c.objects {
		refs := o.GetOwnerReferences()
		if len(refs) != 1 || refs[0].UID != dc.UID || refs[0].Kind != "DiskCache" ||
			refs[0].APIVersion != "cache.diskcache.dev/v1alpha1" || !*refs[0].Controller || !*refs[0].BlockOwnerDeletion {
			t.Errorf("%T %s: owner references %+v, want the DiskCache as controller", o, o.GetName(), refs)
		}
		if o.GetLabels()[LabelManagedBy] != ManagerName || o.GetLabels()[LabelInstance] != "orders" {
			t.Errorf("%T %s: labels %v", o, o.GetName(), o.GetLabels())
		}
	}

	sts := &c.sts
	if *sts.Spec.Replicas != 3 || sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement || sts.Spec.ServiceName != "orders-peers" {
		t.Errorf("statefulset: replicas %d, policy %s, service %s", *sts.Spec.Replicas, sts.Spec.PodManagementPolicy, sts.Spec.ServiceName)
	}
	if p := sts.Spec.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenDeleted != appsv1.DeletePersistentVolumeClaimRetentionPolicyType || p.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("pvc retention policy %+v", p)
	}
	if n := len(sts.Spec.VolumeClaimTemplates); n != 1 {
		t.Fatalf("%d volume claim templates", n)
	}
	vct := sts.Spec.VolumeClaimTemplates[0]
	if vct.Name != "data" || *vct.Spec.StorageClassName != "fast" || !vct.Spec.Resources.Requests.Storage().Equal(resource.MustParse("10Gi")) ||
		!slices.Equal(vct.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("volume claim template %+v", vct)
	}
	wantSel := map[string]string{LabelName: "diskcache", LabelInstance: "orders", LabelComponent: "cacheserver"}
	if !mapsEqual(sts.Spec.Selector.MatchLabels, wantSel) {
		t.Errorf("selector %v", sts.Spec.Selector.MatchLabels)
	}
	pt := sts.Spec.Template
	if pt.Labels[LabelInstance] != "orders" || pt.Labels["team"] != "checkout" {
		t.Errorf("pod labels %v: want the user's plus the operator's (which win)", pt.Labels)
	}
	if pt.Annotations["prometheus.io/scrape"] != "true" || len(pt.Annotations[ConfigHashAnno]) != 16 {
		t.Errorf("pod annotations %v", pt.Annotations)
	}
	ps := pt.Spec
	if psc := ps.SecurityContext; psc == nil || !*psc.RunAsNonRoot || *psc.RunAsUser != 65532 || *psc.RunAsGroup != 65532 || *psc.FSGroup != 65532 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context %+v", psc)
	}
	if *ps.AutomountServiceAccountToken || ps.NodeSelector["disktype"] != "ssd" || len(ps.Tolerations) != 1 || ps.PriorityClassName != "cache-critical" {
		t.Errorf("pod spec scheduling/automount: %+v", ps)
	}
	if len(ps.TopologySpreadConstraints) != 1 || ps.TopologySpreadConstraints[0].LabelSelector == nil ||
		!mapsEqual(ps.TopologySpreadConstraints[0].LabelSelector.MatchLabels, wantSel) {
		t.Errorf("topology spread constraints %+v: want the selector filled in", ps.TopologySpreadConstraints)
	}
	ct := container(sts)
	if ct.Image != testImage || !slices.Equal(ct.Command, []string{"/cacheserver"}) || !slices.Equal(ct.Args, []string{"--config", "/etc/diskcache/cacheserver.conf",
		"--topology-file", "/etc/diskcache/topology/topology.json", "--admin-token-file", "/etc/diskcache/admin/token"}) {
		t.Errorf("container image %q command %q args %q", ct.Image, ct.Command, ct.Args)
	}
	if len(ct.Ports) != 2 || ct.Ports[0].ContainerPort != 8080 || ct.Ports[0].Name != "http" ||
		ct.Ports[1].ContainerPort != 8081 || ct.Ports[1].Name != "health" {
		t.Errorf("ports %+v", ct.Ports)
	}
	// The probes ask the health port, outside --max-connections.
	if p := ct.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port != intstr.FromString("health") {
		t.Errorf("liveness probe %+v", p)
	}
	if p := ct.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port != intstr.FromString("health") {
		t.Errorf("readiness probe %+v", p)
	}
	if p := ct.StartupProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port != intstr.FromString("health") {
		t.Errorf("startup probe %+v", p)
	}
	if sc := ct.SecurityContext; sc == nil || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || !*sc.RunAsNonRoot ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 ||
		sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("container security context %+v", sc)
	}
	if !ct.Resources.Requests.Cpu().Equal(resource.MustParse("100m")) || !ct.Resources.Limits.Memory().Equal(resource.MustParse("512Mi")) {
		t.Errorf("resources %+v", ct.Resources)
	}
	mounts := map[string]string{}
	for _, m := range ct.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if !mapsEqual(mounts, map[string]string{"data": "/data", "config": "/etc/diskcache", "token": "/var/run/secrets/diskcache", "tmp": "/tmp"}) {
		t.Errorf("volume mounts %v", mounts)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
	}
	if err := tokenVolumeIs(vols["token"], "orders-token"); err != nil {
		t.Error(err)
	}
	// cacheserver.conf, the topology and the admin token in one projected
	// volume at /etc/diskcache.
	if v := vols["config"]; v.Projected == nil || len(v.Projected.Sources) != 3 {
		t.Errorf("config volume %+v", v)
	} else {
		src := v.Projected.Sources
		if cm := src[0].ConfigMap; cm == nil || cm.Name != "orders-config" || len(cm.Items) != 1 || cm.Items[0] != (corev1.KeyToPath{Key: "cacheserver.conf", Path: "cacheserver.conf"}) {
			t.Errorf("config volume: cacheserver.conf from %+v", src[0])
		}
		if cm := src[1].ConfigMap; cm == nil || cm.Name != "orders-topology" || len(cm.Items) != 1 || cm.Items[0] != (corev1.KeyToPath{Key: "topology.json", Path: "topology/topology.json"}) {
			t.Errorf("config volume: topology from %+v", src[1])
		}
		if s := src[2].Secret; s == nil || s.Name != "orders-admin-token" || len(s.Items) != 1 || s.Items[0].Key != "token" || s.Items[0].Path != "admin/token" ||
			s.Items[0].Mode == nil || *s.Items[0].Mode != 0o440 {
			t.Errorf("config volume: admin token from %+v", src[2])
		}
	}
	// Each server's shard index is its pod's ordinal; its --memory-limit
	// is the container's memory limit in bytes, from the downward API.
	if len(ct.Env) != 2 || ct.Env[0].Name != "DISKCACHE_SHARD_INDEX" || ct.Env[0].ValueFrom == nil || ct.Env[0].ValueFrom.FieldRef == nil ||
		ct.Env[0].ValueFrom.FieldRef.FieldPath != "metadata.labels['apps.kubernetes.io/pod-index']" {
		t.Errorf("env %+v: want DISKCACHE_SHARD_INDEX from the pod-index label", ct.Env)
	} else if e := ct.Env[1]; e.Name != "DISKCACHE_MEMORY_LIMIT" || e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef == nil ||
		*e.ValueFrom.ResourceFieldRef != (corev1.ResourceFieldSelector{ContainerName: "cacheserver", Resource: "limits.memory", Divisor: resource.MustParse("1")}) {
		t.Errorf("env %+v: want DISKCACHE_MEMORY_LIMIT from the cacheserver container's limits.memory, divisor 1", ct.Env)
	}
	if v := vols["tmp"]; v.EmptyDir == nil {
		t.Errorf("tmp volume %+v", v)
	}

	// Services.
	if c.svc.Spec.Type != corev1.ServiceTypeClusterIP || c.svc.Spec.ClusterIP == corev1.ClusterIPNone || len(c.svc.Spec.Ports) != 2 ||
		c.svc.Spec.Ports[0].Port != 8080 || c.svc.Spec.Ports[1].Port != 8081 || c.svc.Spec.Ports[1].Name != "health" ||
		!mapsEqual(c.svc.Spec.Selector, wantSel) {
		t.Errorf("client service %+v", c.svc.Spec)
	}
	if c.peers.Spec.ClusterIP != corev1.ClusterIPNone || !c.peers.Spec.PublishNotReadyAddresses || !mapsEqual(c.peers.Spec.Selector, wantSel) ||
		c.peers.Spec.Ports[0].Port != 8080 {
		t.Errorf("peer service %+v", c.peers.Spec)
	}
	// ConfigMap: the cacheserver's name = value format.
	conf := c.cm.Data["cacheserver.conf"]
	for _, line := range []string{"data-dir = /data/cache", "listen = :8080", "health-listen = :8081", "token-file = /var/run/secrets/diskcache/token",
		"fanout = 8", "database-timeout = 1s", "disk-min-file-size = 32768", "size-limit = 4294967296",
		"eviction-policy = least-recently-stored", "cull-limit = 10", "statistics = false", "tag-index = false"} {
		if !strings.Contains(conf, "\n"+line+"\n") {
			t.Errorf("cacheserver.conf lacks %q:\n%s", line, conf)
		}
	}
	// Secret: a generated 32-byte token.
	tok := string(c.secret.Data["token"])
	if len(tok) != 43 || c.secret.Type != corev1.SecretTypeOpaque {
		t.Errorf("token Secret: type %s, token of %d characters (want base64 of 32 bytes)", c.secret.Type, len(tok))
	}
	// PDB.
	if c.pdb.Spec.MaxUnavailable == nil || c.pdb.Spec.MaxUnavailable.IntValue() != 1 || !mapsEqual(c.pdb.Spec.Selector.MatchLabels, wantSel) {
		t.Errorf("pdb %+v", c.pdb.Spec)
	}

	// Status: endpoint, selector, topology; not available (no pods yet).
	eventually(t, "status", func() error {
		got := get(t, ns, "orders", &cachev1alpha1.DiskCache{})
		st := got.Status
		if st.Endpoint != "http://orders."+ns+".svc:8080" || st.Selector != "app.kubernetes.io/component=cacheserver,app.kubernetes.io/instance=orders,app.kubernetes.io/name=diskcache" {
			return fmt.Errorf("endpoint %q selector %q", st.Endpoint, st.Selector)
		}
		// No server has reported a topology: none in the status.
		if st.ObservedGeneration != got.Generation || st.Topology != nil {
			return fmt.Errorf("observedGeneration %d/%d topology %+v", st.ObservedGeneration, got.Generation, st.Topology)
		}
		if err := conditionIs(got, cachev1alpha1.ConditionTopologyAnnounced, metav1.ConditionUnknown, cachev1alpha1.ReasonTopologyUnknown); err != nil {
			return err
		}
		return conditionIs(got, cachev1alpha1.ConditionAvailable, metav1.ConditionFalse, cachev1alpha1.ReasonShardsUnavailable)
	})

	// Events say what was created and never carry the token.
	eventually(t, "creation events", func() error {
		evs := eventsFor(t, ns, "orders")
		var notes []string
		for _, e := range evs {
			notes = append(notes, e.Note)
		}
		all := strings.Join(notes, "\n")
		if strings.Contains(all, tok) || strings.Contains(all, string(c.admin.Data["token"])) {
			t.Fatalf("an event contains a token")
		}
		for _, want := range []string{"created StatefulSet orders", "created Service orders", "created Service orders-peers",
			"created ConfigMap orders-config", "created Secret orders-token", "created PodDisruptionBudget orders",
			"created ConfigMap orders-topology", "created Secret orders-admin-token with a generated admin token",
			"announcing topology epoch 1: 3 shards"} {
			if !strings.Contains(all, want) {
				return fmt.Errorf("no event %q in:\n%s", want, all)
			}
		}
		return nil
	})
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

func conditionIs(dc *cachev1alpha1.DiskCache, typ string, status metav1.ConditionStatus, reason string) error {
	c := meta.FindStatusCondition(dc.Status.Conditions, typ)
	if c == nil {
		return fmt.Errorf("no %s condition", typ)
	}
	if c.Status != status || (reason != "" && c.Reason != reason) {
		return fmt.Errorf("%s = %s (%s: %s), want %s (%s)", typ, c.Status, c.Reason, c.Message, status, reason)
	}
	return nil
}

func eventsFor(t *testing.T, ns, name string) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := k8s.List(bg, &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Kind == "DiskCache" && e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	return out
}

func TestDefaultsApplied(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	// From a manifest, as a user applies it: a Go client sends every
	// struct field (auth: {}), where a manifest leaves them out.
	if err := k8s.Create(bg, rawDiskCache(t, ns, "plain", "{}")); err != nil {
		t.Fatal(err)
	}
	got := get(t, ns, "plain", &cachev1alpha1.DiskCache{})
	s := got.Spec
	checks := []struct {
		name      string
		got, want any
	}{
		{"shards", s.Shards, int32(1)},
		{"sizeLimit", s.SizeLimit.String(), "1Gi"},
		{"evictionPolicy", s.EvictionPolicy, cachev1alpha1.EvictionLeastRecentlyStored},
		{"cullLimit", *s.CullLimit, int32(10)},
		{"fanout", s.Fanout, int32(8)},
		{"databaseTimeout", s.DatabaseTimeout.Duration, time.Second},
		{"diskMinFileSize", s.DiskMinFileSize.String(), "32Ki"},
		{"statistics", s.Statistics, false},
		{"tagIndex", s.TagIndex, false},
		{"storage.size", s.Storage.Size.String(), "2Gi"},
		{"storage.storageClassName", s.Storage.StorageClassName == nil, true},
		{"storage.pvcRetentionPolicy.whenDeleted", s.Storage.PVCRetentionPolicy.WhenDeleted, cachev1alpha1.RetainPVC},
		{"storage.pvcRetentionPolicy.whenScaled", s.Storage.PVCRetentionPolicy.WhenScaled, cachev1alpha1.RetainPVC},
		{"maintenance.schedule", s.Maintenance.Schedule, "*/5 * * * *"},
		{"maintenance.timeZone", s.Maintenance.TimeZone, "UTC"},
		{"maintenance.expire", *s.Maintenance.Expire, true},
		{"maintenance.cull", *s.Maintenance.Cull, true},
		{"maintenance.suspend", s.Maintenance.Suspend, false},
		// Shown without an auth block too (docs/crd.md: every default).
		{"auth.rotationGracePeriod", s.Auth.RotationGracePeriod != nil && s.Auth.RotationGracePeriod.Duration == 5*time.Minute, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s defaulted to %v, want %v", c.name, c.got, c.want)
		}
	}
	// The Go defaults agree with the CRD's.
	var empty cachev1alpha1.DiskCacheSpec
	empty.Default()
	if got, want := fmt.Sprintf("%+v", specForCompare(empty)), fmt.Sprintf("%+v", specForCompare(s)); got != want {
		t.Errorf("DiskCacheSpec.Default() = %s\nCRD defaults       = %s", got, want)
	}
	c := waitChildren(t, ns, "plain")
	if *c.sts.Spec.Replicas != 1 || !c.sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().Equal(resource.MustParse("2Gi")) ||
		c.sts.Spec.VolumeClaimTemplates[0].Spec.StorageClassName != nil {
		t.Errorf("defaulted statefulset: replicas %d, claim %+v", *c.sts.Spec.Replicas, c.sts.Spec.VolumeClaimTemplates[0].Spec)
	}
	// No memory limit: no --memory-limit (the downward API would answer
	// the node's allocatable memory).
	if env := container(&c.sts).Env; len(env) != 1 || env[0].Name != "DISKCACHE_SHARD_INDEX" {
		t.Errorf("env %+v without a memory limit: want DISKCACHE_SHARD_INDEX alone", env)
	}
}

func specForCompare(s cachev1alpha1.DiskCacheSpec) string {
	return fmt.Sprintf("shards=%d size=%s policy=%s cull=%d fanout=%d dbt=%s dmfs=%s storage=%s ret=%+v sched=%q tz=%s exp=%v cull=%v",
		s.Shards, s.SizeLimit.String(), s.EvictionPolicy, *s.CullLimit, s.Fanout, s.DatabaseTimeout.Duration, s.DiskMinFileSize.String(),
		s.Storage.Size.String(), s.Storage.PVCRetentionPolicy, s.Maintenance.Schedule, s.Maintenance.TimeZone, *s.Maintenance.Expire, *s.Maintenance.Cull)
}

func TestSpecChangesReachTheRightChild(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "web", nil)
	c := waitChildren(t, ns, "web")
	hash0 := c.sts.Spec.Template.Annotations[ConfigHashAnno]
	if ps := c.sts.Spec.Template.Spec.ImagePullSecrets; len(ps) != 1 || ps[0].Name != "operator-pull" {
		t.Errorf("image pull secrets %v, want the operator's (operator-pull)", ps)
	}

	waitSTS := func(what string, ok func(*appsv1.StatefulSet) error) *appsv1.StatefulSet {
		t.Helper()
		var sts appsv1.StatefulSet
		eventually(t, what, func() error {
			if err := k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: "web"}, &sts); err != nil {
				return err
			}
			return ok(&sts)
		})
		return &sts
	}

	// shards → replicas, nothing else.
	updateDiskCache(t, ns, "web", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 4 })
	sts := waitSTS("replicas follow shards", func(s *appsv1.StatefulSet) error {
		if *s.Spec.Replicas != 4 {
			return fmt.Errorf("replicas %d", *s.Spec.Replicas)
		}
		return nil
	})
	if sts.Spec.Template.Annotations[ConfigHashAnno] != hash0 {
		t.Errorf("scaling changed the pod template hash")
	}
	// The new shards join the topology once their pods are ready (see
	// TestTopologyEpochs); no server has reported one.
	if topo := announced(t, ns, "web"); topo.Epoch != 1 || len(topo.Shards) != 1 {
		t.Errorf("announced topology %+v, want epoch 1 with 1 shard until the new pods are ready", topo)
	}
	if dc := get(t, ns, "web", &cachev1alpha1.DiskCache{}); dc.Status.Topology != nil {
		t.Errorf("status.topology %+v with no server reporting one", dc.Status.Topology)
	}

	// Start-up settings → ConfigMap and a new pod-template hash (a rollout).
	hash := hash0
	restart := []struct {
		name   string
		mutate func(*cachev1alpha1.DiskCache)
		line   string
	}{
		{"databaseTimeout", func(dc *cachev1alpha1.DiskCache) {
			dc.Spec.DatabaseTimeout = &metav1.Duration{Duration: 3 * time.Second}
		}, "database-timeout = 3s"},
		{"diskMinFileSize", func(dc *cachev1alpha1.DiskCache) { dc.Spec.DiskMinFileSize = ptrTo(resource.MustParse("64Ki")) }, "disk-min-file-size = 65536"},
		{"maxKeyBytes", func(dc *cachev1alpha1.DiskCache) { dc.Spec.MaxKeyBytes = ptrTo(resource.MustParse("1Ki")) }, "max-key-bytes = 1024"},
		{"maxValueBytes", func(dc *cachev1alpha1.DiskCache) { dc.Spec.MaxValueBytes = ptrTo(resource.MustParse("16Mi")) }, "max-value-bytes = 16777216"},
		{"tls", func(dc *cachev1alpha1.DiskCache) { dc.Spec.TLS = &cachev1alpha1.TLSSpec{SecretName: "web-tls"} }, "tls-cert = /etc/diskcache-tls/tls.crt"},
	}
	for _, r := range restart {
		updateDiskCache(t, ns, "web", r.mutate)
		eventually(t, r.name+" reaches the ConfigMap", func() error {
			cm := get(t, ns, "web-config", &corev1.ConfigMap{})
			if !strings.Contains(cm.Data[ConfigKey], "\n"+r.line+"\n") {
				return fmt.Errorf("no %q in\n%s", r.line, cm.Data[ConfigKey])
			}
			return nil
		})
		prev := hash
		sts = waitSTS(r.name+" rolls the pods", func(s *appsv1.StatefulSet) error {
			if s.Spec.Template.Annotations[ConfigHashAnno] == prev {
				return errors.New("pod template hash unchanged")
			}
			return nil
		})
		hash = sts.Spec.Template.Annotations[ConfigHashAnno]
	}
	// TLS also switches the probes and the endpoint to HTTPS and mounts the Secret.
	if ct := container(sts); ct.ReadinessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS || ct.LivenessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
		t.Errorf("probes not HTTPS with TLS on")
	}
	if !slices.ContainsFunc(sts.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == TLSVolume && v.Projected != nil && len(v.Projected.Sources) > 0 &&
			v.Projected.Sources[0].Secret != nil && v.Projected.Sources[0].Secret.Name == "web-tls"
	}) {
		t.Errorf("TLS Secret not mounted")
	}
	eventually(t, "https endpoint", func() error {
		dc := get(t, ns, "web", &cachev1alpha1.DiskCache{})
		if dc.Status.Endpoint != "https://web."+ns+".svc:8080" {
			return fmt.Errorf("endpoint %s", dc.Status.Endpoint)
		}
		// The TLS Secret does not exist: Degraded says so.
		return conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionTrue, cachev1alpha1.ReasonTLSSecretInvalid)
	})
	eventually(t, "a Warning event", func() error {
		return findEventNote(t, ns, "web", cachev1alpha1.ReasonTLSSecretInvalid, "TLS Secret web-tls not found")
	})

	// Pod-template fields → the template itself.
	podFields := []struct {
		name   string
		mutate func(*cachev1alpha1.DiskCache)
		check  func(*appsv1.StatefulSet) error
	}{
		{"image", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Image = "registry.example/diskcache:v2" }, func(s *appsv1.StatefulSet) error {
			return want(container(s).Image == "registry.example/diskcache:v2", "image %s", container(s).Image)
		}},
		{"imagePullSecrets", func(dc *cachev1alpha1.DiskCache) {
			dc.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "team-registry"}}
		}, func(s *appsv1.StatefulSet) error {
			ps := s.Spec.Template.Spec.ImagePullSecrets
			return want(len(ps) == 1 && ps[0].Name == "team-registry", "image pull secrets %v", ps)
		}},
		{"imagePullPolicy", func(dc *cachev1alpha1.DiskCache) { dc.Spec.ImagePullPolicy = corev1.PullNever }, func(s *appsv1.StatefulSet) error {
			return want(container(s).ImagePullPolicy == corev1.PullNever, "pull policy %s", container(s).ImagePullPolicy)
		}},
		{"resources", func(dc *cachev1alpha1.DiskCache) {
			dc.Spec.Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}
		}, func(s *appsv1.StatefulSet) error {
			return want(container(s).Resources.Limits.Memory().Equal(resource.MustParse("1Gi")), "resources %+v", container(s).Resources)
		}},
		{"nodeSelector", func(dc *cachev1alpha1.DiskCache) { dc.Spec.NodeSelector = map[string]string{"zone": "a"} }, func(s *appsv1.StatefulSet) error {
			return want(s.Spec.Template.Spec.NodeSelector["zone"] == "a", "nodeSelector %v", s.Spec.Template.Spec.NodeSelector)
		}},
		{"tolerations", func(dc *cachev1alpha1.DiskCache) {
			dc.Spec.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists}}
		}, func(s *appsv1.StatefulSet) error {
			return want(len(s.Spec.Template.Spec.Tolerations) == 1, "tolerations %v", s.Spec.Template.Spec.Tolerations)
		}},
		{"affinity", func(dc *cachev1alpha1.DiskCache) {
			dc.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
				Weight: 10, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: "kubernetes.io/hostname"}}}}}
		}, func(s *appsv1.StatefulSet) error {
			return want(s.Spec.Template.Spec.Affinity != nil && s.Spec.Template.Spec.Affinity.PodAntiAffinity != nil, "affinity %v", s.Spec.Template.Spec.Affinity)
		}},
		{"priorityClassName", func(dc *cachev1alpha1.DiskCache) { dc.Spec.PriorityClassName = "high" }, func(s *appsv1.StatefulSet) error {
			return want(s.Spec.Template.Spec.PriorityClassName == "high", "priority class %q", s.Spec.Template.Spec.PriorityClassName)
		}},
		{"podAnnotations", func(dc *cachev1alpha1.DiskCache) { dc.Spec.PodAnnotations = map[string]string{"a": "b"} }, func(s *appsv1.StatefulSet) error {
			return want(s.Spec.Template.Annotations["a"] == "b", "annotations %v", s.Spec.Template.Annotations)
		}},
		{"podLabels", func(dc *cachev1alpha1.DiskCache) { dc.Spec.PodLabels = map[string]string{"tier": "cache"} }, func(s *appsv1.StatefulSet) error {
			return want(s.Spec.Template.Labels["tier"] == "cache", "labels %v", s.Spec.Template.Labels)
		}},
		{"podLabels removed", func(dc *cachev1alpha1.DiskCache) { dc.Spec.PodLabels = nil }, func(s *appsv1.StatefulSet) error {
			_, still := s.Spec.Template.Labels["tier"]
			return want(!still, "labels %v", s.Spec.Template.Labels)
		}},
		{"pvcRetentionPolicy", func(dc *cachev1alpha1.DiskCache) {
			dc.Spec.Storage.PVCRetentionPolicy.WhenScaled = cachev1alpha1.DeletePVC
		}, func(s *appsv1.StatefulSet) error {
			return want(s.Spec.PersistentVolumeClaimRetentionPolicy.WhenScaled == appsv1.DeletePersistentVolumeClaimRetentionPolicyType,
				"retention %+v", s.Spec.PersistentVolumeClaimRetentionPolicy)
		}},
	}
	for _, f := range podFields {
		updateDiskCache(t, ns, "web", f.mutate)
		waitSTS(f.name+" reaches the pod template", f.check)
	}
	// A new image rolls the shards, and an Event says so (as for new
	// start-up settings).
	eventually(t, "RollingUpdate event for the image", func() error {
		return findEventNote(t, ns, "web", "RollingUpdate", "the image changed from "+testImage+" to registry.example/diskcache:v2: rolling")
	})
}

func want(ok bool, format string, args ...any) error {
	if ok {
		return nil
	}
	return fmt.Errorf(format, args...)
}

func TestStorageGrowthResizesClaims(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "expandable-" + ns}, Provisioner: "example.com/disk", AllowVolumeExpansion: ptrTo(true)}
	if err := k8s.Create(bg, sc); err != nil {
		t.Fatal(err)
	}
	newDiskCache(t, ns, "vol", func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Storage.StorageClassName = &sc.Name
		dc.Spec.Storage.Size = ptrTo(resource.MustParse("1Gi"))
		dc.Spec.SizeLimit = ptrTo(resource.MustParse("512Mi"))
	})
	c := waitChildren(t, ns, "vol")
	// Stand in for the StatefulSet controller: the claim of shard 0, bound.
	vct := c.sts.Spec.VolumeClaimTemplates[0]
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "data-vol-0", Labels: vct.Labels}, Spec: vct.Spec}
	if err := k8s.Create(bg, pvc); err != nil {
		t.Fatal(err)
	}
	pvc.Status.Phase = corev1.ClaimBound
	pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}
	if err := k8s.Status().Update(bg, pvc); err != nil {
		t.Fatal(err)
	}
	updateDiskCache(t, ns, "vol", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Storage.Size = ptrTo(resource.MustParse("5Gi")) })
	eventually(t, "claim grows", func() error {
		got := get(t, ns, "data-vol-0", &corev1.PersistentVolumeClaim{})
		return want(got.Spec.Resources.Requests.Storage().Equal(resource.MustParse("5Gi")), "claim requests %s", got.Spec.Resources.Requests.Storage())
	})
	// The template keeps its (immutable) size; the StatefulSet was not recreated.
	sts := get(t, ns, "vol", &appsv1.StatefulSet{})
	if sts.UID != c.sts.UID || !sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().Equal(resource.MustParse("1Gi")) {
		t.Errorf("statefulset replaced or template changed")
	}
	eventually(t, "resize event", func() error {
		for _, e := range eventsFor(t, ns, "vol") {
			if strings.Contains(e.Note, "growing PersistentVolumeClaim data-vol-0 from 1Gi to 5Gi") {
				return nil
			}
		}
		return errors.New("no VolumeResizing event")
	})
}

func TestDeletedChildrenAreRecreated(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "phoenix", nil)
	c := waitChildren(t, ns, "phoenix")
	oldToken := string(c.secret.Data["token"])
	for _, o := range c.objects {
		uid := o.GetUID()
		if err := k8s.Delete(bg, o); err != nil {
			t.Fatalf("delete %T: %v", o, err)
		}
		fresh := o.DeepCopyObject().(client.Object)
		eventually(t, fmt.Sprintf("%T %s recreated", o, o.GetName()), func() error {
			if err := k8s.Get(bg, client.ObjectKeyFromObject(o), fresh); err != nil {
				return err
			}
			return want(fresh.GetUID() != uid, "still the old object")
		})
	}
	sec := get(t, ns, "phoenix-token", &corev1.Secret{})
	if string(sec.Data["token"]) == oldToken || len(sec.Data["token"]) != 43 {
		t.Errorf("recreated Secret should hold a new generated token")
	}
}

func TestTokenSecretIsNeverOverwritten(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "keep", nil)
	c := waitChildren(t, ns, "keep")
	// A user rotates the token: the operator leaves it alone.
	c.secret.Data["token"] = []byte("rotated-by-user")
	if err := k8s.Update(bg, &c.secret); err != nil {
		t.Fatal(err)
	}
	// Any change makes the operator reconcile again.
	updateDiskCache(t, ns, "keep", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 2 })
	eventually(t, "reconciled", func() error {
		dc := get(t, ns, "keep", &cachev1alpha1.DiskCache{})
		return want(dc.Status.ObservedGeneration == dc.Generation, "observed %d of %d", dc.Status.ObservedGeneration, dc.Generation)
	})
	if got := string(get(t, ns, "keep-token", &corev1.Secret{}).Data["token"]); got != "rotated-by-user" {
		t.Errorf("token overwritten")
	}
}

func TestUserAuthSecret(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "byo", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Auth.SecretName = "my-token" })
	eventually(t, "Degraded until the Secret exists", func() error {
		dc := get(t, ns, "byo", &cachev1alpha1.DiskCache{})
		return conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionTrue, cachev1alpha1.ReasonAuthSecretInvalid)
	})
	eventually(t, "a Warning event", func() error {
		return findEventNote(t, ns, "byo", cachev1alpha1.ReasonAuthSecretInvalid, "auth Secret my-token not found")
	})
	sts := get(t, ns, "byo", &appsv1.StatefulSet{})
	if !slices.ContainsFunc(sts.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return tokenVolumeIs(v, "my-token") == nil }) {
		t.Errorf("the user's Secret is not mounted")
	}
	if err := k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: "byo-token"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("a token Secret was generated although spec.auth names one: %v", err)
	}
	if err := k8s.Create(bg, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "my-token"}, StringData: map[string]string{"token": "s3cret"}}); err != nil {
		t.Fatal(err)
	}
	// The operator does not watch Secrets it does not own; any event on the
	// DiskCache makes it look again.
	updateDiskCache(t, ns, "byo", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Statistics = true })
	eventually(t, "no longer Degraded", func() error {
		dc := get(t, ns, "byo", &cachev1alpha1.DiskCache{})
		return conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionFalse, "")
	})
	// Another Secret: the pods roll onto it, each accepting only its own
	// Secret's token until then, and a Warning says so.
	if err := k8s.Create(bg, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "my-other-token"}, StringData: map[string]string{"token": "0ther"}}); err != nil {
		t.Fatal(err)
	}
	updateDiskCache(t, ns, "byo", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Auth.SecretName = "my-other-token" })
	eventually(t, "a Warning about the switch", func() error {
		return findEventNote(t, ns, "byo", "TokenSecretChanged", "changed from my-token to my-other-token")
	})
	eventually(t, "the pods mount the other Secret", func() error {
		got := tokenSecretOf(get(t, ns, "byo", &appsv1.StatefulSet{}))
		return want(got == "my-other-token", "the pods mount %q", got)
	})
}

// setSTSStatus plays the StatefulSet controller.
func setSTSStatus(t *testing.T, ns, name string, f func(*appsv1.StatefulSet)) {
	t.Helper()
	eventually(t, "update statefulset status", func() error {
		var sts appsv1.StatefulSet
		if err := k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: name}, &sts); err != nil {
			return err
		}
		f(&sts)
		return k8s.Status().Update(bg, &sts)
	})
}

func TestStatusFollowsStatefulSet(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "st", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 3 })
	waitChildren(t, ns, "st")
	expect := func(what string, shards, ready int32, avail, prog, degr metav1.ConditionStatus, progReason, degrReason string) {
		t.Helper()
		eventually(t, what, func() error {
			dc := get(t, ns, "st", &cachev1alpha1.DiskCache{})
			if dc.Status.Shards != shards || dc.Status.ReadyShards != ready {
				return fmt.Errorf("shards %d ready %d", dc.Status.Shards, dc.Status.ReadyShards)
			}
			return errors.Join(
				conditionIs(dc, cachev1alpha1.ConditionAvailable, avail, ""),
				conditionIs(dc, cachev1alpha1.ConditionProgressing, prog, progReason),
				conditionIs(dc, cachev1alpha1.ConditionDegraded, degr, degrReason))
		})
	}
	expect("creating", 0, 0, metav1.ConditionFalse, metav1.ConditionTrue, metav1.ConditionFalse, cachev1alpha1.ReasonCreating, "")

	setSTSStatus(t, ns, "st", func(s *appsv1.StatefulSet) {
		s.Status = appsv1.StatefulSetStatus{ObservedGeneration: s.Generation, Replicas: 3, ReadyReplicas: 1, AvailableReplicas: 1, UpdatedReplicas: 3,
			CurrentReplicas: 3, CurrentRevision: "st-1", UpdateRevision: "st-1"}
	})
	expect("pods starting", 3, 1, metav1.ConditionFalse, metav1.ConditionTrue, metav1.ConditionFalse, cachev1alpha1.ReasonCreating, "")

	setSTSStatus(t, ns, "st", func(s *appsv1.StatefulSet) {
		s.Status.ReadyReplicas, s.Status.AvailableReplicas = 3, 3
	})
	expect("all ready", 3, 3, metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionFalse, cachev1alpha1.ReasonUpToDate, cachev1alpha1.ReasonAsExpected)

	setSTSStatus(t, ns, "st", func(s *appsv1.StatefulSet) {
		s.Status.ReadyReplicas, s.Status.AvailableReplicas = 2, 2
	})
	expect("a pod fails", 3, 2, metav1.ConditionFalse, metav1.ConditionFalse, metav1.ConditionTrue, cachev1alpha1.ReasonUpToDate, cachev1alpha1.ReasonPodsNotReady)

	// A rollout: a new revision, one pod updated.
	setSTSStatus(t, ns, "st", func(s *appsv1.StatefulSet) {
		s.Status.ReadyReplicas, s.Status.AvailableReplicas = 3, 3
		s.Status.UpdateRevision, s.Status.UpdatedReplicas, s.Status.CurrentReplicas = "st-2", 1, 2
	})
	expect("rolling", 3, 3, metav1.ConditionTrue, metav1.ConditionTrue, metav1.ConditionFalse, cachev1alpha1.ReasonRollingUpdate, "")

	updateDiskCache(t, ns, "st", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 5 })
	eventually(t, "statefulset scaled", func() error {
		sts := get(t, ns, "st", &appsv1.StatefulSet{})
		return want(*sts.Spec.Replicas == 5, "replicas %d", *sts.Spec.Replicas)
	})
	setSTSStatus(t, ns, "st", func(s *appsv1.StatefulSet) {
		s.Status = appsv1.StatefulSetStatus{ObservedGeneration: s.Generation, Replicas: 5, ReadyReplicas: 3, AvailableReplicas: 3, UpdatedReplicas: 5,
			CurrentReplicas: 5, CurrentRevision: "st-2", UpdateRevision: "st-2"}
	})
	expect("scaled, new pods starting", 5, 3, metav1.ConditionFalse, metav1.ConditionTrue, metav1.ConditionFalse, "", "")
	setSTSStatus(t, ns, "st", func(s *appsv1.StatefulSet) { s.Status.ReadyReplicas, s.Status.AvailableReplicas = 5, 5 })
	// Every pod is ready, but the keys have not moved: no pod of this test
	// exists, so the new shards are not ready to take part in a move.
	expect("scaled, keys not moved", 5, 5, metav1.ConditionTrue, metav1.ConditionTrue, metav1.ConditionFalse, cachev1alpha1.ReasonScaling, cachev1alpha1.ReasonAsExpected)
	dc := get(t, ns, "st", &cachev1alpha1.DiskCache{})
	if dc.Status.ObservedGeneration != dc.Generation {
		t.Errorf("observedGeneration %d, generation %d", dc.Status.ObservedGeneration, dc.Generation)
	}
}

func TestScaleSubresource(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	dc := newDiskCache(t, ns, "scaly", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Shards = 2 })
	waitChildren(t, ns, "scaly")
	setSTSStatus(t, ns, "scaly", func(s *appsv1.StatefulSet) {
		s.Status = appsv1.StatefulSetStatus{ObservedGeneration: s.Generation, Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2}
	})
	scale := &autoscalingv1.Scale{}
	eventually(t, "scale reports status", func() error {
		if err := k8s.SubResource("scale").Get(bg, dc, scale); err != nil {
			return err
		}
		return want(scale.Spec.Replicas == 2 && scale.Status.Replicas == 2 &&
			scale.Status.Selector == "app.kubernetes.io/component=cacheserver,app.kubernetes.io/instance=scaly,app.kubernetes.io/name=diskcache",
			"scale %+v", scale)
	})
	// The operator writes status meanwhile: a stale resourceVersion is a
	// conflict to retry, not the answer under test.
	scaleTo := func(n int32) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := k8s.SubResource("scale").Get(bg, dc, scale); err != nil {
				return err
			}
			scale.Spec.Replicas = n
			return k8s.SubResource("scale").Update(bg, dc, client.WithSubResourceBody(scale))
		})
	}
	if err := scaleTo(6); err != nil {
		t.Fatal(err)
	}
	if got := get(t, ns, "scaly", &cachev1alpha1.DiskCache{}); got.Spec.Shards != 6 {
		t.Errorf("spec.shards %d after scaling to 6", got.Spec.Shards)
	}
	eventually(t, "statefulset scaled", func() error {
		sts := get(t, ns, "scaly", &appsv1.StatefulSet{})
		return want(*sts.Spec.Replicas == 6, "replicas %d", *sts.Spec.Replicas)
	})
	err := scaleTo(200)
	if err == nil || !strings.Contains(err.Error(), "spec.shards") {
		t.Errorf("scaling past 128 shards: %v", err)
	}
}

// tokenVolumeIs checks the token volume: the Secret's key token (required)
// and its keys token.next and token.previous when it has them (optional),
// each at the path of its name, nothing else of the Secret.
func tokenVolumeIs(v corev1.Volume, secret string) error {
	p := v.Projected
	if p == nil || len(p.Sources) != 2 {
		return fmt.Errorf("token volume %+v: want a projected volume of two sources", v)
	}
	items := func(src corev1.VolumeProjection) []string {
		var out []string
		for _, it := range src.Secret.Items {
			if it.Key != it.Path {
				out = append(out, it.Key+"->"+it.Path)
				continue
			}
			out = append(out, it.Key)
		}
		return out
	}
	req, opt := p.Sources[0].Secret, p.Sources[1].Secret
	if req == nil || opt == nil || req.Name != secret || opt.Name != secret ||
		(req.Optional != nil && *req.Optional) || opt.Optional == nil || !*opt.Optional ||
		!slices.Equal(items(p.Sources[0]), []string{"token"}) || !slices.Equal(items(p.Sources[1]), []string{"token.next", "token.previous"}) {
		return fmt.Errorf("token volume %+v: want %s's token required, token.next and token.previous optional", v, secret)
	}
	return nil
}
