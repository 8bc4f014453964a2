// Package controllers holds the DiskCache reconciler and the builders of its
// children.
package controllers

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/controllers/maintenance"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// DiskCacheReconciler turns a DiskCache into its children: a StatefulSet of
// cacheservers, a client Service, a headless peer Service, a ConfigMap, a
// token Secret and a PodDisruptionBudget, and applies live settings to the
// running servers.
type DiskCacheReconciler struct {
	// Client reads through the manager's cache and writes to the API server.
	client.Client
	// APIReader reads Secrets the operator does not own (spec.auth,
	// spec.tls), which the label-filtered cache does not hold.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	// DefaultImage is the cacheserver image when spec.image is empty.
	DefaultImage string
	// DefaultImagePullSecrets are the cache pods' when
	// spec.imagePullSecrets is empty.
	DefaultImagePullSecrets []corev1.LocalObjectReference
	// PodAddress resolves a cache pod to its base URL; nil means
	// DNSPodAddress. Tests point it at cacheserver processes on loopback.
	PodAddress PodAddressFunc
	// SettingsTimeout bounds the settings and topology calls to one pod;
	// 0 means 10s.
	SettingsTimeout time.Duration
	// ClusterDomain is the cluster's DNS domain, in the shard URLs of the
	// topology; empty means cluster.local.
	ClusterDomain string
	// ShardURL returns the URL of a shard in the topology; nil means its
	// DNS name (see shardURL). Tests point it at processes on loopback.
	ShardURL ShardURLFunc
	// Maintenance runs the scheduled expire and cull; nil turns it off.
	Maintenance *maintenance.Scheduler
	// Metrics count the moves of keys between shards; nil records none.
	Metrics *RebalanceMetrics
	// OperatorNamespace and OperatorPodLabels identify the operator's pods
	// in the NetworkPolicies it writes (spec.networkPolicy); an empty
	// namespace leaves the operator out (it then runs outside the
	// cluster), nil labels mean DefaultOperatorPodLabels.
	OperatorNamespace string
	OperatorPodLabels map[string]string
	// ServiceMonitorRecheck is how often a DiskCache that asks for a
	// ServiceMonitor where the API is missing looks for it again; 0 means
	// 5 minutes.
	ServiceMonitorRecheck time.Duration
	// MaxConcurrentReconciles is how many DiskCaches are reconciled at
	// once; 0 means DefaultMaxConcurrentReconciles. A reconcile blocks for
	// its cache's maintenance run, which then holds up only that cache
	// (one DiskCache is never reconciled twice at once).
	MaxConcurrentReconciles int
	// UserSecretPoll is how often a DiskCache with spec.auth.secretName is
	// reconciled to see a rotation in that Secret, which the operator does
	// not watch; 0 means DefaultUserSecretPoll.
	UserSecretPoll time.Duration
	// PodReadyDeadline is how long a cache pod may stay not ready after its
	// creation before the DiskCache is Degraded naming it; 0 means
	// DefaultPodReadyDeadline.
	PodReadyDeadline time.Duration
	// VolumeResizeDeadline is how long a grown claim's volume may stay
	// smaller than its request before the DiskCache is Degraded naming it;
	// 0 means DefaultVolumeResizeDeadline.
	VolumeResizeDeadline time.Duration

	httpOnce  sync.Once
	plainHTTP *http.Client
	// quarantines are the quarantined databases already reported as Events.
	quarantines sync.Map
	// fullPods are the pods whose full volume was reported as an Event
	// (by UID), until they have space again.
	fullPods sync.Map
	// pageSizesKept are the pods (by UID) already reported as running
	// databases with another page size than they were started with.
	pageSizesKept sync.Map
	// failures are the shard failures already raised as Events.
	failures failuresReported
	// memoryWarned are the MemoryLimitTooLow messages already raised.
	memoryWarned memoryWarned
}

// +kubebuilder:rbac:groups=cache.diskcache.dev,resources=diskcaches,verbs=get;list;watch
// +kubebuilder:rbac:groups=cache.diskcache.dev,resources=diskcaches/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=cache.diskcache.dev,resources=diskcaches/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=services;configmaps,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// reportedError is an error already recorded as events and a problem: the
// reconcile is retried with backoff but not reported again.
type reportedError struct{ err error }

func (e *reportedError) Error() string { return e.err.Error() }
func (e *reportedError) Unwrap() error { return e.err }

