package controllers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// PodAddressFunc returns the base URL (scheme://host:port) of a cache pod.
type PodAddressFunc func(dc *cachev1alpha1.DiskCache, pod *corev1.Pod) string

// DNSPodAddress is the pod's stable name through the headless peer Service:
// <scheme>://<pod>.<name>-peers.<namespace>.svc:8080.
func DNSPodAddress(dc *cachev1alpha1.DiskCache, pod *corev1.Pod) string {
	return fmt.Sprintf("%s://%s:%d", scheme(dc), podHost(dc, pod.Name), Port)
}

// podReady is a running pod whose Ready condition is true.
func podReady(pod *corev1.Pod) bool {
	if pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// settingsChange is what applySettings did to one pod.
type settingsChange struct {
	pod     string
	obj     *corev1.Pod
	changed []settings.Name
	err     error
}

// applySettings makes every ready pod's live settings equal the spec's:
// it reads them (GET /v1/settings) and patches only those that differ, so a
// steady state sends no writes to the servers either.
func (r *DiskCacheReconciler) applySettings(ctx context.Context, dc *cachev1alpha1.DiskCache, token string, tlsConfig *tls.Config) ([]settingsChange, error) {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.InNamespace(dc.Namespace), client.MatchingLabels(selectorLabels(dc))); err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	want := liveSettings(&dc.Spec)
	httpClient := r.httpClient(tlsConfig)
	var ready []*corev1.Pod
	for i := range pods.Items {
		if podReady(&pods.Items[i]) {
			ready = append(ready, &pods.Items[i])
		}
	}
	results := make([]settingsChange, len(ready))
	r.eachPod(ctx, dc, ready, func(ctx context.Context, i int, url string) {
		results[i] = settingsChange{pod: ready[i].Name, obj: ready[i]}
		results[i].changed, results[i].err = applyPodSettings(ctx, url, token, httpClient, want)
	})
	sort.Slice(results, func(i, j int) bool { return results[i].pod < results[j].pod })
	var errs []error
	for _, res := range results {
		if res.err != nil {
			errs = append(errs, fmt.Errorf("pod %s: %w", res.pod, res.err))
		}
	}
	return results, errors.Join(errs...)
}

func applyPodSettings(ctx context.Context, url, token string, hc *http.Client, want settings.Settings) ([]settings.Name, error) {
	c, err := cacheclient.New(url, cacheclient.Options{Token: token, HTTPClient: hc, Retries: -1, DirectOnly: true})
	if err != nil {
		return nil, err
	}
	cache := c.Cache("")
	current, err := cache.Settings(ctx)
	if err != nil {
		return nil, fmt.Errorf("read settings: %w", err)
	}
	diff := want.Diff(current)
	if diff.IsZero() {
		return nil, nil
	}
	after, err := cache.UpdateSettings(ctx, diff)
	if err != nil {
		return nil, fmt.Errorf("update settings: %w", err)
	}
	if rest := want.Diff(after); !rest.IsZero() {
		return nil, fmt.Errorf("server kept other values for %s", settings.JoinNames(sortedNames(rest)))
	}
	return sortedNames(diff), nil
}

func sortedNames(s settings.Settings) []settings.Name {
	names := s.Names()
	slices.Sort(names)
	return names
}

// httpClient is the client for the cache pods; one transport is shared
// (keep-alive) per TLS configuration. The operator talks to each shard
// about itself, so every request is scoped to the shard it reaches
// (otherwise a server fans settings, expire and cull out to all shards).
func (r *DiskCacheReconciler) httpClient(tlsConfig *tls.Config) *http.Client {
	r.httpOnce.Do(func() {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 4
		r.plainHTTP = &http.Client{Transport: shardScoped{tr}}
	})
	if tlsConfig == nil {
		return r.plainHTTP
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConfig
	tr.DisableKeepAlives = true
	return &http.Client{Transport: shardScoped{tr}}
}

// shardScoped sends every request with Diskcache-Scope: shard.
type shardScoped struct{ next http.RoundTripper }

func (s shardScoped) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set(wire.HeaderScope, "shard")
	return s.next.RoundTrip(req)
}

// tlsConfigFor trusts the ca.crt of the TLS Secret when it has one, and the
// system roots otherwise.
// tlsSecretProblem says what makes a TLS Secret unusable by the shards (a
// cacheserver that cannot load its key pair, or trust its ca.crt, does
// not start), or "" when they can use it.
func tlsSecretProblem(secret *corev1.Secret) string {
	cert, key := secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey]
	if len(cert) == 0 || len(key) == 0 {
		return fmt.Sprintf("TLS Secret %s lacks %s or %s", secret.Name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		return fmt.Sprintf("TLS Secret %s: %s and %s are not a key pair the shards can serve with: %v", secret.Name, corev1.TLSCertKey, corev1.TLSPrivateKeyKey, err)
	}
	if ca := secret.Data[caKey]; len(ca) > 0 && !x509.NewCertPool().AppendCertsFromPEM(ca) {
		return fmt.Sprintf("TLS Secret %s: %s holds no PEM certificate", secret.Name, caKey)
	}
	return ""
}

func tlsConfigFor(secret *corev1.Secret) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca := secret.Data["ca.crt"]; len(ca) > 0 {
		pool := x509.NewCertPool()
		if pool.AppendCertsFromPEM(ca) {
			cfg.RootCAs = pool
		}
	}
	return cfg
}
