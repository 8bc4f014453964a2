// Command pki writes the local cluster's certificate authority, the serving
// and client certificates of every component, the service-account signing
// key and one kubeconfig per client identity. Standard library only.
//
// It is idempotent: files that exist are kept (the CA is loaded and reused),
// missing ones are created, so `up` after `down` keeps every credential and a
// kubeconfig handed out earlier stays valid.
//
// Usage: pki -dir DIR -node NAME -node-ip IP -service-ip IP -server URL
package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

const validity = 10 * 365 * 24 * time.Hour

type pki struct {
	dir    string
	caCert *x509.Certificate
	caKey  crypto.Signer
	caPEM  []byte
}

func main() {
	dir := flag.String("dir", "", "output directory")
	node := flag.String("node", "", "node name")
	nodeIP := flag.String("node-ip", "", "node (and apiserver) address")
	serviceIP := flag.String("service-ip", "", "ClusterIP of the kubernetes Service")
	server := flag.String("server", "", "apiserver URL for the kubeconfigs")
	flag.Parse()
	if *dir == "" || *node == "" || *nodeIP == "" || *serviceIP == "" || *server == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*dir, *node, net.ParseIP(*nodeIP), net.ParseIP(*serviceIP), *server); err != nil {
		fmt.Fprintln(os.Stderr, "pki:", err)
		os.Exit(1)
	}
}

func run(dir, node string, nodeIP, serviceIP net.IP, server string) error {
	if nodeIP == nil || serviceIP == nil {
		return errors.New("bad -node-ip or -service-ip")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	p := &pki{dir: dir}
	if err := p.loadOrCreateCA(); err != nil {
		return err
	}
	loopback := net.ParseIP("127.0.0.1")
	serving := []struct {
		name string
		cn   string
		dns  []string
		ips  []net.IP
	}{
		{"apiserver", "kube-apiserver", []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local", "localhost", node}, []net.IP{nodeIP, serviceIP, loopback}},
		{"kubelet", node, []string{node, "localhost"}, []net.IP{nodeIP, loopback}},
	}
	for _, s := range serving {
		if err := p.issue(s.name, pkix.Name{CommonName: s.cn}, x509.ExtKeyUsageServerAuth, s.dns, s.ips); err != nil {
			return err
		}
	}
	clients := []struct {
		name string
		cn   string
		org  string
	}{
		{"admin", "kubernetes-admin", "system:masters"},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"},
		{"controller-manager", "system:kube-controller-manager", ""},
		{"scheduler", "system:kube-scheduler", ""},
		{"kube-proxy", "system:kube-proxy", ""},
		{"kubelet-client", "system:node:" + node, "system:nodes"},
		{"coredns", "diskcache-local:coredns", ""},
		{"pv-recycler", "diskcache-local:pv-recycler", ""},
	}
	for _, c := range clients {
		subject := pkix.Name{CommonName: c.cn}
		if c.org != "" {
			subject.Organization = []string{c.org}
		}
		if err := p.issue(c.name, subject, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
			return err
		}
	}
	if err := p.serviceAccountKey(); err != nil {
		return err
	}
	kubeconfigs := map[string]string{
		"admin": "admin", "controller-manager": "controller-manager", "scheduler": "scheduler",
		"kube-proxy": "kube-proxy", "kubelet": "kubelet-client", "coredns": "coredns", "pv-recycler": "pv-recycler",
	}
	for name, cred := range kubeconfigs {
		if err := p.kubeconfig(name, cred, server); err != nil {
			return err
		}
	}
	return nil
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func newKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// writeFile writes atomically so a crash never leaves half a key behind.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (p *pki) loadOrCreateCA() error {
	crtPath, keyPath := p.path("ca.crt"), p.path("ca.key")
	if exists(crtPath) && exists(keyPath) {
		crtPEM, err := os.ReadFile(crtPath)
		if err != nil {
			return err
		}
		keyData, err := os.ReadFile(keyPath)
		if err != nil {
			return err
		}
		cb, _ := pem.Decode(crtPEM)
		kb, _ := pem.Decode(keyData)
		if cb == nil || kb == nil {
			return fmt.Errorf("%s or %s is not PEM", crtPath, keyPath)
		}
		cert, err := x509.ParseCertificate(cb.Bytes)
		if err != nil {
			return err
		}
		key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
		if err != nil {
			return err
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return errors.New("CA key is not a signer")
		}
		p.caCert, p.caKey, p.caPEM = cert, signer, crtPEM
		return nil
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	sn, err := serial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "diskcache-local-cluster-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return err
	}
	if err := writeFile(keyPath, kp, 0o600); err != nil {
		return err
	}
	p.caCert, p.caKey, p.caPEM = cert, key, certPEM(der)
	return writeFile(crtPath, p.caPEM, 0o644)
}

// issue writes NAME.crt and NAME.key signed by the CA unless both exist.
func (p *pki) issue(name string, subject pkix.Name, usage x509.ExtKeyUsage, dns []string, ips []net.IP) error {
	crtPath, keyPath := p.path(name+".crt"), p.path(name+".key")
	if exists(crtPath) && exists(keyPath) {
		return nil
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	sn, err := serial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      subject,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, key.Public(), p.caKey)
	if err != nil {
		return err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return err
	}
	if err := writeFile(keyPath, kp, 0o600); err != nil {
		return err
	}
	return writeFile(crtPath, certPEM(der), 0o644)
}

func (p *pki) serviceAccountKey() error {
	keyPath, pubPath := p.path("sa.key"), p.path("sa.pub")
	if exists(keyPath) && exists(pubPath) {
		return nil
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	if err := writeFile(keyPath, kp, 0o600); err != nil {
		return err
	}
	return writeFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

// kubeconfig writes NAME.kubeconfig with the CA and the client credential
// CRED embedded, so the file is self-contained and can be copied anywhere.
func (p *pki) kubeconfig(name, cred, server string) error {
	path := p.path(name + ".kubeconfig")
	crt, err := os.ReadFile(p.path(cred + ".crt"))
	if err != nil {
		return err
	}
	key, err := os.ReadFile(p.path(cred + ".key"))
	if err != nil {
		return err
	}
	b64 := base64.StdEncoding.EncodeToString
	var buf bytes.Buffer
	fmt.Fprintf(&buf, `apiVersion: v1
kind: Config
clusters:
- name: diskcache-local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: diskcache-local
  context:
    cluster: diskcache-local
    user: %s
current-context: diskcache-local
`, server, b64(p.caPEM), name, b64(crt), b64(key), name)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, buf.Bytes()) {
		return nil
	}
	return writeFile(path, buf.Bytes(), 0o600)
}
