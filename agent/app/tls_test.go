package app

import (
	"io"
	"strings"
	"testing"
)

func TestParseFlagsTLS(t *testing.T) {
	base := map[string]string{"EXECQ_COORDINATOR": "https://c:8443", "EXECQ_AGENT_TOKEN": "tok", "EXECQ_CA_FILE": "/etc/execq/ca.pem"}
	cfg, err := ParseFlags([]string{"--tls-client-cert", "/etc/execq/agent.crt", "--tls-client-key", "/etc/execq/agent.key"}, env(base), io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS.CAFile != "/etc/execq/ca.pem" || cfg.TLS.CertFile != "/etc/execq/agent.crt" || cfg.TLS.KeyFile != "/etc/execq/agent.key" {
		t.Fatalf("TLS files %+v", cfg.TLS)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"cert without key", base, []string{"--tls-client-cert", "a.crt"}, "--tls-client-key"},
		{"key without cert", base, []string{"--tls-client-key", "a.key"}, "--tls-client-cert"},
		{"CA file for http", map[string]string{"EXECQ_COORDINATOR": "http://c:8080", "EXECQ_AGENT_TOKEN": "tok"}, []string{"--ca-file", "ca.pem"}, "https://"},
	} {
		if _, err := ParseFlags(tc.args, env(tc.env), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}
