package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/execq/execq/agent/client"
	"github.com/execq/execq/internal/testpki"
	"github.com/execq/execq/shared"
)

// stackTLS serves a stack over HTTPS with a certificate made at test time.
type stackTLS struct {
	// ca issued the server certificate; the test's own client trusts it.
	ca *testpki.CA
	// server is the first certificate, installed at certFile/keyFile.
	server testpki.Pair
	// mutual makes the coordinator require client certificates from ca.
	mutual bool
	// reloadInterval is EXECQ_TLS_RELOAD_INTERVAL (default: an hour, so
	// only SIGHUP reloads).
	reloadInterval time.Duration

	// Set by useTLS.
	certFile, keyFile string
	// client is a client certificate from ca, used by the test's client
	// and given to agents by agentTLSArgs.
	client testpki.Pair
}

var certSeq atomic.Int64

// issue issues a certificate with a name unique in the test binary.
func issue(t testing.TB, ca *testpki.CA, o testpki.Options) testpki.Pair {
	t.Helper()
	o.Name = fmt.Sprintf("%s-%d", o.Name, certSeq.Add(1))
	return ca.Issue(t, o)
}

// useTLS installs the certificate where the coordinator reads it (files
// the test may replace), sets the coordinator's TLS variables and makes
// the stack's client trust the CA (and present a client certificate).
func (s *stack) useTLS(c *stackTLS) {
	s.t.Helper()
	dir := s.t.TempDir()
	c.certFile, c.keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c.server.InstallAt(s.t, c.certFile, c.keyFile)
	c.client = issue(s.t, c.ca, testpki.Options{Name: "e2e-client", Client: true})
	if c.reloadInterval == 0 {
		c.reloadInterval = time.Hour
	}
	s.coordEnv = append(s.coordEnv,
		"EXECQ_TLS_CERT="+c.certFile, "EXECQ_TLS_KEY="+c.keyFile,
		"EXECQ_TLS_RELOAD_INTERVAL="+c.reloadInterval.String())
	if c.mutual {
		s.coordEnv = append(s.coordEnv, "EXECQ_CLIENT_CA="+c.ca.File)
	}
	s.scheme, s.tls = "https", c
	// HTTP/2, as curl and Go clients speak it over TLS by default.
	s.client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: s.clientTLS(), ForceAttemptHTTP2: true}}
}

// clientTLS is what the test's own clients use: the stack's CA and client
// certificate, and a clock inside the server certificate's validity, so
// the test can still talk to a coordinator whose certificate the agent
// rightly refuses as expired.
func (s *stack) clientTLS() *tls.Config {
	pool := x509.NewCertPool()
	raw, err := os.ReadFile(s.tls.ca.File)
	if err != nil || !pool.AppendCertsFromPEM(raw) {
		s.t.Fatalf("read CA %s: %v", s.tls.ca.File, err)
	}
	cert, err := tls.LoadX509KeyPair(s.tls.client.CertFile, s.tls.client.KeyFile)
	if err != nil {
		s.t.Fatal(err)
	}
	at := s.tls.server.Cert.NotBefore.Add(time.Minute)
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, Time: func() time.Time { return at }}
}

// agentTLSArgs are the flags of an agent that trusts the stack's CA and,
// with mutual TLS, presents a client certificate from it.
func (s *stack) agentTLSArgs() []string {
	args := []string{"--ca-file", s.tls.ca.File}
	if s.tls.mutual {
		args = append(args, "--tls-client-cert", s.tls.client.CertFile, "--tls-client-key", s.tls.client.KeyFile)
	}
	return args
}

// TestTLSEndToEnd runs a command through the whole stack over HTTPS: the
// agent verifies the coordinator with --ca-file, and with mutual TLS also
// presents its client certificate (the node token is still what
// authenticates it).
func TestTLSEndToEnd(t *testing.T) {
	t.Parallel()
	for _, mutual := range []bool{false, true} {
		t.Run(fmt.Sprintf("mutual=%v", mutual), func(t *testing.T) {
			t.Parallel()
			ca := testpki.NewCA(t, "e2e")
			s := newStack(t, stackOptions{tls: &stackTLS{ca: ca, server: issue(t, ca, testpki.Options{Name: "coordinator",
				Hosts: []string{"127.0.0.1", "localhost"}}), mutual: mutual}})
			c := s.container()
			s.startAgent(s.agentTLSArgs()...)
			s.waitReported(c)
			id := s.submit(c.ID, "sh", "-c", "echo over tls; echo err >&2; sleep 1; echo done").ID
			// Live output over HTTP/2, followed from submit to end:
			// streamed, with the status as a trailer.
			req, _ := http.NewRequest("GET", s.url("/api/v1/commands/"+id+"/output?stream=stdout&follow=true"), nil)
			req.Header.Set("Authorization", "Bearer "+s.userToken)
			resp, err := s.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.ProtoMajor != 2 || string(body) != "over tls\ndone\n" || resp.Trailer.Get("X-Execq-Status") != "succeeded" {
				t.Fatalf("follow over TLS: %s err=%v body %q trailer %v", resp.Proto, err, body, resp.Trailer)
			}
			rec := s.wait(id, time.Minute)
			if rec.Status != shared.StatusSucceeded || rec.Stdout != "over tls\ndone\n" || rec.Stderr != "err\n" {
				t.Fatalf("record %+v, want succeeded with its output", rec)
			}
			if mutual {
				// The certificate admits the connection; the token still
				// decides who it is.
				if code := s.do("GET", "/api/v1/containers", "not-a-token", nil, nil); code != http.StatusUnauthorized {
					t.Fatalf("mutual TLS without a valid token: status %d, want 401", code)
				}
			}
		})
	}
}

