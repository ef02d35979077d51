package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// pki is the run's certificate for -tls: one self-signed certificate for
// 127.0.0.1, served by the replicas and trusted by the agents as their CA
// file, as an operator's private CA would be. (internal/testpki makes the
// same for tests, but needs a testing.TB.)
type pki struct {
	certFile, keyFile string
	roots             *x509.CertPool
}

// newPKI writes the certificate and key into dir.
func newPKI(dir string) (*pki, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "fleetsim coordinator"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	p := &pki{certFile: filepath.Join(dir, "coordinator.crt"), keyFile: filepath.Join(dir, "coordinator.key"), roots: x509.NewCertPool()}
	if err := os.WriteFile(p.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p.roots.AddCert(cert)
	return p, nil
}

// clientTLS is what the agents and the simulator's own requests trust.
func (p *pki) clientTLS() *tls.Config {
	if p == nil {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.roots}
}

// env is the replicas' TLS settings.
func (p *pki) env() []string {
	if p == nil {
		return nil
	}
	return []string{"EXECQ_TLS_CERT=" + p.certFile, "EXECQ_TLS_KEY=" + p.keyFile}
}

// scheme is the replicas' URL scheme.
func (p *pki) scheme() string {
	if p == nil {
		return "http"
	}
	return "https"
}

// probeClient is for the simulator's own reads of /metrics and readiness.
var probeClient = http.DefaultClient
