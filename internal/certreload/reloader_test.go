package certreload_test

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/internal/certreload"
	"github.com/execq/execq/internal/testpki"
)

func setup(t *testing.T) (r *certreload.Reloader, ca *testpki.CA, certFile, keyFile string, logs *bytes.Buffer) {
	t.Helper()
	ca = testpki.NewCA(t, "reload")
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca.Server(t, "first").InstallAt(t, certFile, keyFile)
	logs = &bytes.Buffer{}
	r, err := certreload.New(certFile, keyFile, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return r, ca, certFile, keyFile, logs
}

func serialOf(t *testing.T, c *tls.Certificate) string {
	t.Helper()
	return c.Leaf.SerialNumber.String()
}

func TestReloadTakesNewPair(t *testing.T) {
	r, ca, certFile, keyFile, _ := setup(t)
	second := ca.Server(t, "second")
	second.InstallAt(t, certFile, keyFile)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := serialOf(t, r.Certificate()); got != second.Serial.String() {
		t.Fatalf("serial %s after reload, want the new %s", got, second.Serial)
	}
	got, _ := r.GetCertificate(nil)
	if got != r.Certificate() {
		t.Fatal("GetCertificate does not return the current pair")
	}
}

// A bad new pair (garbage, or a key that does not match) keeps the old one
// in use and says so at Error.
func TestReloadKeepsOldPairOnBadFiles(t *testing.T) {
	r, ca, certFile, _, logs := setup(t)
	first := serialOf(t, r.Certificate())

	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil {
		t.Fatal("garbage certificate loaded")
	}
	if got := serialOf(t, r.Certificate()); got != first {
		t.Fatalf("serial %s after a failed reload, want the old %s", got, first)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "keeping the previous one") {
		t.Fatalf("failed reload not logged at error:\n%s", logs)
	}

	// A certificate with another pair's key.
	other := ca.Server(t, "other")
	other.InstallAt(t, certFile, filepath.Join(t.TempDir(), "unused.key"))
	if err := r.Reload(); err == nil {
		t.Fatal("mismatched certificate and key loaded")
	}
	if got := serialOf(t, r.Certificate()); got != first {
		t.Fatalf("serial %s after a mismatched pair, want the old %s", got, first)
	}
}

// ReloadIfChanged reloads only when a file changed, and retries a bad pair
// only once it changes again.
func TestReloadIfChanged(t *testing.T) {
	r, ca, certFile, keyFile, logs := setup(t)
	if tried, _ := r.ReloadIfChanged(); tried {
		t.Fatal("reloaded unchanged files")
	}

	if err := os.WriteFile(keyFile, []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	if tried, err := r.ReloadIfChanged(); !tried || err == nil {
		t.Fatalf("bad key: tried=%v err=%v, want a failed attempt", tried, err)
	}
	n := strings.Count(logs.String(), "not reloaded")
	if tried, _ := r.ReloadIfChanged(); tried {
		t.Fatal("an unchanged bad pair was tried again")
	}
	if strings.Count(logs.String(), "not reloaded") != n {
		t.Fatal("an unchanged bad pair was logged again")
	}

	third := ca.Server(t, "third")
	third.InstallAt(t, certFile, keyFile)
	if tried, err := r.ReloadIfChanged(); !tried || err != nil {
		t.Fatalf("renewed pair: tried=%v err=%v", tried, err)
	}
	if got := serialOf(t, r.Certificate()); got != third.Serial.String() {
		t.Fatalf("serial %s, want %s", got, third.Serial)
	}
	c, _ := r.GetClientCertificate(nil)
	if c != r.Certificate() {
		t.Fatal("GetClientCertificate does not return the current pair")
	}
}

func TestNewRefusesBadPairAndWarnsExpired(t *testing.T) {
	dir := t.TempDir()
	if _, err := certreload.New(filepath.Join(dir, "missing.crt"), filepath.Join(dir, "missing.key"), slog.Default()); err == nil {
		t.Fatal("missing files accepted")
	}
	ca := testpki.NewCA(t, "expiry")
	old := ca.Issue(t, testpki.Options{Name: "old", Hosts: []string{"localhost"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	var logs bytes.Buffer
	if _, err := certreload.New(old.CertFile, old.KeyFile, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "has expired") {
		t.Fatalf("expired certificate not warned about:\n%s", logs.String())
	}
}

func TestLoadCAFile(t *testing.T) {
	ca := testpki.NewCA(t, "pool")
	if _, err := certreload.LoadCAFile(ca.File); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(t.TempDir(), "junk.pem")
	_ = os.WriteFile(junk, []byte("junk"), 0o600)
	if _, err := certreload.LoadCAFile(junk); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("junk CA file: %v", err)
	}
}
