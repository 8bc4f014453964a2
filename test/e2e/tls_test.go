//go:build e2e

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	cacheclient "github.com/diskcache-operator/diskcache-operator/client"
	"github.com/diskcache-operator/diskcache-operator/internal/loadcheck"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// servingCert makes a CA and a serving certificate it signs for dnsNames,
// PEM-encoded.
func servingCert(t *testing.T, dnsNames ...string) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "diskcache e2e CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsNames[0]},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: dnsNames}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// 12. A DiskCache with spec.tls and several shards keeps every write of a
// move under load: a CA and a certificate made here for the Service's
// names and the shards' peer names (*.<name>-peers.<ns>.svc, which the
// operator reaches the pods by, and the same under .cluster.local, the
// shard URLs of the topology the shards forward and hand off by) in a
// kubernetes.io/tls Secret with its ca.crt; 3 shards. The test reaches
// the Service over https, trusting only that CA (a client with the
// system's roots is refused, and plain http reads no data), runs the load
// of the rescale test through it and kubectl scale --replicas=4: the
// operator ends the move, 0 lost, 0 stale, 0 resurrected, and each of the
// 4 shards, asked over https, holds a share.
func TestTLSShardsUnderLoad(t *testing.T) {
	p := newPhases(t)
	defer p.done()
	p.next("TLS Secret + create 3 shards + Available + topology")
	ns := newNamespace(t, "tls")
	const name, secretName = "tls", "tls-cert"
	svcHost := name + "." + ns + ".svc"
	caPEM, certPEM, keyPEM := servingCert(t,
		svcHost, name, name+"."+ns, svcHost+".cluster.local",
		"*."+name+"-peers."+ns+".svc", "*."+name+"-peers."+ns+".svc.cluster.local")
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: secretName},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       certPEM,
			corev1.TLSPrivateKeyKey: keyPEM,
			"ca.crt":                caPEM,
		},
	}
	if err := k8s.Create(ctxT(t, 30*time.Second), sec); err != nil {
		t.Fatalf("create TLS Secret: %v", err)
	}
	createDiskCache(t, newDiskCache(ns, name, func(dc *cachev1alpha1.DiskCache) {
		dc.Spec.Shards = 3
		dc.Spec.TagIndex = true
		dc.Spec.TLS = &cachev1alpha1.TLSSpec{SecretName: secretName}
	}))
	dc := waitAvailable(t, ns, name, 5*time.Minute)
	if want := "https://" + svcHost + ":8080"; dc.Status.Endpoint != want {
		t.Errorf("status.endpoint %q, want %q", dc.Status.Endpoint, want)
	}
	// The operator reached every shard over https (trusting the Secret's
	// ca.crt) to announce the topology.
	waitTopologyAnnounced(t, ns, name, 3)

	p.next("https through the Service, and what is refused")
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("the CA's PEM does not parse")
	}
	tlsConfig := &tls.Config{RootCAs: roots, ServerName: svcHost, MinVersion: tls.VersionTLS12}
	tok := token(t, ns, name)
	svc := serviceClientTLS(t, ns, name, tok, tlsConfig)
	const probeKey, probeValue = "tls-probe", "over-https"
	if err := svc.Set(ctxT(t, 30*time.Second), kv.TextKey(probeKey), kv.Bytes([]byte(probeValue)), kv.SetOptions{}); err != nil {
		t.Fatalf("set over https: %v", err)
	}
	it, ok, err := svc.Get(ctxT(t, 30*time.Second), kv.TextKey(probeKey))
	if err != nil || !ok || string(it.Value.Data) != probeValue {
		t.Fatalf("get over https: %q, found %v, %v", it.Value.Data, ok, err)
	}
	base := serviceURLTLS(t, ns, name, tlsConfig)
	// A client that trusts only the system's roots does not take the
	// certificate.
	untrusted, err := cacheclient.New(base, cacheclient.Options{Token: tok, Retries: -1, DirectOnly: true,
		TLSConfig: &tls.Config{ServerName: svcHost, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = untrusted.Cache("").Get(ctxT(t, 30*time.Second), kv.TextKey(probeKey))
	if !errors.As(err, new(x509.UnknownAuthorityError)) {
		t.Errorf("get over https without the CA: %v, want an unknown authority error", err)
	}
	// Plain http to the TLS port reads nothing: no 200, no value.
	plainURL := "http" + strings.TrimPrefix(base, "https") + "/v1/keys/" + probeKey
	req, err := http.NewRequestWithContext(ctxT(t, 30*time.Second), http.MethodGet, plainURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	if resp, err := hc.Do(req); err != nil {
		t.Logf("plain http to the TLS port: %v", err)
	} else {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		t.Logf("plain http to the TLS port: %s %q", resp.Status, body)
		if resp.StatusCode == http.StatusOK || strings.Contains(string(body), probeValue) {
			t.Errorf("plain http GET %s answered %s %q: the TLS port served data without TLS", plainURL, resp.Status, body)
		}
	}
	if _, err := svc.Delete(ctxT(t, 30*time.Second), kv.TextKey(probeKey)); err != nil {
		t.Fatalf("delete over https: %v", err)
	}

	p.next("kubectl scale 3 → 4 under load over https")
	store := &rescaleStore{c: svc, tls: tlsConfig}
	// 2000 keys, 8 writers/readers/deleters, each on its own 250 keys.
	l := loadcheck.New(store, loadcheck.Config{Workers: 8, KeysPerWorker: 250, Prefix: "tls"})
	rescaleStep(t, ns, name, tok, l, store, 3, 4)
}