// TestTLSRefusals: an agent that does not trust the coordinator's
// certificate (another CA, or an expired certificate), or that has no
// client certificate for a coordinator requiring one, gets nowhere, and its
// log says why at ERROR on every attempt, backing off between them.
func TestTLSRefusals(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t, "e2e")
	otherCA := testpki.NewCA(t, "unrelated")
	mtls := newStack(t, stackOptions{tls: &stackTLS{ca: ca, mutual: true,
		server: issue(t, ca, testpki.Options{Name: "coordinator", Hosts: []string{"127.0.0.1"}})}})
	expired := newStack(t, stackOptions{tls: &stackTLS{ca: ca,
		server: issue(t, ca, testpki.Options{Name: "expired", Hosts: []string{"127.0.0.1"},
			NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})}})

	cases := []struct {
		name  string
		s     *stack
		agent *proc
		want  string
	}{
		{"unknown CA", mtls, mtls.startAgent("--ca-file", otherCA.File,
			"--tls-client-cert", mtls.tls.client.CertFile, "--tls-client-key", mtls.tls.client.KeyFile),
			"signed by an unknown authority: give the CA that issued it with --ca-file"},
		{"no client certificate", mtls, mtls.startAgent("--ca-file", ca.File),
			"refused the TLS handshake (tls: certificate required)"},
		{"expired", expired, expired.startAgent(expired.agentTLSArgs()...),
			"certificate is expired or not yet valid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.s.eventually(30*time.Second, "two lease errors explaining the TLS failure", func() bool {
				return len(errorLogs(t, tc.agent, "lease commands", tc.want)) >= 2
			})
			logs := errorLogs(t, tc.agent, "lease commands", tc.want)
			if logs[0]["retry_in"] == nil {
				t.Errorf("the error does not say when the agent tries again: %v", logs[0])
			}
			if _, done := tc.agent.exited(0); done {
				t.Error("the agent exited; it should keep trying, since the certificate may be fixed")
			}
		})
	}
	// The coordinator says who failed the handshake.
	mtls.eventually(10*time.Second, "coordinator logs the refused handshake", func() bool {
		return strings.Contains(mtls.coord.out.String(), "TLS handshake error")
	})
}

// errorLogs returns the agent's JSON log records at ERROR with message msg
// whose error contains want.
func errorLogs(t *testing.T, p *proc, msg, want string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.out.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue
		}
		if e, _ := rec["error"].(string); rec["level"] == "ERROR" && rec["msg"] == msg && strings.Contains(e, want) {
			out = append(out, rec)
		}
	}
	return out
}

