package main

import (
	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/internal/envflag"
)

// tlsFlags adds serve's HTTPS flags.
func tlsFlags(f *envflag.Set, c *app.TLSConfig) {
	f.String(&c.CertFile, "tls-cert", "EXECQ_TLS_CERT", "PEM server certificate (with chain): serve HTTPS; reloaded on SIGHUP and when the file changes")
	f.String(&c.KeyFile, "tls-key", "EXECQ_TLS_KEY", "PEM private key of --tls-cert")
	f.String(&c.ClientCA, "client-ca", "EXECQ_CLIENT_CA", "PEM CA file: require client certificates signed by it (mutual TLS; tokens still required)")
	f.Duration(&c.ReloadInterval, "tls-reload-interval", "EXECQ_TLS_RELOAD_INTERVAL", "how often the certificate files are checked for a change")
}
