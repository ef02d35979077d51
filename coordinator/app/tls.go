package app

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/execq/execq/internal/certreload"
)

// DefaultTLSReloadInterval is how often the certificate files are checked
// for a change.
const DefaultTLSReloadInterval = 10 * time.Second

// TLSConfig is the coordinator's HTTPS settings; all empty serves plain
// HTTP.
type TLSConfig struct {
	// CertFile and KeyFile are the PEM server certificate (with its chain)
	// and key (EXECQ_TLS_CERT, EXECQ_TLS_KEY). Both or neither.
	CertFile, KeyFile string
	// ClientCA, if set, is a PEM file of CAs that must have signed every
	// client's certificate (EXECQ_CLIENT_CA): mutual TLS. Tokens are still
	// required; the certificate only decides who may connect at all.
	ClientCA string
	// ReloadInterval is how often the certificate files are checked for a
	// change (EXECQ_TLS_RELOAD_INTERVAL); SIGHUP reloads at once.
	ReloadInterval time.Duration
}

// Enabled reports whether HTTPS is configured.
func (c TLSConfig) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

func (c TLSConfig) validate() error {
	switch {
	case (c.CertFile == "") != (c.KeyFile == ""):
		return errors.New("--tls-cert and --tls-key (EXECQ_TLS_CERT, EXECQ_TLS_KEY) go together: set both, or neither for plain HTTP")
	case c.ClientCA != "" && !c.Enabled():
		return errors.New("--client-ca (EXECQ_CLIENT_CA) needs HTTPS: set --tls-cert and --tls-key too")
	case c.Enabled() && c.ReloadInterval <= 0:
		return errors.New("--tls-reload-interval (EXECQ_TLS_RELOAD_INTERVAL) must be positive")
	}
	return nil
}

// serverTLS loads the certificate and the client CAs. Go's defaults are
// kept (TLS 1.2 and up, its cipher suites), TLS 1.2 stated so a future
// default cannot lower it.
func serverTLS(c TLSConfig, log *slog.Logger) (*tls.Config, *certreload.Reloader, error) {
	if !c.Enabled() {
		return nil, nil, nil
	}
	r, err := certreload.New(c.CertFile, c.KeyFile, log.With("component", "tls"))
	if err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
	if c.ClientCA != "" {
		pool, err := certreload.LoadCAFile(c.ClientCA)
		if err != nil {
			return nil, nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, r, nil
}

// serve serves srv on ln, over TLS if configured. Handshake failures (a
// client that does not trust the certificate, or has no client
// certificate) are logged by net/http through srv.ErrorLog, here at Warn.
func (a *App) serve(srv *http.Server, ln net.Listener) error {
	if a.tlsConfig == nil {
		a.log.Info("coordinator listening", "addr", ln.Addr().String(), "tls", false)
		return srv.Serve(ln)
	}
	srv.TLSConfig = a.tlsConfig
	if srv.ErrorLog == nil {
		srv.ErrorLog = slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)
	}
	a.log.Info("coordinator listening", "addr", ln.Addr().String(), "tls", true,
		"client_certificates", a.tlsConfig.ClientAuth == tls.RequireAndVerifyClientCert)
	// The certificate comes from GetCertificate, hence no file names.
	return srv.ServeTLS(ln, "", "")
}

// watchCertificate reloads the certificate on SIGHUP and when its files
// change, until ctx ends. New handshakes get the new pair; connections
// already open, and requests in flight on them, are not touched. Without
// TLS, SIGHUP is still caught, so a `systemctl reload` of a plain-HTTP
// coordinator does not kill it (systemd would count that a clean exit and
// not restart it).
func (a *App) watchCertificate(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var tick <-chan time.Time
	if a.certs != nil {
		t := time.NewTicker(a.cfg.TLS.ReloadInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			if a.certs == nil {
				a.log.Info("SIGHUP: nothing to reload without TLS")
				continue
			}
			a.log.Info("SIGHUP: reloading the TLS certificate")
			_ = a.certs.Reload() // logged by the reloader; the old pair stays
		case <-tick:
			_, _ = a.certs.ReloadIfChanged()
		}
	}
}

// registerTLSMetrics exposes the served certificate's expiry, so an alert
// can fire before it lapses, and notice a renewal that was not taken (the
// value does not move).
func (a *App) registerTLSMetrics(reg prometheus.Registerer) {
	if a.certs == nil {
		return
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "execq_tls_certificate_expiry_timestamp_seconds",
		Help: "When the TLS certificate being served expires (Unix time).",
	}, func() float64 { return float64(a.certs.Certificate().Leaf.NotAfter.Unix()) }))
}
