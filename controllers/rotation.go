package controllers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
)

// Token rotation. The auth Secret carries the token clients send ("token")
// and, during a rotation, the token coming in ("token.next") and the one
// going out ("token.previous"); the servers mount all three and accept any.
// The operator drives a rotation of the Secret it generated in three steps,
// each level-based on what the Secret holds:
//
//  1. the rotate-token annotation changed: a new token goes into token.next;
//  2. every shard reports (GET /v1/config, fingerprints) that it accepts
//     token.next: it becomes token, the old one token.previous;
//  3. the grace period after step 2 has passed: token.previous goes.
//
// Clients that read the Secret get the new token only in step 2, when
// every shard already accepts it, and may keep sending the old one until
// step 3; a shard forwarding a request passes on a token its peers accept.
const (
	// rotationTriggerAnnotation on the Secret is the rotate-token value the
	// rotation it holds answered (so one value starts one rotation).
	rotationTriggerAnnotation = "cache.diskcache.dev/rotation-trigger"
	// switchedAtAnnotation on the Secret is when step 2 made the new token
	// current (RFC 3339); the old one is retired a grace period later.
	switchedAtAnnotation = "cache.diskcache.dev/token-switched-at"
	// rotatedAtAnnotation on the Secret is when step 3 retired the old
	// token (RFC 3339): status.auth.lastRotationTime, kept with the Secret
	// it describes so that a status write lost after the Secret's (a
	// failed reconcile) does not lose it.
	rotatedAtAnnotation = "cache.diskcache.dev/token-rotated-at"
	// rotationPoll is how often the operator looks again at the shards while
	// it waits for them to accept the new token (the kubelet updating the
	// mounted Secret sends no event).
	rotationPoll = 5 * time.Second
)

// kubeletSecretSync is about how long the kubelet takes to update a
// mounted Secret (its sync period plus its cache's TTL).
const kubeletSecretSync = time.Minute

// DefaultUserSecretPoll is DiskCacheReconciler.UserSecretPoll when unset:
// about the kubelet's own delay in updating a mounted Secret.
const DefaultUserSecretPoll = time.Minute

// rotationOutcome is what reconcileRotation leaves for the status.
type rotationOutcome struct {
	status  *cachev1alpha1.AuthStatus
	token   string // the token clients send after this reconcile
	requeue time.Duration
}

// reconcileRotation moves a token rotation one step on (see above) and
// reports it. secret is the auth Secret as reconcileToken read it; topo
// holds what the ready shards said.
func (r *DiskCacheReconciler) reconcileRotation(ctx context.Context, dc *cachev1alpha1.DiskCache, secret *corev1.Secret, topo *topologyOutcome) (rotationOutcome, error) {
	out, err := r.rotationStep(ctx, dc, secret, topo)
	if apierrors.IsConflict(err) {
		// The Secret was read from a cache that had not seen our last
		// write yet: its watch event brings the reconcile back.
		log.FromContext(ctx).V(1).Info("token Secret changed meanwhile; rotation step retried", "error", err.Error())
		if dc.Status.Auth != nil {
			out.status = dc.Status.Auth.DeepCopy()
		}
		return rotationOutcome{status: out.status, token: out.token, requeue: time.Second}, nil
	}
	return out, err
}

