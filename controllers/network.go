package controllers

import (
	"context"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=monitoring.coreos.com,resources=servicemonitors,verbs=get;create;patch;delete

// ComponentNetworkPolicy and ComponentMonitoring label the NetworkPolicy and
// the ServiceMonitor.
const (
	ComponentNetworkPolicy = "network-policy"
	ComponentMonitoring    = "monitoring"
)

// DefaultOperatorPodLabels are the labels of the operator's pods in
// config/manager and the Helm chart.
var DefaultOperatorPodLabels = map[string]string{"app.kubernetes.io/name": "diskcache-operator", "control-plane": "controller-manager"}

// ServiceMonitorGVK is prometheus-operator's ServiceMonitor, handled as an
// unstructured object so the operator needs no prometheus-operator module
// and runs where that API does not exist.
var ServiceMonitorGVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}

func networkPolicyName(dc *cachev1alpha1.DiskCache) string  { return dc.Name }
func serviceMonitorName(dc *cachev1alpha1.DiskCache) string { return dc.Name }

func tokenSecretName(dc *cachev1alpha1.DiskCache) string {
	if dc.Spec.Auth.SecretName != "" {
		return dc.Spec.Auth.SecretName
	}
	return generatedSecretName(dc)
}

// buildNetworkPolicy admits to the cache pods' ports (data and health)
// only the clients of spec.networkPolicy, the cache's own pods
// (forwarding, data movement) and, when its namespace is known, the
// operator's pods (settings, topology, maintenance): the peers that could
// reach /metrics on the data port before the health port existed reach it
// there too. The kubelet's probes come from the node, which network
// plugins exempt. Other ports of the pods stay closed: the server listens
// on these two.
func buildNetworkPolicy(dc *cachev1alpha1.DiskCache, operatorNamespace string, operatorPodLabels map[string]string) *networkingv1.NetworkPolicy {
	from := []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: selectorLabels(dc)}}}
	if operatorNamespace != "" {
		from = append(from, networkingv1.NetworkPolicyPeer{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: operatorNamespace}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: maps.Clone(operatorPodLabels)},
		})
	}
	from = append(from, dc.Spec.NetworkPolicy.Clients...)
	port, healthPort := intstr.FromInt32(Port), intstr.FromInt32(HealthPort)
	tcp := corev1.ProtocolTCP
	return &networkingv1.NetworkPolicy{
		ObjectMeta: objectMeta(dc, networkPolicyName(dc), ComponentNetworkPolicy),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: selectorLabels(dc)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  from,
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}, {Protocol: &tcp, Port: &healthPort}},
			}},
		},
	}
}

// reconcileNetworkPolicy keeps the NetworkPolicy while spec.networkPolicy
// is enabled and deletes it (it is the operator's own child) when not.
func (r *DiskCacheReconciler) reconcileNetworkPolicy(ctx context.Context, dc *cachev1alpha1.DiskCache) error {
	if dc.Spec.NetworkPolicy.Enabled {
		labels := r.OperatorPodLabels
		if labels == nil {
			labels = DefaultOperatorPodLabels
		}
		return r.applyChild(ctx, dc, buildNetworkPolicy(dc, r.OperatorNamespace, labels), &networkingv1.NetworkPolicy{})
	}
	existing, err := getExisting(ctx, r.Client, dc, networkPolicyName(dc), &networkingv1.NetworkPolicy{})
	if err != nil || existing == nil || !metav1.IsControlledBy(existing, dc) {
		return err
	}
	if err := r.Client.Delete(ctx, existing); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete NetworkPolicy %s: %w", existing.Name, err)
	}
	r.event(dc, corev1.EventTypeNormal, "NetworkPolicyDeleted", "Delete", "spec.networkPolicy is off: deleted NetworkPolicy %s", existing.Name)
	return nil
}

