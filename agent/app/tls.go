package app

import (
	"errors"
	"net/url"

	"github.com/execq/execq/agent/client"
	"github.com/execq/execq/internal/envflag"
)

// tlsFlags adds the TLS flags.
func tlsFlags(b *envflag.Set, f *client.TLSFiles) {
	b.String(&f.CAFile, "ca-file", "EXECQ_CA_FILE", "PEM CA bundle to verify an https:// coordinator against (default: the system roots)")
	b.String(&f.CertFile, "tls-client-cert", "EXECQ_TLS_CLIENT_CERT", "PEM client certificate, for a coordinator that requires one (--client-ca there); re-read when it changes")
	b.String(&f.KeyFile, "tls-client-key", "EXECQ_TLS_CLIENT_KEY", "PEM private key of --tls-client-cert")
}

// validateTLS refuses TLS settings that could not take effect: a client
// certificate without its key, or TLS files for a plain http:// URL (the
// operator meant TLS and would silently not get it).
func (c Config) validateTLS() error {
	f := c.TLS
	if (f.CertFile == "") != (f.KeyFile == "") {
		return errors.New("--tls-client-cert and --tls-client-key (EXECQ_TLS_CLIENT_CERT, EXECQ_TLS_CLIENT_KEY) go together: set both or neither")
	}
	if u, err := url.Parse(c.CoordinatorURL); err == nil && u.Scheme == "http" && f != (client.TLSFiles{}) {
		return errors.New("--ca-file and --tls-client-cert/--tls-client-key need an https:// coordinator URL (--coordinator, EXECQ_COORDINATOR)")
	}
	return nil
}
