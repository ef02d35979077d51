package app

import (
	"crypto/tls"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/execq/execq/internal/testpki"
)

// TestValidateTLS: a certificate without its key, or client CAs without
// HTTPS, is refused at start-up with the flags to fix.
func TestValidateTLS(t *testing.T) {
	ok := DefaultConfig()
	ok.DatabaseURL = "postgres://x"
	for _, tc := range []struct {
		name string
		tls  TLSConfig
		want string
	}{
		{"cert without key", TLSConfig{CertFile: "c.pem", ReloadInterval: 1}, "--tls-key"},
		{"key without cert", TLSConfig{KeyFile: "k.pem", ReloadInterval: 1}, "--tls-cert"},
		{"client CA without TLS", TLSConfig{ClientCA: "ca.pem", ReloadInterval: 1}, "--client-ca"},
		{"no reload interval", TLSConfig{CertFile: "c.pem", KeyFile: "k.pem"}, "--tls-reload-interval"},
	} {
		c := ok
		c.TLS = tc.tls
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}

// TestServerTLS: TLS 1.2 at least, the certificate from the reloader, and
// client certificates required and verified when a client CA is given; a
// bad file fails the start.
func TestServerTLS(t *testing.T) {
	ca := testpki.NewCA(t, "app")
	pair := ca.Server(t, "server")
	cfg, certs, err := serverTLS(TLSConfig{CertFile: pair.CertFile, KeyFile: pair.KeyFile, ClientCA: ca.File, ReloadInterval: 1}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.ClientCAs == nil {
		t.Fatalf("TLS config %+v", cfg)
	}
	got, _ := cfg.GetCertificate(nil)
	if got != certs.Certificate() || got.Leaf.SerialNumber.Cmp(pair.Serial) != 0 {
		t.Fatal("the served certificate is not the loaded pair")
	}
	if _, _, err := serverTLS(TLSConfig{CertFile: pair.CertFile, KeyFile: pair.KeyFile, ClientCA: pair.KeyFile}, slog.Default()); err == nil {
		t.Fatal("a client CA file without certificates was accepted")
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	if _, _, err := serverTLS(TLSConfig{CertFile: missing, KeyFile: pair.KeyFile}, slog.Default()); err == nil {
		t.Fatal("a missing certificate was accepted")
	}
}
