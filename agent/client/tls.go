package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/execq/execq/internal/certreload"
)

// TLSFiles names the agent's TLS material. All empty: the coordinator is
// verified against the system roots and no client certificate is sent.
type TLSFiles struct {
	// CAFile, if set, is the only CA bundle the coordinator's certificate
	// is verified against (instead of the system roots).
	CAFile string
	// CertFile and KeyFile are the client certificate for a coordinator
	// that requires one (mutual TLS). Re-read when they change.
	CertFile, KeyFile string
}

// NewTLSConfig builds the agent's TLS settings from f; nil when f is empty
// (Go's defaults: system roots, TLS 1.2 and up).
func NewTLSConfig(f TLSFiles, log *slog.Logger) (*tls.Config, error) {
	if f == (TLSFiles{}) {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CAFile != "" {
		pool, err := certreload.LoadCAFile(f.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if f.CertFile != "" || f.KeyFile != "" {
		r, err := certreload.New(f.CertFile, f.KeyFile, log.With("component", "tls"))
		if err != nil {
			return nil, err
		}
		// Asked at each handshake, which checks the files for a
		// renewal: no restart when the certificate is replaced.
		cfg.GetClientCertificate = r.GetClientCertificate
	}
	return cfg, nil
}

// TLSError is a TLS handshake with the coordinator that failed on a
// certificate: the agent does not trust the coordinator's, or the
// coordinator refused the agent's. Retrying does not help until someone
// changes a certificate or a CA file, so it is not retried within a request;
// the agent's loops still try again after their backoff, since a
// certificate may be fixed while the agent runs.
type TLSError struct {
	Op string
	// Reason says what is wrong and what to check, for the operator.
	Reason string
	Err    error
}

func (e *TLSError) Error() string {
	return fmt.Sprintf("%s: TLS with the coordinator failed: %s (%v)", e.Op, e.Reason, e.Err)
}

func (e *TLSError) Unwrap() error { return e.Err }

// IsTLS reports whether err is a certificate failure (see TLSError).
func IsTLS(err error) bool {
	var e *TLSError
	return errors.As(err, &e)
}

// tlsReason explains a certificate failure, or returns "" if err is not one.
func tlsReason(err error) string {
	var (
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		hostname x509.HostnameError
		verify   *tls.CertificateVerificationError
		op       *net.OpError
	)
	switch {
	case errors.As(err, &unknown):
		return "the coordinator's certificate is signed by an unknown authority: " +
			"give the CA that issued it with --ca-file (EXECQ_CA_FILE), or install it in the system roots"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		if c := invalid.Cert; c != nil {
			now := time.Now().UTC().Format(time.RFC3339)
			return fmt.Sprintf("the coordinator's certificate is expired or not yet valid (valid %s to %s, now %s): renew it on the coordinator, or check this host's clock",
				c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), now)
		}
		return "the coordinator's certificate is expired or not yet valid: renew it on the coordinator, or check this host's clock"
	case errors.As(err, &hostname):
		return fmt.Sprintf("the coordinator's certificate is not valid for %q: use a name from the certificate in --coordinator, or reissue it for this name", hostname.Host)
	case errors.As(err, &invalid) || errors.As(err, &verify):
		return "the coordinator's certificate was refused: check it and --ca-file (EXECQ_CA_FILE)"
	case errors.As(err, &op) && op.Op == "remote error":
		// A TLS alert from the coordinator: with --client-ca it refuses
		// a missing, unknown or expired client certificate.
		return fmt.Sprintf("the coordinator refused the TLS handshake (%v): if it requires client certificates (--client-ca), "+
			"give this agent one signed by that CA with --tls-client-cert and --tls-client-key", op.Err)
	}
	return ""
}