// buildServiceMonitor scrapes every shard's health port through the client
// Service's endpoints (so that clients at --max-connections do not blind
// monitoring), with the token when /metrics requires it and over TLS (with
// the TLS Secret's ca.crt) when the cache serves HTTPS.
//
// peerCA says whether the TLS Secret has a ca.crt: without one Prometheus
// verifies with its system roots, as the shards do (a ca that names a
// missing key makes prometheus-operator skip the whole ServiceMonitor).
func buildServiceMonitor(dc *cachev1alpha1.DiskCache, peerCA bool) *unstructured.Unstructured {
	sm := dc.Spec.Monitoring.ServiceMonitor
	endpoint := map[string]any{"port": HealthPortName, "path": "/metrics", "scheme": scheme(dc)}
	if sm.Interval != "" {
		endpoint["interval"] = sm.Interval
	}
	if dc.Spec.Monitoring.RequireToken {
		endpoint["authorization"] = map[string]any{"type": "Bearer",
			"credentials": map[string]any{"name": tokenSecretName(dc), "key": cachev1alpha1.TokenKey}}
	}
	if scheme(dc) == "https" {
		tlsConfig := map[string]any{"serverName": fmt.Sprintf("%s.%s.svc", clientSvcName(dc), dc.Namespace)}
		if peerCA {
			tlsConfig["ca"] = map[string]any{"secret": map[string]any{"name": dc.Spec.TLS.SecretName, "key": caKey}}
		}
		endpoint["tlsConfig"] = tlsConfig
	}
	meta := objectMeta(dc, serviceMonitorName(dc), ComponentMonitoring)
	objLabels := map[string]any{}
	for k, v := range sm.Labels {
		objLabels[k] = v
	}
	for k, v := range meta.Labels { // the operator's labels win
		objLabels[k] = v
	}
	selector := map[string]any{}
	for k, v := range labels(dc, ComponentClientSvc) {
		selector[k] = v
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": meta.Name, "namespace": meta.Namespace, "labels": objLabels},
		"spec": map[string]any{
			"selector":          map[string]any{"matchLabels": selector},
			"namespaceSelector": map[string]any{"matchNames": []any{dc.Namespace}},
			"endpoints":         []any{endpoint},
		},
	}}
	u.SetGroupVersionKind(ServiceMonitorGVK)
	return u
}

// serviceMonitorAPI reports whether the cluster serves ServiceMonitors
// (prometheus-operator's CRD is installed), asking discovery afresh when
// the mapper does not know the kind yet.
func (r *DiskCacheReconciler) serviceMonitorAPI() (bool, error) {
	_, err := r.RESTMapper().RESTMapping(ServiceMonitorGVK.GroupKind(), ServiceMonitorGVK.Version)
	switch {
	case err == nil:
		return true, nil
	case meta.IsNoMatchError(err):
		return false, nil
	default:
		return false, fmt.Errorf("discover the ServiceMonitor API: %w", err)
	}
}

func (r *DiskCacheReconciler) serviceMonitorRecheck() time.Duration {
	if r.ServiceMonitorRecheck > 0 {
		return r.ServiceMonitorRecheck
	}
	return 5 * time.Minute
}

// reconcileServiceMonitor keeps the ServiceMonitor while
// spec.monitoring.serviceMonitor is enabled and the API exists, and
// deletes one the operator made when it is not. ServiceMonitors are read
// directly from the API server: a watch would need the API at start-up.
// waiting is true when one is wanted but the API is missing.
func (r *DiskCacheReconciler) reconcileServiceMonitor(ctx context.Context, dc *cachev1alpha1.DiskCache, peerCA bool) (waiting bool, _ *problem, _ error) {
	enabled := dc.Spec.Monitoring.ServiceMonitor.Enabled
	ok, err := r.serviceMonitorAPI()
	if err != nil || !ok {
		if err == nil && enabled {
			r.event(dc, corev1.EventTypeWarning, cachev1alpha1.ReasonServiceMonitorUnavailable, "CreateServiceMonitor",
				"spec.monitoring.serviceMonitor is enabled, but the cluster has no %s API (install prometheus-operator's CRDs); looking again every %s",
				ServiceMonitorGVK.GroupVersion(), r.serviceMonitorRecheck())
		}
		return enabled && err == nil, nil, err
	}
	existing := &unstructured.Unstructured{}
	existing.SetGroupVersionKind(ServiceMonitorGVK)
	err = r.APIReader.Get(ctx, client.ObjectKey{Namespace: dc.Namespace, Name: serviceMonitorName(dc)}, existing)
	switch {
	case apierrors.IsNotFound(err):
		existing = nil
	case err != nil:
		return false, nil, fmt.Errorf("get ServiceMonitor: %w", err)
	}
	if !enabled {
		if existing == nil || !metav1.IsControlledBy(existing, dc) {
			return false, nil, nil
		}
		if err := r.Client.Delete(ctx, existing); err != nil && !apierrors.IsNotFound(err) {
			return false, nil, fmt.Errorf("delete ServiceMonitor %s: %w", existing.GetName(), err)
		}
		return false, nil, nil
	}
	if existing != nil && !metav1.IsControlledBy(existing, dc) {
		return false, &problem{cachev1alpha1.ReasonServiceMonitorUnavailable,
			fmt.Sprintf("ServiceMonitor %s exists and belongs to something else: not touched", existing.GetName())}, nil
	}
	desired := buildServiceMonitor(dc, peerCA)
	var cur client.Object
	if existing != nil {
		cur = existing
	}
	res, err := r.apply(ctx, dc, desired, cur)
	if err != nil {
		return false, nil, err
	}
	r.recordApply(dc, res, desired, ServiceMonitorGVK.Kind)
	return false, nil, nil
}
