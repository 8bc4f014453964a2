package controllers

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	klabels "k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
)

// TestNetworkPolicy: spec.networkPolicy makes a NetworkPolicy that admits
// to the cache port the cache's own pods (as the StatefulSet labels them),
// the operator's pods in its namespace and the listed clients, nothing
// else; turned off, the policy goes.
func TestNetworkPolicy(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	web := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "web"}}}
	team := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}
	newDiskCache(t, ns, "np", func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.NetworkPolicy = cachev1alpha1.NetworkPolicySpec{Enabled: true, Clients: []networkingv1.NetworkPolicyPeer{web, team}}
	})
	var np networkingv1.NetworkPolicy
	eventually(t, "NetworkPolicy np", func() error { return k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: "np"}, &np) })
	sts := get(t, ns, "np", &appsv1.StatefulSet{})
	pods, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil || !pods.Matches(klabels.Set(sts.Spec.Template.Labels)) || pods.Empty() {
		t.Fatalf("policy selects %v (%v), the cache pods are labelled %v", pods, err, sts.Spec.Template.Labels)
	}
	if !reflect.DeepEqual(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) || len(np.Spec.Ingress) != 1 {
		t.Fatalf("policy types %v, ingress %+v", np.Spec.PolicyTypes, np.Spec.Ingress)
	}
	rule := np.Spec.Ingress[0]
	// The data port and the health port (Prometheus scrapes it; the
	// kubelet's probes come from the node).
	if len(rule.Ports) != 2 || rule.Ports[0].Port.IntValue() != Port || *rule.Ports[0].Protocol != corev1.ProtocolTCP ||
		rule.Ports[1].Port.IntValue() != HealthPort || *rule.Ports[1].Protocol != corev1.ProtocolTCP {
		t.Errorf("ports %+v, want TCP %d and %d only", rule.Ports, Port, HealthPort)
	}
	operator := networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: testOperatorNamespace}},
		PodSelector:       &metav1.LabelSelector{MatchLabels: DefaultOperatorPodLabels},
	}
	if len(rule.From) != 4 || !reflect.DeepEqual(rule.From[1:], []networkingv1.NetworkPolicyPeer{operator, web, team}) {
		t.Fatalf("from %+v", rule.From)
	}
	// The shards: pods of this namespace (no namespace selector) with the
	// cache pods' labels.
	if shards, err := metav1.LabelSelectorAsSelector(rule.From[0].PodSelector); err != nil || rule.From[0].NamespaceSelector != nil ||
		!shards.Matches(klabels.Set(sts.Spec.Template.Labels)) {
		t.Fatalf("first peer %+v does not admit the cache pods", rule.From[0])
	}
	if !metav1.IsControlledBy(&np, get(t, ns, "np", &cachev1alpha1.DiskCache{})) {
		t.Errorf("owners %+v", np.OwnerReferences)
	}

	updateDiskCache(t, ns, "np", func(dc *cachev1alpha1.DiskCache) { dc.Spec.NetworkPolicy.Enabled = false })
	eventually(t, "NetworkPolicy deleted", func() error {
		err := k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: "np"}, &networkingv1.NetworkPolicy{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
}

// TestServiceMonitorOnlyWithItsAPI: without the ServiceMonitor API an
// enabled spec.monitoring.serviceMonitor gives a Warning event and nothing
// else; once prometheus-operator's CRD is installed the operator creates
// the ServiceMonitor, with the token when /metrics requires it, and
// deletes it when turned off.
func TestServiceMonitorOnlyWithItsAPI(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	newDiskCache(t, ns, "mon", func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Monitoring = cachev1alpha1.MonitoringSpec{RequireToken: true, ServiceMonitor: cachev1alpha1.ServiceMonitorSpec{
			Enabled: true, Interval: "15s", Labels: map[string]string{"release": "prom"}}}
	})
	eventually(t, "a ServiceMonitorUnavailable event", func() error {
		for _, e := range eventsFor(t, ns, "mon") {
			if e.Reason == cachev1alpha1.ReasonServiceMonitorUnavailable && e.Type == corev1.EventTypeWarning {
				return nil
			}
		}
		return errors.New("none")
	})

	// Nothing changes but the API: the operator looks for it again on
	// its own (every second in these tests).
	installServiceMonitorCRD(t)
	sm := &unstructured.Unstructured{}
	sm.SetGroupVersionKind(ServiceMonitorGVK)
	eventually(t, "ServiceMonitor mon", func() error { return k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: "mon"}, sm) })
	svc := get(t, ns, "mon", &corev1.Service{})
	selector, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	if len(selector) == 0 || !klabels.SelectorFromSet(selector).Matches(klabels.Set(svc.Labels)) {
		t.Errorf("selector %v does not select the client Service (labels %v)", selector, svc.Labels)
	}
	if sm.GetLabels()["release"] != "prom" || sm.GetLabels()[LabelManagedBy] != ManagerName {
		t.Errorf("labels %v", sm.GetLabels())
	}
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(endpoints) != 1 {
		t.Fatalf("endpoints %v", endpoints)
	}
	ep := endpoints[0].(map[string]any)
	secret, _, _ := unstructured.NestedString(ep, "authorization", "credentials", "name")
	key, _, _ := unstructured.NestedString(ep, "authorization", "credentials", "key")
	if ep["port"] != HealthPortName || ep["path"] != "/metrics" || ep["scheme"] != "http" || ep["interval"] != "15s" ||
		secret != "mon-token" || key != cachev1alpha1.TokenKey {
		t.Errorf("endpoint %v", ep)
	}
	if !metav1.IsControlledBy(sm, get(t, ns, "mon", &cachev1alpha1.DiskCache{})) {
		t.Errorf("owners %+v", sm.GetOwnerReferences())
	}
	// The cache servers require the token the ServiceMonitor sends.
	if cm := get(t, ns, "mon-config", &corev1.ConfigMap{}); !strings.Contains(cm.Data[ConfigKey], "\nmetrics-require-token = true\n") {
		t.Errorf("cacheserver.conf:\n%s", cm.Data[ConfigKey])
	}

	updateDiskCache(t, ns, "mon", func(dc *cachev1alpha1.DiskCache) { dc.Spec.Monitoring.ServiceMonitor.Enabled = false })
	eventually(t, "ServiceMonitor deleted", func() error {
		err := k8s.Get(bg, client.ObjectKey{Namespace: ns, Name: "mon"}, sm)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
}

// installServiceMonitorCRD installs a minimal ServiceMonitor CRD (any
// spec), as prometheus-operator's would serve the API.
func installServiceMonitorCRD(t *testing.T) {
	t.Helper()
	preserve := true
	crd := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "servicemonitors.monitoring.coreos.com"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{
			Group: "monitoring.coreos.com",
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "servicemonitors", Singular: "servicemonitor", Kind: "ServiceMonitor", ListKind: "ServiceMonitorList"},
			Scope: apiextensionsv1.NamespaceScoped,
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
					Type: "object", XPreserveUnknownFields: &preserve,
				}},
			}},
		},
	}
	if _, err := envtest.InstallCRDs(restCfg, envtest.CRDInstallOptions{CRDs: []*apiextensionsv1.CustomResourceDefinition{crd}}); err != nil {
		t.Fatal(err)
	}
}

