package main

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s is not PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRunIssuesVerifiableCertsAndIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	nodeIP, svcIP := net.ParseIP("10.87.0.1"), net.ParseIP("10.96.0.1")
	if err := run(dir, "node-a", nodeIP, svcIP, "https://10.87.0.1:6443"); err != nil {
		t.Fatal(err)
	}
	ca := readCert(t, filepath.Join(dir, "ca.crt"))
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	api := readCert(t, filepath.Join(dir, "apiserver.crt"))
	for _, host := range []string{"10.87.0.1", "10.96.0.1", "kubernetes.default.svc", "127.0.0.1"} {
		if _, err := api.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("apiserver certificate for %s: %v", host, err)
		}
	}
	kubelet := readCert(t, filepath.Join(dir, "kubelet-client.crt"))
	if kubelet.Subject.CommonName != "system:node:node-a" || kubelet.Subject.Organization[0] != "system:nodes" {
		t.Errorf("kubelet client subject = %v", kubelet.Subject)
	}
	if _, err := kubelet.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("kubelet client certificate: %v", err)
	}
	kc, err := os.ReadFile(filepath.Join(dir, "admin.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(kc), "server: https://10.87.0.1:6443") || !strings.Contains(string(kc), "client-key-data: ") {
		t.Errorf("admin.kubeconfig:\n%s", kc)
	}

	// A second run keeps every file as it is.
	before := map[string][]byte{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		before[e.Name()], _ = os.ReadFile(filepath.Join(dir, e.Name()))
	}
	if err := run(dir, "node-a", nodeIP, svcIP, "https://10.87.0.1:6443"); err != nil {
		t.Fatal(err)
	}
	for name, data := range before {
		after, _ := os.ReadFile(filepath.Join(dir, name))
		if string(after) != string(data) {
			t.Errorf("%s changed on the second run", name)
		}
	}
}
