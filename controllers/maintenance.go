package controllers

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/controllers/maintenance"
)

// reconcileMaintenance runs the maintenance Scheduler for one DiskCache (spec
// defaulted): when a run is due it runs expire and cull on every shard and
// records Events. It returns status.maintenance, when to requeue for the
// next run, a problem for an invalid schedule, and an error when a due run
// could not start (the reconcile is retried with backoff). A run covers
// shards 0 to shards-1 (maintenanceShards).
func (r *DiskCacheReconciler) reconcileMaintenance(ctx context.Context, dc *cachev1alpha1.DiskCache, shards int) (*cachev1alpha1.MaintenanceStatus, time.Duration, *problem, error) {
	if r.Maintenance == nil {
		return dc.Status.Maintenance, 0, nil, nil
	}
	out := r.Maintenance.Reconcile(ctx, maintenance.Request{
		Namespace:    dc.Namespace,
		Name:         dc.Name,
		UID:          string(dc.UID),
		CreationTime: dc.CreationTimestamp.Time,
		Spec:         dc.Spec.Maintenance,
		Shards:       shards,
		Trigger:      dc.Annotations[maintenance.TriggerAnnotation],
		Status:       dc.Status.Maintenance,
		Connect:      func(ctx context.Context) (maintenance.Access, error) { return r.maintenanceAccess(ctx, dc) },
	})
	for _, ev := range out.Events {
		r.event(dc, ev.Type, ev.Reason, ev.Action, "%s", ev.Message)
	}
	var p *problem
	if out.ScheduleErr != nil {
		p = &problem{maintenance.ReasonInvalidSchedule, out.ScheduleErr.Error()}
	}
	return out.Status, out.RequeueAfter, p, out.Err
}

// maintenanceShards is how many shards a maintenance run covers: those of
// the announced layout and, while keys move, of the previous one too (both
// hold keys). spec.shards would count the pods of a scale-up before they
// exist and fail the run on them. Without an announcement (the topology
// could not be read), spec.shards.
func maintenanceShards(dc *cachev1alpha1.DiskCache, topo *topologyOutcome) int {
	if topo == nil || len(topo.announced.Shards) == 0 {
		return int(dc.Spec.Shards)
	}
	n := len(topo.announced.Shards)
	if p := topo.announced.Previous; p != nil {
		n = max(n, len(p.Shards))
	}
	return n
}

// maintenanceAccess reads the token (and TLS trust) for a run; only called
// when a run is due.
func (r *DiskCacheReconciler) maintenanceAccess(ctx context.Context, dc *cachev1alpha1.DiskCache) (maintenance.Access, error) {
	var secret corev1.Secret
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: dc.Namespace, Name: dc.TokenSecretName()}, &secret); err != nil {
		return maintenance.Access{}, fmt.Errorf("maintenance: get auth Secret %s: %w", dc.TokenSecretName(), err)
	}
	var tlsConfig *tls.Config
	if scheme(dc) == "https" {
		var s corev1.Secret
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: dc.Namespace, Name: dc.Spec.TLS.SecretName}, &s); err != nil {
			return maintenance.Access{}, fmt.Errorf("maintenance: get TLS Secret %s: %w", dc.Spec.TLS.SecretName, err)
		}
		tlsConfig = tlsConfigFor(&s)
	}
	address := r.PodAddress
	if address == nil {
		address = DNSPodAddress
	}
	return maintenance.Access{
		Token:      strings.TrimSpace(string(secret.Data[cachev1alpha1.TokenKey])),
		HTTPClient: r.httpClient(tlsConfig),
		Resolve: func(shard int) string {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: dc.Namespace, Name: fmt.Sprintf("%s-%d", stsName(dc), shard)}}
			return address(dc, pod)
		},
	}, nil
}
