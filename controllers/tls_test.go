package controllers

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cachev1alpha1 "github.com/diskcache-operator/diskcache-operator/api/v1alpha1"
	"github.com/diskcache-operator/diskcache-operator/internal/testserver"
)

// testCA makes a CA and a server certificate for 127.0.0.1 and the pod DNS
// names, PEM-encoded.
func testCA(t *testing.T, dnsNames ...string) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "cacheserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: dnsNames}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// With spec.tls the operator talks HTTPS to the pods and trusts the
// Secret's ca.crt.
func TestLiveSettingsOverTLS(t *testing.T) {
	needEnv(t)
	ns := newNamespace(t)
	caPEM, certPEM, keyPEM := testCA(t, "*.tls-peers."+ns+".svc")
	if err := k8s.Create(bg, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tls-cert"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": caPEM}}); err != nil {
		t.Fatal(err)
	}
	newDiskCache(t, ns, "tls", func(dc *cachev1alpha1.DiskCache) { dc.Spec.TLS = &cachev1alpha1.TLSSpec{SecretName: "tls-cert"} })
	tok := waitToken(t, ns, "tls")

	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	adminFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(adminFile, []byte(waitAdminToken(t, ns, "tls")), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testserver.Start(t, testserver.Options{Token: tok, Args: []string{"--tls-cert", certFile, "--tls-key", keyFile,
		"--shard-index", "0", "--admin-token-file", adminFile}})
	httpsURL := "https://" + srv.Addr
	podAddrs.Store(ns+"/tls-0", httpsURL)
	t.Cleanup(func() { podAddrs.Delete(ns + "/tls-0") })
	createPod(t, ns, "tls", "tls-0", true)

	updateDiskCache(t, ns, "tls", func(dc *cachev1alpha1.DiskCache) { dc.Spec.SizeLimit = ptrTo(resource.MustParse("100Mi")) })
	eventually(t, "settings applied over HTTPS", func() error {
		dc := get(t, ns, "tls", &cachev1alpha1.DiskCache{})
		if err := conditionIs(dc, cachev1alpha1.ConditionDegraded, metav1.ConditionFalse, ""); err != nil {
			return err
		}
		// The topology went over HTTPS too.
		if err := conditionIs(dc, cachev1alpha1.ConditionTopologyAnnounced, metav1.ConditionTrue, cachev1alpha1.ReasonTopologyAnnounced); err != nil {
			return err
		}
		for _, e := range eventsFor(t, ns, "tls") {
			if e.Reason == "SettingsApplied" && e.Note == "pod tls-0: applied size_limit" {
				return nil
			}
		}
		return fmt.Errorf("no SettingsApplied event")
	})
	// The shards trust the Secret's ca.crt when they forward to each other.
	if args := get(t, ns, "tls", &appsv1.StatefulSet{}).Spec.Template.Spec.Containers[0].Args; !slices.Equal(args[len(args)-2:],
		[]string{"--peer-ca-file", "/etc/diskcache-tls/ca.crt"}) {
		t.Errorf("args %q: want --peer-ca-file /etc/diskcache-tls/ca.crt", args)
	}
	if dc := get(t, ns, "tls", &cachev1alpha1.DiskCache{}); dc.Status.Endpoint != "https://tls."+ns+".svc:8080" {
		t.Errorf("endpoint %s", dc.Status.Endpoint)
	}
}

// tlsSecretProblem tells a TLS Secret the shards cannot use (each would
// fail to start) from one they can.
func TestTLSSecretProblem(t *testing.T) {
	caPEM, certPEM, keyPEM := testCA(t)
	_, _, otherKey := testCA(t)
	for _, tc := range []struct {
		name string
		data map[string][]byte
		want string // in the problem; "" for none
	}{
		{"a key pair and its CA", map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": caPEM}, ""},
		{"a key pair alone", map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM}, ""},
		{"no key", map[string][]byte{"tls.crt": certPEM}, "lacks tls.crt or tls.key"},
		{"not PEM", map[string][]byte{"tls.crt": []byte("garbage"), "tls.key": []byte("garbage")}, "not a key pair"},
		{"another key", map[string][]byte{"tls.crt": certPEM, "tls.key": otherKey}, "not a key pair"},
		{"ca.crt not PEM", map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": []byte("garbage")}, "ca.crt holds no PEM certificate"},
	} {
		got := tlsSecretProblem(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Data: tc.data})
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