func (r *DiskCacheReconciler) rotationStep(ctx context.Context, dc *cachev1alpha1.DiskCache, secret *corev1.Secret, topo *topologyOutcome) (rotationOutcome, error) {
	st := &cachev1alpha1.AuthStatus{}
	if dc.Status.Auth != nil {
		st.LastRotationTime, st.LastTrigger = dc.Status.Auth.LastRotationTime, dc.Status.Auth.LastTrigger
	}
	out := rotationOutcome{status: st}
	if secret == nil {
		out.status = nonZero(st)
		return out, nil
	}
	key := func(k string) string { return strings.TrimSpace(string(secret.Data[k])) }
	cur, next, prev := key(cachev1alpha1.TokenKey), key(cachev1alpha1.TokenNextKey), key(cachev1alpha1.TokenPreviousKey)
	out.token = cur
	owned := dc.Spec.Auth.SecretName == ""
	trigger := dc.Annotations[cachev1alpha1.RotateTokenAnnotation]
	grace := dc.Spec.Auth.RotationGracePeriod.Duration
	now := time.Now()

	rotating := next != "" && next != cur || prev != "" || trigger != "" && trigger != secret.Annotations[rotationTriggerAnnotation]
	if owned && rotating && grace < kubeletSecretSync {
		// Before the step: the step that retires the old token ends the
		// rotation.
		r.event(dc, corev1.EventTypeWarning, cachev1alpha1.ReasonRotationGracePeriodShort, "RotateToken",
			"spec.auth.rotationGracePeriod %s is shorter than the kubelet takes to update a mounted Secret (about %s): clients that read the token from one may be refused once the old token is retired",
			grace, kubeletSecretSync)
	}
	switch {
	case next != "" && next != cur:
		st.Rotation = cachev1alpha1.RotationPropagating
		n, waiting := acceptingShards(dc, topo, next)
		st.ShardsAcceptingNext, st.WaitingFor = n, waiting
		if !owned || len(waiting) > 0 {
			out.requeue = rotationPoll
			break
		}
		// Every shard accepts the new token: clients may have it.
		s := secret.DeepCopy()
		s.Data[cachev1alpha1.TokenKey] = []byte(next)
		s.Data[cachev1alpha1.TokenPreviousKey] = []byte(cur)
		delete(s.Data, cachev1alpha1.TokenNextKey)
		setAnnotation(s, switchedAtAnnotation, now.UTC().Format(time.RFC3339))
		if err := r.Update(ctx, s, client.FieldOwner(ManagerName)); err != nil {
			return out, fmt.Errorf("make the new token current in Secret %s: %w", s.Name, err)
		}
		r.eventRelated(dc, s, corev1.EventTypeNormal, cachev1alpha1.ReasonTokenSwitched, "RotateToken",
			"all %d shards accept the new token: it is now the token in Secret %s; the old one is accepted until %s",
			n, s.Name, now.Add(grace).UTC().Format(time.RFC3339))
		st.Rotation, st.ShardsAcceptingNext = cachev1alpha1.RotationRetiring, 0
		st.RetireTime = &metav1.Time{Time: now.Add(grace)}
		out.token, out.requeue = next, grace
	case prev != "":
		st.Rotation = cachev1alpha1.RotationRetiring
		if !owned {
			break
		}
		switched, err := time.Parse(time.RFC3339, secret.Annotations[switchedAtAnnotation])
		if err != nil {
			switched = now // put there by hand: the grace period starts now
			s := secret.DeepCopy()
			setAnnotation(s, switchedAtAnnotation, now.UTC().Format(time.RFC3339))
			if err := r.Update(ctx, s, client.FieldOwner(ManagerName)); err != nil {
				return out, fmt.Errorf("note the token switch in Secret %s: %w", s.Name, err)
			}
		}
		retire := switched.Add(grace)
		if now.Before(retire) {
			st.RetireTime = &metav1.Time{Time: retire}
			out.requeue = retire.Sub(now)
			break
		}
		s := secret.DeepCopy()
		delete(s.Data, cachev1alpha1.TokenPreviousKey)
		delete(s.Annotations, switchedAtAnnotation)
		setAnnotation(s, rotatedAtAnnotation, now.UTC().Format(time.RFC3339))
		if err := r.Update(ctx, s, client.FieldOwner(ManagerName)); err != nil {
			return out, fmt.Errorf("retire the old token in Secret %s: %w", s.Name, err)
		}
		r.eventRelated(dc, s, corev1.EventTypeNormal, cachev1alpha1.ReasonTokenRotated, "RotateToken",
			"the old token is no longer accepted: rotation of Secret %s done", s.Name)
		st.Rotation = ""
		secret = s
	case owned && trigger != "" && trigger != secret.Annotations[rotationTriggerAnnotation]:
		tok, err := newToken()
		if err != nil {
			return out, err
		}
		s := secret.DeepCopy()
		s.Data[cachev1alpha1.TokenNextKey] = []byte(tok)
		setAnnotation(s, rotationTriggerAnnotation, trigger)
		if err := r.Update(ctx, s, client.FieldOwner(ManagerName)); err != nil {
			return out, fmt.Errorf("add the next token to Secret %s: %w", s.Name, err)
		}
		r.eventRelated(dc, s, corev1.EventTypeNormal, cachev1alpha1.ReasonTokenRotationStarted, "RotateToken",
			"rotating the token: a new one is in Secret %s as %s; it becomes current once all %d shards accept it",
			s.Name, cachev1alpha1.TokenNextKey, dc.Spec.Shards)
		st.Rotation = cachev1alpha1.RotationPropagating
		secret = s
		out.requeue = rotationPoll
	}
	if owned && st.Rotation != "" && trigger != "" && trigger != secret.Annotations[rotationTriggerAnnotation] {
		r.event(dc, corev1.EventTypeNormal, cachev1alpha1.ReasonTokenRotationQueued, "RotateToken",
			"rotate-token %q asks for another rotation while one is under way (%s): it starts when this one ends", trigger, st.Rotation)
	}
	switch {
	case owned:
		if v := secret.Annotations[rotationTriggerAnnotation]; v != "" {
			st.LastTrigger = v
		}
		if t, err := time.Parse(time.RFC3339, secret.Annotations[rotatedAtAnnotation]); err == nil {
			st.LastRotationTime = &metav1.Time{Time: t}
		}
	case trigger != "" && trigger != st.LastTrigger:
		r.event(dc, corev1.EventTypeWarning, cachev1alpha1.ReasonTokenRotationManual, "RotateToken",
			"spec.auth.secretName names a Secret the operator does not write: put the new token in its %s, wait until status.auth.shardsAcceptingNext equals the shards, then move it to %s and the old one to %s",
			cachev1alpha1.TokenNextKey, cachev1alpha1.TokenKey, cachev1alpha1.TokenPreviousKey)
		st.LastTrigger = trigger
	}
	if st.Rotation == "" {
		if refusing := refusingPods(topo, out.token); len(refusing) > 0 {
			// Changed in place (no token.next first), or a pod the
			// kubelet has not updated yet: clients with the Secret's
			// token get 401 there.
			r.event(dc, corev1.EventTypeWarning, cachev1alpha1.ReasonTokenNotAccepted, "RotateToken",
				"pods %s do not accept the token in Secret %s (yet): a token changed without %s first is refused by each pod until the kubelet updates it, about a minute; see docs/operations.md, Token rotation",
				strings.Join(refusing, ", "), secret.Name, cachev1alpha1.TokenNextKey)
		}
	}
	if !owned && out.requeue == 0 {
		// The operator does not watch Secrets it does not own: look at
		// this one again, so that a token.next the user adds shows in
		// status.auth.
		out.requeue = r.userSecretPoll()
	}
	out.status = nonZero(st)
	return out, nil
}