// problem is a reason the DiskCache is Degraded.
type problem struct {
	reason, message string
}

// Reconcile brings one DiskCache's children to its spec and reports status.
// It is level-based: it reads the world and makes it right, whatever the
// event was, and writes nothing when everything already is.
func (r *DiskCacheReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	var dc cachev1alpha1.DiskCache
	if err := r.Get(ctx, req.NamespacedName, &dc); err != nil {
		if apierrors.IsNotFound(err) {
			if r.Maintenance != nil {
				r.Maintenance.Forget(req.Namespace, req.Name)
			}
			r.Metrics.forget(req.Namespace, req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if dc.DeletionTimestamp != nil {
		return ctrl.Result{}, nil // the garbage collector removes the children
	}
	want := dc.DeepCopy()
	want.Spec.Default()

	sts, topo, problems, err := r.reconcileChildren(ctx, want)
	if err != nil && apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
		// The namespace is going away with the cache in it: nothing to
		// create, report or retry.
		logger.V(1).Info("namespace is terminating; not reconciling", "error", err.Error())
		return ctrl.Result{}, nil
	}
	if sts == nil {
		// Status always describes the StatefulSet as the cache has it,
		// whatever failed or was just written.
		var cur appsv1.StatefulSet
		if gerr := r.Get(ctx, client.ObjectKey{Namespace: dc.Namespace, Name: stsName(&dc)}, &cur); gerr == nil {
			sts = &cur
		}
	}
	var reported *reportedError
	if err != nil && !errors.As(err, &reported) {
		logger.Error(err, "reconcile failed")
		r.event(&dc, corev1.EventTypeWarning, cachev1alpha1.ReasonReconcileFailed, "Reconcile", "%v", err)
		problems = append(problems, problem{cachev1alpha1.ReasonReconcileFailed, err.Error()})
	}
	maint, requeue, mproblem, merr := r.reconcileMaintenance(ctx, want, maintenanceShards(want, topo))
	if mproblem != nil {
		problems = append(problems, *mproblem)
	}
	status := computeStatus(want, &dc.Status, sts, problems, topo)
	status.Maintenance = maint
	status.VolumeResizes = want.Status.VolumeResizes
	if topo != nil && topo.requeue > 0 && (requeue == 0 || topo.requeue < requeue) {
		requeue = topo.requeue
	}
	if topo != nil {
		status.Auth = topo.rotation.status
		if rq := topo.rotation.requeue; rq > 0 && (requeue == 0 || rq < requeue) {
			requeue = rq
		}
	}
	if err == nil {
		status.ObservedGeneration = dc.Generation
	}
	if !equality.Semantic.DeepEqual(dc.Status, *status) {
		dc.Status = *status
		if uerr := r.Status().Update(ctx, &dc); uerr != nil {
			if apierrors.IsConflict(uerr) {
				// The DiskCache changed meanwhile: its watch event brings
				// it back with the newer version.
				return ctrl.Result{}, err
			}
			return ctrl.Result{}, errors.Join(err, fmt.Errorf("update status: %w", uerr))
		}
	}
	if err == nil {
		err = merr
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	// Back for the next maintenance run, or to announce the topology to a
	// pod that missed it; nothing polls in between.
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// reconcileChildren creates or updates every child. Problems that leave the
// cache working but not as specified come back as problems; an error means
// the reconcile must be retried.
func (r *DiskCacheReconciler) reconcileChildren(ctx context.Context, dc *cachev1alpha1.DiskCache) (*appsv1.StatefulSet, *topologyOutcome, []problem, error) {
	var problems []problem

	token, secret, p, err := r.reconcileToken(ctx, dc)
	if err != nil {
		return nil, nil, nil, err
	}
	if p != nil {
		r.event(dc, corev1.EventTypeWarning, p.reason, "Reconcile", "%s", p.message)
		problems = append(problems, *p)
	}
	var tlsConfig *tls.Config
	peerCA := false // the TLS Secret has a ca.crt the shards verify each other with
	if scheme(dc) == "https" {
		var s corev1.Secret
		err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: dc.Namespace, Name: dc.Spec.TLS.SecretName}, &s)
		switch {
		case apierrors.IsNotFound(err):
			problems = append(problems, problem{cachev1alpha1.ReasonTLSSecretInvalid, fmt.Sprintf("TLS Secret %s not found", dc.Spec.TLS.SecretName)})
			r.event(dc, corev1.EventTypeWarning, cachev1alpha1.ReasonTLSSecretInvalid, "Reconcile", "TLS Secret %s not found", dc.Spec.TLS.SecretName)
		case err != nil:
			return nil, nil, nil, fmt.Errorf("get TLS Secret: %w", err)
		default:
			if msg := tlsSecretProblem(&s); msg != "" {
				problems = append(problems, problem{cachev1alpha1.ReasonTLSSecretInvalid, msg})
				r.event(dc, corev1.EventTypeWarning, cachev1alpha1.ReasonTLSSecretInvalid, "Reconcile", "%s", msg)
				break
			}
			tlsConfig = tlsConfigFor(&s)
			peerCA = len(s.Data[caKey]) > 0
		}
	}

	// The topology and the ConfigMap first: the StatefulSet's pods read
	// them at start-up.
	topo, err := r.reconcileTopology(ctx, dc, tlsConfig)
	if err != nil {
		return nil, nil, nil, err
	}
	r.reportQuarantines(dc, topo)
	r.reportPageSizesKept(dc, topo)
	if topo.rotation, err = r.reconcileRotation(ctx, dc, secret, topo); err != nil {
		return nil, nil, nil, err
	}
	if topo.rotation.token != "" {
		token = topo.rotation.token
	}
	_, restartPart := serverConfig(dc)
	configHash := hash(restartPart)
	if err := r.applyChild(ctx, dc, buildConfigMap(dc), &corev1.ConfigMap{}); err != nil {
		return nil, nil, nil, err
	}
	if err := r.applyChild(ctx, dc, buildClientService(dc), &corev1.Service{}); err != nil {
		return nil, nil, nil, err
	}
	if err := r.applyChild(ctx, dc, buildPeerService(dc), &corev1.Service{}); err != nil {
		return nil, nil, nil, err
	}

	existing, err := getExisting(ctx, r.Client, dc, stsName(dc), &appsv1.StatefulSet{})
	if err != nil {
		return nil, nil, nil, err
	}
	var claims []corev1.PersistentVolumeClaim
	image := dc.Spec.Image
	if image == "" {
		image = r.DefaultImage
	}
	if len(dc.Spec.ImagePullSecrets) == 0 {
		dc.Spec.ImagePullSecrets = r.DefaultImagePullSecrets // dc is the reconcile's defaulted copy
	}
	if existing != nil && scheme(dc) == "https" && tlsConfig == nil {
		// The TLS Secret cannot be read now: keep what the pods run with
		// rather than roll them.
		peerCA = slices.Contains(existing.Spec.Template.Spec.Containers[0].Args, settings.FlagPeerCAFile.Arg())
	}
	if existing != nil {
		if old := tokenSecretOf(existing); old != "" && old != dc.TokenSecretName() {
			r.event(dc, corev1.EventTypeWarning, "TokenSecretChanged", "Update",
				"the token Secret changed from %s to %s: the shards roll one at a time and until then each accepts only its own Secret's token, so clients get 401 from some shards; to change the token without that, rotate it (token.next in %s and the %s annotation; docs/operations.md, Token rotation)",
				old, dc.TokenSecretName(), old, cachev1alpha1.RotateTokenAnnotation)
		}
		claims = existing.Spec.VolumeClaimTemplates
		var changed []string
		if old := existing.Spec.Template.Annotations[ConfigHashAnno]; old != "" && old != configHash {
			changed = append(changed, "start-up settings changed")
		}
		if cs := existing.Spec.Template.Spec.Containers; len(cs) > 0 && cs[0].Image != image {
			changed = append(changed, fmt.Sprintf("the image changed from %s to %s", cs[0].Image, image))
		}
		if len(changed) > 0 {
			r.event(dc, corev1.EventTypeNormal, "RollingUpdate", "Update",
				"%s: rolling the %d shards one at a time", strings.Join(changed, "; "), dc.Spec.Shards)
		}
	}
	desired := buildStatefulSet(dc, image, configHash, peerCA, claims)
	// The orchestration of a change of the shard count decides the size:
	// grown before the new shards are announced, shrunk only once the
	// departing ones have handed everything off.
	desired.Spec.Replicas = ptr.To(topo.replicas)
	// From the StatefulSet on, a child the API server refuses (a pod
	// template or a networkPolicy.clients entry it finds invalid) or cannot
	// take now does not stop the steps after it: the claims' resizes, the
	// live settings and the checks of the running shards go on, and the
	// reconcile ends failed (retried, ReconcileFailed naming the child).
	var childErrs []error
	if res, err := r.apply(ctx, dc, desired, objOrNil(existing)); err != nil {
		childErrs = append(childErrs, fmt.Errorf("StatefulSet: %w", err))
	} else {
		r.recordApply(dc, res, desired, "StatefulSet")
	}
	sts := existing
	if err := r.applyChild(ctx, dc, buildPDB(dc), &policyv1.PodDisruptionBudget{}); err != nil {
		childErrs = append(childErrs, fmt.Errorf("PodDisruptionBudget: %w", err))
	}
	if err := r.reconcileNetworkPolicy(ctx, dc); err != nil {
		childErrs = append(childErrs, fmt.Errorf("NetworkPolicy: %w", err))
	}
	waiting, p, err := r.reconcileServiceMonitor(ctx, dc, peerCA)
	if err != nil {
		return nil, nil, nil, err
	}
	if p != nil {
		problems = append(problems, *p)
	}
	if recheck := r.serviceMonitorRecheck(); waiting && (topo.requeue == 0 || topo.requeue > recheck) {
		// Nothing is watched that would tell when the API appears.
		topo.requeue = recheck
	}

	resizeProblems, resizes, resizeRecheck := r.resizeClaims(ctx, dc)
	problems = append(problems, resizeProblems...)
	// dc is the reconcile's copy: Reconcile takes status.volumeResizes
	// from it (the last known ones when the reconcile failed before here).
	dc.Status.VolumeResizes = resizes
	if resizeRecheck > 0 && (topo.requeue == 0 || topo.requeue > resizeRecheck) {
		// Claims are not watched: look at a pending resize again.
		topo.requeue = resizeRecheck
	}

	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(dc.Namespace), client.MatchingLabels(selectorLabels(dc))); err != nil {
		return nil, nil, nil, fmt.Errorf("list pods: %w", err)
	}
	if p := memoryProblem(dc); p != nil {
		if r.memoryWarned.fresh(dc.UID, p) {
			r.event(dc, corev1.EventTypeWarning, p.reason, "Reconcile", "%s", p.message)
		}
		problems = append(problems, *p)
	} else {
		r.memoryWarned.fresh(dc.UID, nil)
	}
	failures, recheck := failingShards(pods.Items, time.Now())
	for _, f := range r.failures.fresh(dc.UID, failures) {
		r.eventRelated(dc, f.pod, corev1.EventTypeWarning, f.reason, "Start", "%s", f.note)
	}
	for _, f := range failures {
		problems = append(problems, problem{f.reason, f.note})
	}
	if recheck > 0 && (topo.requeue == 0 || topo.requeue > recheck) {
		// Back when a shard's OOM kill stops being reported.
		topo.requeue = recheck
	}

	var settingsErr error
	if token != "" {
		results, err := r.applySettings(ctx, dc, token, tlsConfig)
		for _, res := range results {
			switch {
			case res.err != nil:
				r.eventRelated(dc, res.obj, corev1.EventTypeWarning, cachev1alpha1.ReasonSettingsNotApplied, "UpdateSettings",
					"pod %s: %v", res.pod, res.err)
			case len(res.changed) > 0:
				r.eventRelated(dc, res.obj, corev1.EventTypeNormal, "SettingsApplied", "UpdateSettings",
					"pod %s: applied %s", res.pod, settings.JoinNames(res.changed))
			}
		}
		if err != nil {
			problems = append(problems, problem{cachev1alpha1.ReasonSettingsNotApplied, err.Error()})
			// Already in the events and the Degraded condition: only retry.
			settingsErr = &reportedError{fmt.Errorf("apply live settings: %w", err)}
		}
	}
	problems = append(problems, topo.problems...)
	if len(childErrs) > 0 {
		// Not joined with settingsErr: that one is reported already,
		// these are not.
		return sts, topo, problems, errors.Join(childErrs...)
	}
	return sts, topo, problems, settingsErr
}

func objOrNil(sts *appsv1.StatefulSet) client.Object {
	if sts == nil {
		return nil
	}
	return sts
}

// applyChild applies desired, reading the existing object into into.
func (r *DiskCacheReconciler) applyChild(ctx context.Context, dc *cachev1alpha1.DiskCache, desired, into client.Object) error {
	existing, err := getExisting(ctx, r.Client, dc, desired.GetName(), into)
	if err != nil {
		return err
	}
	var cur client.Object
	if existing != nil {
		cur = existing
	}
	res, err := r.apply(ctx, dc, desired, cur)
	if err != nil {
		return err
	}
	gvk, _ := r.GroupVersionKindFor(desired)
	r.recordApply(dc, res, desired, gvk.Kind)
	return nil
}

func (r *DiskCacheReconciler) recordApply(dc *cachev1alpha1.DiskCache, res applyResult, child client.Object, kind string) {
	switch res {
	case created:
		r.eventRelated(dc, child, corev1.EventTypeNormal, "Created", "Create", "created %s %s", kind, child.GetName())
	case updated:
		r.eventRelated(dc, child, corev1.EventTypeNormal, "Updated", "Update", "updated %s %s", kind, child.GetName())
	}
}

// reconcileToken makes sure the auth Secret exists and returns the token.
// The generated Secret is created once and never written again, so users
// rotate the token by editing it; a Secret named in spec.auth is only read.
func (r *DiskCacheReconciler) reconcileToken(ctx context.Context, dc *cachev1alpha1.DiskCache) (string, *corev1.Secret, *problem, error) {
	name := dc.TokenSecretName()
	var secret corev1.Secret
	var err error
	if dc.Spec.Auth.SecretName != "" {
		err = r.APIReader.Get(ctx, client.ObjectKey{Namespace: dc.Namespace, Name: name}, &secret)
	} else {
		err = r.Get(ctx, client.ObjectKey{Namespace: dc.Namespace, Name: name}, &secret)
		if apierrors.IsNotFound(err) {
			// Not in the cache: it does not exist, or lost our labels.
			err = r.APIReader.Get(ctx, client.ObjectKey{Namespace: dc.Namespace, Name: name}, &secret)
		}
		if apierrors.IsNotFound(err) {
			s, berr := buildTokenSecret(dc)
			if berr != nil {
				return "", nil, nil, berr
			}
			if berr := controllerutil.SetControllerReference(dc, s, r.Scheme); berr != nil {
				return "", nil, nil, berr
			}
			err = r.Create(ctx, s, client.FieldOwner(ManagerName))
			switch {
			case err == nil:
				r.eventRelated(dc, s, corev1.EventTypeNormal, "Created", "Create", "created Secret %s with a generated token", name)
				secret = *s
			case apierrors.IsAlreadyExists(err):
				err = r.APIReader.Get(ctx, client.ObjectKey{Namespace: dc.Namespace, Name: name}, &secret)
			}
		}
	}
	if apierrors.IsNotFound(err) {
		return "", nil, &problem{cachev1alpha1.ReasonAuthSecretInvalid, fmt.Sprintf("auth Secret %s not found", name)}, nil
	}
	if err != nil {
		return "", nil, nil, fmt.Errorf("get auth Secret %s: %w", name, err)
	}
	token := strings.TrimSpace(string(secret.Data[cachev1alpha1.TokenKey]))
	if token == "" {
		return "", nil, &problem{cachev1alpha1.ReasonAuthSecretInvalid, fmt.Sprintf("auth Secret %s has no %q key", name, cachev1alpha1.TokenKey)}, nil
	}
	return token, &secret, nil, nil
}

// resizeClaims grows the data claims of existing shards to storage.size
// (volumeClaimTemplates are immutable, so the claims are patched directly),
// and reports the claims whose volume has not grown yet: in
// status.volumeResizes, and as a problem once the resize failed or is
// still pending VolumeResizeDeadline after the request. recheck is when to
// look again while a resize is pending (0: none is).
func (r *DiskCacheReconciler) resizeClaims(ctx context.Context, dc *cachev1alpha1.DiskCache) (problems []problem, pending []cachev1alpha1.VolumeResizeStatus, recheck time.Duration) {
	var claims corev1.PersistentVolumeClaimList
	if err := r.List(ctx, &claims, client.InNamespace(dc.Namespace), client.MatchingLabels(selectorLabels(dc))); err != nil {
		return []problem{{cachev1alpha1.ReasonVolumeResizeFailed, fmt.Sprintf("list claims: %v", err)}}, dc.Status.VolumeResizes, 0
	}
	deadline := r.VolumeResizeDeadline
	if deadline <= 0 {
		deadline = DefaultVolumeResizeDeadline
	}
	want := *dc.Spec.Storage.Size
	now := time.Now()
	for i := range claims.Items {
		pvc := &claims.Items[i]
		if !strings.HasPrefix(pvc.Name, DataVolume+"-"+stsName(dc)+"-") || pvc.DeletionTimestamp != nil {
			continue
		}
		cur := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
		grow := cur.Cmp(want) < 0
		since := resizeRequestTime(pvc)
		// A claim grown by an operator without the annotation gets it, for
		// the deadline of the resize.
		if pending, _ := pendingResize(pvc, now, now, deadline); grow || (pending != nil && since.IsZero()) {
			patch := client.MergeFrom(pvc.DeepCopy())
			if grow {
				if pvc.Spec.Resources.Requests == nil {
					pvc.Spec.Resources.Requests = corev1.ResourceList{}
				}
				pvc.Spec.Resources.Requests[corev1.ResourceStorage] = want
			}
			metav1.SetMetaDataAnnotation(&pvc.ObjectMeta, cachev1alpha1.ResizeRequestedAnnotation, now.UTC().Format(time.RFC3339))
			if err := r.Patch(ctx, pvc, patch, client.FieldOwner(ManagerName)); err != nil {
				if grow {
					r.event(dc, corev1.EventTypeWarning, cachev1alpha1.ReasonVolumeResizeFailed, "Resize",
						"grow PersistentVolumeClaim %s from %s to %s: %v", pvc.Name, cur.String(), want.String(), err)
				}
				problems = append(problems, problem{cachev1alpha1.ReasonVolumeResizeFailed,
					fmt.Sprintf("PersistentVolumeClaim %s: %v", pvc.Name, err)})
				continue
			}
			if grow {
				r.event(dc, corev1.EventTypeNormal, "VolumeResizing", "Resize",
					"growing PersistentVolumeClaim %s from %s to %s", pvc.Name, cur.String(), want.String())
			}
			since = resizeRequestTime(pvc)
		}
		st, p := pendingResize(pvc, since, now, deadline)
		if st == nil {
			continue
		}
		pending = append(pending, *st)
		if p != nil {
			problems = append(problems, *p)
		}
		next := volumeResizeRecheck
		if left := since.Add(deadline).Sub(now); left > 0 && left < next {
			next = left
		}
		if recheck == 0 || next < recheck {
			recheck = next
		}
	}
	return problems, pending, recheck
}

// event records an Event on the DiskCache (never with the token in it).
func (r *DiskCacheReconciler) event(dc *cachev1alpha1.DiskCache, eventType, reason, action, note string, args ...any) {
	r.eventRelated(dc, nil, eventType, reason, action, note, args...)
}

// eventRelated records an Event on the DiskCache about one of its children
// or pods. The events API merges events of one object, reason and action
// into a series keeping the first note, so the related object keeps events
// about different children apart.
func (r *DiskCacheReconciler) eventRelated(dc *cachev1alpha1.DiskCache, related client.Object, eventType, reason, action, note string, args ...any) {
	if r.Recorder == nil {
		return
	}
	var rel runtime.Object
	if related != nil {
		if gvk, err := r.GroupVersionKindFor(related); err == nil {
			related.GetObjectKind().SetGroupVersionKind(gvk)
		}
		rel = related
	}
	r.Recorder.Eventf(dc, rel, eventType, reason, action, note, args...)
}

// DefaultMaxConcurrentReconciles is DiskCacheReconciler.MaxConcurrentReconciles
// when unset: a few caches whose shards are slow to answer a maintenance
// run do not hold up the others.
const DefaultMaxConcurrentReconciles = 4

// SetupWithManager registers the controller and its watches: the DiskCache,
// every owned child, and the cache pods (readiness changes re-apply live
// settings to a pod that came back).
func (r *DiskCacheReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	workers := r.MaxConcurrentReconciles
	if workers <= 0 {
		workers = DefaultMaxConcurrentReconciles
	}
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		For(&cachev1alpha1.DiskCache{}, builder.WithPredicates(notAutoscalerReadings())).
		Owns(&appsv1.StatefulSet{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Secret{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(podToDiskCache)).
		Named("diskcache").
		Complete(r)
}

// podToDiskCache maps a cache pod to its DiskCache by its labels.
func podToDiskCache(_ context.Context, obj client.Object) []reconcile.Request {
	l := obj.GetLabels()
	if l[LabelManagedBy] != ManagerName || l[LabelName] != AppName || l[LabelInstance] == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: l[LabelInstance]}}}
}