// A cache that serves HTTPS is scraped over HTTPS, verified with the TLS
// Secret's ca.crt against the client Service's name, which the
// certificate must cover; without requireToken no credentials are sent.
func TestServiceMonitorOverTLS(t *testing.T) {
	dc := defaulted(func(dc *cachev1alpha1.DiskCache) {
		dc.Name, dc.Namespace = "web", "shop"
		dc.Spec.TLS = &cachev1alpha1.TLSSpec{SecretName: "web-tls"}
		dc.Spec.Monitoring.ServiceMonitor.Enabled = true
	})
	endpoints, _, _ := unstructured.NestedSlice(buildServiceMonitor(dc, true).Object, "spec", "endpoints")
	ep := endpoints[0].(map[string]any)
	server, _, _ := unstructured.NestedString(ep, "tlsConfig", "serverName")
	secret, _, _ := unstructured.NestedString(ep, "tlsConfig", "ca", "secret", "name")
	key, _, _ := unstructured.NestedString(ep, "tlsConfig", "ca", "secret", "key")
	if ep["scheme"] != "https" || server != "web.shop.svc" || secret != "web-tls" || key != "ca.crt" {
		t.Errorf("endpoint %v", ep)
	}
	if _, ok := ep["authorization"]; ok {
		t.Errorf("credentials sent to a public /metrics: %v", ep)
	}
	// A certificate from a public CA (no ca.crt): Prometheus's own roots,
	// as the shards use theirs.
	endpoints, _, _ = unstructured.NestedSlice(buildServiceMonitor(dc, false).Object, "spec", "endpoints")
	ep = endpoints[0].(map[string]any)
	if _, ok, _ := unstructured.NestedMap(ep, "tlsConfig", "ca"); ok {
		t.Errorf("a ca named for a TLS Secret without ca.crt: %v", ep)
	}
	if server, _, _ := unstructured.NestedString(ep, "tlsConfig", "serverName"); server != "web.shop.svc" {
		t.Errorf("endpoint without ca.crt %v", ep)
	}
}

// TestRefusedNetworkPolicyStopsNothingElse: a networkPolicy.clients entry
// the API server refuses (a CIDR of /33) fails the reconcile, named in
// ReconcileFailed, but the steps after it still run: here the check of
// the memory limit, which raised nothing while the NetworkPolicy's error
// ended every reconcile before it.
func TestRefusedNetworkPolicyStopsNothingElse(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	bad := networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/33"}}
	newDiskCache(t, ns, "np", func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.NetworkPolicy = cachev1alpha1.NetworkPolicySpec{Enabled: true, Clients: []networkingv1.NetworkPolicyPeer{bad}}
		dc.Spec.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("50Mi")}
	})
	eventually(t, "ReconcileFailed naming the NetworkPolicy", func() error {
		return findEventNote(t, ns, "np", cachev1alpha1.ReasonReconcileFailed, "NetworkPolicy")
	})
	eventually(t, "MemoryLimitTooLow all the same", func() error {
		return findEventNote(t, ns, "np", cachev1alpha1.ReasonMemoryLimitTooLow, "spec.resources.limits.memory 50Mi")
	})
	dc := get(t, ns, "np", &cachev1alpha1.DiskCache{})
	c := findCondition(dc, cachev1alpha1.ConditionDegraded)
	if c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "NetworkPolicy") {
		t.Errorf("Degraded %+v; want it to name the NetworkPolicy", c)
	}
	get(t, ns, "np", &policyv1.PodDisruptionBudget{})
}