// userSecretPoll is how often a DiskCache whose auth Secret is the user's
// (spec.auth.secretName) is reconciled to notice a rotation in it.
func (r *DiskCacheReconciler) userSecretPoll() time.Duration {
	if r.UserSecretPoll > 0 {
		return r.UserSecretPoll
	}
	return DefaultUserSecretPoll
}

// acceptingShards counts the ready shards that report they accept tok, and
// names the pods the rotation waits for: every ready pod that answered
// without tok among its fingerprints, and the pods of spec.shards' shards
// that did not answer with it. None: all accept it.
func acceptingShards(dc *cachev1alpha1.DiskCache, topo *topologyOutcome, tok string) (int32, []string) {
	have := map[int]bool{}
	var waiting []string
	if topo != nil {
		fp := wire.TokenFingerprint(tok)
		for _, rep := range topo.reports {
			if rep.config == nil || !slices.Contains(rep.config.TokenFingerprints, fp) {
				// A pod that serves (a shard being drained too) and
				// refuses the token would refuse clients that have it.
				waiting = append(waiting, rep.pod.Name)
				continue
			}
			if i, ok := podOrdinal(dc, rep.pod); ok {
				have[i] = true
			}
		}
	}
	for i := 0; i < int(dc.Spec.Shards); i++ {
		if pod := fmt.Sprintf("%s-%d", stsName(dc), i); !have[i] && !slices.Contains(waiting, pod) {
			waiting = append(waiting, pod)
		}
	}
	slices.Sort(waiting)
	return int32(len(have)), waiting
}