// TestTLSReload replaces the certificate files and reloads them, by SIGHUP
// and by the files' change alone: new connections get the new certificate,
// while a kept-alive connection and a parked long-poll made before carry
// on undisturbed; a bad new pair keeps the previous one.
func TestTLSReload(t *testing.T) {
	t.Parallel()
	for _, bySignal := range []bool{true, false} {
		name := "SIGHUP"
		if !bySignal {
			name = "file change"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ca := testpki.NewCA(t, "e2e")
			opt := &stackTLS{ca: ca, server: issue(t, ca, testpki.Options{Name: "first", Hosts: []string{"127.0.0.1"}})}
			if !bySignal {
				opt.reloadInterval = 200 * time.Millisecond
			}
			s := newStack(t, stackOptions{tls: opt})
			reload := func() {
				if bySignal {
					s.coord.signal(syscall.SIGHUP)
				}
			}

			// A kept-alive HTTP/1.1 connection, and a long-poll parked
			// off net/http on the agent's own transport (HTTP/1.1 over
			// TLS), both made with the first certificate.
			keep := &http.Transport{TLSClientConfig: s.clientTLS()}
			t.Cleanup(keep.CloseIdleConnections)
			first := s.serialOver(keep, nil)
			if first.Cmp(opt.server.Serial) != 0 {
				t.Fatalf("serving serial %s, want the first certificate's %s", first, opt.server.Serial)
			}
			poll := s.parkLongPoll(15 * time.Second)

			second := issue(t, ca, testpki.Options{Name: "second", Hosts: []string{"127.0.0.1"}})
			second.InstallAt(t, opt.certFile, opt.keyFile)
			reload()
			s.eventually(20*time.Second, "new connections get the second certificate", func() bool {
				return s.newConnSerial().Cmp(second.Serial) == 0
			})
			if got, want := s.metricValue("execq_tls_certificate_expiry_timestamp_seconds"), float64(second.Cert.NotAfter.Unix()); got != want {
				t.Errorf("certificate expiry metric %v after the reload, want %v", got, want)
			}

			var reused bool
			trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
			if got := s.serialOver(keep, trace); !reused || got.Cmp(first) != 0 {
				t.Fatalf("kept-alive connection: reused=%v serial %s; want the same connection, still on %s", reused, got, first)
			}
			select {
			case err := <-poll:
				if err != nil {
					t.Fatalf("parked long-poll: %v", err)
				}
			case <-time.After(time.Minute):
				t.Fatal("parked long-poll never answered")
			}

			// A bad pair: the second certificate stays in use, and the
			// coordinator says the reload failed.
			if err := os.WriteFile(opt.certFile, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			reload()
			s.eventually(20*time.Second, "failed reload logged", func() bool {
				return strings.Contains(s.coord.out.String(), "TLS certificate not reloaded; keeping the previous one")
			})
			if got := s.newConnSerial(); got.Cmp(second.Serial) != 0 {
				t.Fatalf("after a bad pair new connections get serial %s, want the second certificate's %s", got, second.Serial)
			}
		})
	}
}

// serialOver GETs /healthz through tr and returns the serial of the
// certificate the connection used.
func (s *stack) serialOver(tr *http.Transport, trace *httptrace.ClientTrace) *big.Int {
	s.t.Helper()
	ctx := context.Background()
	if trace != nil {
		ctx = httptrace.WithClientTrace(ctx, trace)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", s.url("/healthz"), nil)
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		s.t.Fatalf("GET /healthz: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		s.t.Fatal("GET /healthz: no TLS peer certificate")
	}
	return resp.TLS.PeerCertificates[0].SerialNumber
}

// newConnSerial returns the serial a brand-new connection sees.
func (s *stack) newConnSerial() *big.Int {
	s.t.Helper()
	tr := &http.Transport{TLSClientConfig: s.clientTLS(), DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	return s.serialOver(tr, nil)
}

// parkLongPoll sends a lease long-poll as the node with the agent's
// transport (HTTP/1.1 over TLS, so the coordinator holds it off net/http),
// waits until the coordinator has parked it, and returns where its outcome
// arrives (nil: an ordinary 200 answer).
func (s *stack) parkLongPoll(wait time.Duration) <-chan error {
	s.t.Helper()
	tr := client.NewTransport(s.clientTLS())
	s.t.Cleanup(tr.CloseIdleConnections)
	done := make(chan error, 1)
	go func() {
		body, _ := json.Marshal(shared.LeaseRequest{Max: 1, WaitMillis: int(wait / time.Millisecond)})
		req, _ := http.NewRequest("POST", s.url(shared.AgentPathLease), bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.nodeToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Transport: tr, Timeout: wait + 30*time.Second}).Do(req)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
			done <- fmt.Errorf("%s status %d: %s", resp.Proto, resp.StatusCode, raw)
			return
		}
		done <- nil
	}()
	s.eventually(30*time.Second, "long-poll parked", func() bool {
		return strings.Contains(s.metrics(), "\nexecq_longpolls_parked 1\n")
	})
	return done
}

// metricValue returns an unlabelled metric's value (-1 if absent).
func (s *stack) metricValue(name string) float64 {
	for _, line := range strings.Split(s.metrics(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// metrics returns the coordinator's /metrics text ("" on a failure).
func (s *stack) metrics() string {
	resp, err := s.client.Get(s.url("/metrics"))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return string(raw)
}

// TestSIGHUPWithoutTLS: SIGHUP (systemctl reload) does not stop a
// coordinator that serves plain HTTP; it has nothing to reload and says so.
func TestSIGHUPWithoutTLS(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	s.coord.signal(syscall.SIGHUP)
	s.eventually(20*time.Second, "SIGHUP noted", func() bool {
		if _, done := s.coord.exited(0); done {
			t.Fatalf("the coordinator exited on SIGHUP: %v", s.coord.err)
		}
		return strings.Contains(s.coord.out.String(), "SIGHUP: nothing to reload without TLS")
	})
	if code := s.do("GET", "/readyz", "", nil, nil); code != http.StatusOK {
		t.Fatalf("/readyz after SIGHUP: %d", code)
	}
}
