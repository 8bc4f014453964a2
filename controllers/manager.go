package controllers

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	klabels "k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CacheLabelSelector is the label every child carries.
func CacheLabelSelector() map[string]string {
	return map[string]string{LabelManagedBy: ManagerName}
}

// CacheOptions are the manager cache options the controller needs: for the
// kinds it owns, the cache holds only objects with the operator's
// managed-by label, so the operator does not mirror every pod and Secret of
// the cluster (Secrets it does not own are read directly).
func CacheOptions() cache.Options {
	owned := cache.ByObject{Label: klabels.SelectorFromSet(CacheLabelSelector())}
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:                   owned,
		&corev1.Secret{}:                owned,
		&corev1.ConfigMap{}:             owned,
		&corev1.Service{}:               owned,
		&corev1.PersistentVolumeClaim{}: owned,
		&appsv1.StatefulSet{}:           owned,
		&policyv1.PodDisruptionBudget{}: owned,
		&networkingv1.NetworkPolicy{}:   owned,
	}}
}