// refusingPods names the ready pods that answered with their accepted
// token fingerprints and tok is not among them.
func refusingPods(topo *topologyOutcome, tok string) []string {
	if topo == nil || tok == "" {
		return nil
	}
	fp := wire.TokenFingerprint(tok)
	var out []string
	for _, rep := range topo.reports {
		if rep.config != nil && !slices.Contains(rep.config.TokenFingerprints, fp) {
			out = append(out, rep.pod.Name)
		}
	}
	return out
}

// newToken is a fresh 32-byte random token, unpadded base64url.
func newToken() (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func setAnnotation(obj client.Object, k, v string) {
	a := obj.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[k] = v
	obj.SetAnnotations(a)
}

// reportPageSizesKept raises a Normal Event, once per pod and operator
// process, for a shard whose fanout databases keep another page size than
// the one it runs with (GET /v1/config): SQLite cannot change the page size
// of a database in WAL mode, so spec.pageSize only reaches databases
// created after it, and a volume from before keeps its own.
func (r *DiskCacheReconciler) reportPageSizesKept(dc *cachev1alpha1.DiskCache, topo *topologyOutcome) {
	for _, rep := range topo.reports {
		if rep.config == nil || rep.config.PageSize == 0 {
			continue
		}
		kept := map[int64]int{}
		for _, size := range rep.config.DatabasePageSizes {
			if size != int64(rep.config.PageSize) {
				kept[size]++
			}
		}
		if len(kept) == 0 {
			continue
		}
		if _, seen := r.pageSizesKept.LoadOrStore(rep.pod.UID, true); seen {
			continue
		}
		var parts []string
		for _, size := range slices.Sorted(maps.Keys(kept)) {
			parts = append(parts, fmt.Sprintf("%d with pages of %d bytes", kept[size], size))
		}
		r.eventRelated(dc, rep.pod, corev1.EventTypeNormal, cachev1alpha1.ReasonPageSizeKept, "Start",
			"pod %s: of its %d fanout databases, %s keep the page size they were created with; "+
				"pages of %d bytes (spec.pageSize) go to databases created from now on",
			rep.pod.Name, len(rep.config.DatabasePageSizes), strings.Join(parts, " and "), rep.config.PageSize)
	}
}

// nonZero is st, or nil when it says nothing.
func nonZero(st *cachev1alpha1.AuthStatus) *cachev1alpha1.AuthStatus {
	if reflect.ValueOf(*st).IsZero() {
		return nil
	}
	return st
}

// reportQuarantines raises a Warning Event for each fanout database a
// shard says (GET /v1/config, read with the topology) it found damaged at
// start and set aside. Each is reported once per operator process: the
// pod's UID and the place it was moved to name it.
func (r *DiskCacheReconciler) reportQuarantines(dc *cachev1alpha1.DiskCache, topo *topologyOutcome) {
	for _, rep := range topo.reports {
		if rep.config == nil {
			continue
		}
		for _, q := range rep.config.Quarantined {
			if _, seen := r.quarantines.LoadOrStore(string(rep.pod.UID)+"\x00"+q.MovedTo, true); seen {
				continue
			}
			r.eventRelated(dc, rep.pod, corev1.EventTypeWarning, cachev1alpha1.ReasonDatabaseQuarantined, "Start",
				"pod %s found fanout database %d damaged at start (%s): moved it to %s and started it empty; its items are lost",
				rep.pod.Name, q.Database, q.Error, q.MovedTo)
		}
	}
}
