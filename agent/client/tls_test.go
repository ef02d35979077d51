package client

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/internal/certreload"
	"github.com/execq/execq/internal/testpki"
	"github.com/execq/execq/shared"
)

// tlsServer serves an empty inventory answer over TLS with pair, requiring
// client certificates from clientCA if set, over HTTP/2 as the coordinator
// does.
func tlsServer(t *testing.T, pair testpki.Pair, clientCA string) *httptest.Server {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	if clientCA != "" {
		pool, err := certreload.LoadCAFile(clientCA)
		if err != nil {
			t.Fatal(err)
		}
		srv.TLS.ClientCAs, srv.TLS.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	srv.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func tlsClient(t *testing.T, url string, files TLSFiles) *Client {
	t.Helper()
	cfg, err := NewTLSConfig(files, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{BaseURL: url, Token: "t", TLS: cfg, RetryMax: 3, RetryWaitMin: time.Millisecond, RetryWaitMax: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTLSFailuresAreExplained: each certificate failure comes back as a
// TLSError whose text says what is wrong and which setting to check, and
// is not retried within the request.
func TestTLSFailuresAreExplained(t *testing.T) {
	ca := testpki.NewCA(t, "right")
	other := testpki.NewCA(t, "other")
	good := ca.Server(t, "good")
	expired := ca.Issue(t, testpki.Options{Name: "expired", Hosts: []string{"127.0.0.1"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	wrongHost := ca.Issue(t, testpki.Options{Name: "wronghost", Hosts: []string{"coordinator.example"}})
	agent := ca.Issue(t, testpki.Options{Name: "agent", Client: true})
	strange := other.Issue(t, testpki.Options{Name: "strange-agent", Client: true})

	mtls := tlsServer(t, good, ca.File)
	for _, tc := range []struct {
		name  string
		url   string
		files TLSFiles
		want  string // in the error text; "" means success
	}{
		{"verified", tlsServer(t, good, "").URL, TLSFiles{CAFile: ca.File}, ""},
		{"unknown CA", tlsServer(t, good, "").URL, TLSFiles{CAFile: other.File}, "unknown authority: give the CA that issued it with --ca-file"},
		{"system roots", tlsServer(t, good, "").URL, TLSFiles{}, "unknown authority"},
		{"expired", tlsServer(t, expired, "").URL, TLSFiles{CAFile: ca.File}, "expired or not yet valid"},
		{"wrong host", tlsServer(t, wrongHost, "").URL, TLSFiles{CAFile: ca.File}, `not valid for "127.0.0.1"`},
		{"mTLS verified", mtls.URL, TLSFiles{CAFile: ca.File, CertFile: agent.CertFile, KeyFile: agent.KeyFile}, ""},
		{"mTLS without a client certificate", mtls.URL, TLSFiles{CAFile: ca.File}, "refused the TLS handshake"},
		{"mTLS with a certificate of another CA", mtls.URL, TLSFiles{CAFile: ca.File, CertFile: strange.CertFile, KeyFile: strange.KeyFile}, "--tls-client-cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tlsClient(t, tc.url, tc.files)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := c.ReportInventory(ctx, []shared.ContainerReport{})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var te *TLSError
			if !errors.As(err, &te) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a TLSError saying %q", err, tc.want)
			}
			if IsRejected(err) {
				t.Fatal("a TLS failure counted as a coordinator answer")
			}
		})
	}
}

// TestAgentSpeaksHTTP1OverTLS: the agent offers only HTTP/1.1 in its TLS
// handshake, even to a coordinator that offers HTTP/2 (as it does): the
// coordinator can then take a parked lease poll's connection off net/http,
// which an HTTP/2 stream does not allow. Its requests share one connection
// when they follow each other.
func TestAgentSpeaksHTTP1OverTLS(t *testing.T) {
	ca := testpki.NewCA(t, "proto")
	pair := ca.Server(t, "server")
	cert, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	type seen struct{ proto, remote string }
	reqs := make(chan seen, 8)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqs <- seen{r.Proto, r.RemoteAddr}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	c := tlsClient(t, srv.URL, TLSFiles{CAFile: ca.File})
	var first seen
	for i := range 2 {
		if _, err := c.ReportInventory(context.Background(), []shared.ContainerReport{}); err != nil {
			t.Fatal(err)
		}
		got := <-reqs
		if got.proto != "HTTP/1.1" {
			t.Fatalf("the agent spoke %s over TLS, want HTTP/1.1", got.proto)
		}
		if i == 0 {
			first = got
		} else if got.remote != first.remote {
			t.Fatalf("second request on a new connection (%s, first %s)", got.remote, first.remote)
		}
	}
	// Without a TLS config of its own (the system roots), Go would try
	// HTTP/2 unless told otherwise.
	if p := NewTransport(nil).Protocols; p == nil || p.HTTP2() || !p.HTTP1() {
		t.Fatalf("default transport's protocols %v, want HTTP/1.1 only", p)
	}
}
