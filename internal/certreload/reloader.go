package certreload

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Reloader holds the current pair of CertFile and KeyFile. Its methods are
// safe for concurrent use.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger

	cur atomic.Pointer[tls.Certificate]
	// mu serialises reloads; stamp is what the files looked like at the
	// last attempt, good or bad, so an unchanged bad pair is not retried
	// (and logged) on every check.
	mu    sync.Mutex
	stamp stamp
}

// stamp identifies a version of the two files: a renewal that renames new
// files into place changes the inode, one that rewrites them in place
// changes the size or modification time.
type stamp struct{ cert, key fs.FileInfo }

func (a stamp) same(b stamp) bool {
	eq := func(x, y fs.FileInfo) bool {
		return x != nil && y != nil && os.SameFile(x, y) && x.ModTime().Equal(y.ModTime()) && x.Size() == y.Size()
	}
	return eq(a.cert, b.cert) && eq(a.key, b.key)
}

// New loads the pair once and fails if it does not load: a daemon should
// not start without its certificate. log receives reload outcomes.
func New(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log}
	st, _ := r.stat()
	cert, err := load(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.stamp = st
	r.cur.Store(cert)
	r.warnValidity(cert)
	return r, nil
}

// Certificate returns the pair in use.
func (r *Reloader) Certificate() *tls.Certificate { return r.cur.Load() }

// GetCertificate is for tls.Config.GetCertificate (servers).
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
}

// GetClientCertificate is for tls.Config.GetClientCertificate (clients).
// Handshakes are rare (connections are kept alive), so it checks the files
// for a change on each one instead of needing a watcher or a signal.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	_, _ = r.ReloadIfChanged()
	return r.cur.Load(), nil
}

// Reload re-reads the pair. On failure the previous pair stays in use, the
// error is logged and returned.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, _ := r.stat()
	return r.reloadLocked(st)
}

// ReloadIfChanged re-reads the pair if either file changed since the last
// attempt; it reports whether it tried.
func (r *Reloader) ReloadIfChanged() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := r.stat()
	if err != nil {
		// A file briefly missing while it is replaced: nothing to load
		// yet. Not recorded, so the pair is tried once it is back.
		return false, nil
	}
	if st.same(r.stamp) {
		return false, nil
	}
	return true, r.reloadLocked(st)
}

// reloadLocked loads the pair. st was taken before reading, so a change
// made while reading is seen by the next check.
func (r *Reloader) reloadLocked(st stamp) error {
	r.stamp = st
	cert, err := load(r.certFile, r.keyFile)
	if err != nil {
		old := r.cur.Load()
		r.log.Error("TLS certificate not reloaded; keeping the previous one", "error", err,
			"cert_file", r.certFile, "key_file", r.keyFile,
			"serial", serial(old), "not_after", old.Leaf.NotAfter.UTC().Format(time.RFC3339))
		return err
	}
	r.cur.Store(cert)
	r.log.Info("TLS certificate reloaded", "cert_file", r.certFile, "serial", serial(cert),
		"subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	r.warnValidity(cert)
	return nil
}

// warnValidity warns about a certificate that peers will refuse: it is
// still used (an operator may be about to replace it), but not silently.
func (r *Reloader) warnValidity(cert *tls.Certificate) {
	now := time.Now()
	switch {
	case now.After(cert.Leaf.NotAfter):
		r.log.Warn("TLS certificate has expired; peers will refuse it", "cert_file", r.certFile,
			"serial", serial(cert), "not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(cert.Leaf.NotBefore):
		r.log.Warn("TLS certificate is not valid yet; peers will refuse it", "cert_file", r.certFile,
			"serial", serial(cert), "not_before", cert.Leaf.NotBefore.UTC().Format(time.RFC3339))
	}
}

func (r *Reloader) stat() (stamp, error) {
	c, err := os.Stat(r.certFile)
	if err != nil {
		return stamp{}, err
	}
	k, err := os.Stat(r.keyFile)
	if err != nil {
		return stamp{}, err
	}
	return stamp{cert: c, key: k}, nil
}

// load reads and checks a pair; the leaf is parsed so its validity can be
// reported.
func load(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse TLS certificate %s: %w", certFile, err)
		}
	}
	return &cert, nil
}

func serial(c *tls.Certificate) string {
	if c == nil || c.Leaf == nil {
		return ""
	}
	return c.Leaf.SerialNumber.Text(16)
}

// LoadCAFile reads a PEM file of CA certificates into a pool, failing if it
// holds none (a wrong file would otherwise trust nothing and fail every
// handshake later with a less helpful error).
func LoadCAFile(file string) (*x509.CertPool, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}
