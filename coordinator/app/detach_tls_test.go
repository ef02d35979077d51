package app_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execq/execq/agent/client"
	"github.com/execq/execq/internal/testpki"
	"github.com/execq/execq/shared"
)

// tlsAgent is an agent's connection to a replica served over TLS with
// HTTP/2 offered, as the coordinator serves it: the agent's own transport
// (client.NewTransport), one connection at most, and what it saw.
type tlsAgent struct {
	t          *testing.T
	replica    *replica
	client     *http.Client
	transport  *http.Transport
	handshakes *atomic.Int64 // TLS handshakes the server did
	conns      []httptrace.GotConnInfo
}

func startTLSAgent(t *testing.T, b *bundle) *tlsAgent {
	t.Helper()
	ca := testpki.NewCA(t, "detach")
	pair := ca.Server(t, "coordinator")
	cert, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	a := &tlsAgent{t: t, handshakes: new(atomic.Int64)}
	a.replica, _ = serveReplica(t, b.DBURL, func(srv *httptest.Server) {
		srv.EnableHTTP2 = true
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert},
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				a.handshakes.Add(1)
				return nil, nil // this config
			}}
		srv.StartTLS()
	})
	cfg, err := client.NewTLSConfig(client.TLSFiles{CAFile: ca.File}, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	a.transport = client.NewTransport(cfg)
	a.transport.MaxConnsPerHost = 1
	t.Cleanup(a.transport.CloseIdleConnections)
	a.client = &http.Client{Transport: a.transport, Timeout: 2 * time.Minute}
	return a
}

// lease sends a lease request as node and returns the answer read in full.
func (a *tlsAgent) lease(ctx context.Context, node nodeIdentity, req shared.LeaseRequest) (*http.Response, shared.LeaseResponse, error) {
	js, _ := json.Marshal(req)
	r, _ := http.NewRequestWithContext(ctx, http.MethodPost, a.replica.URL+shared.AgentPathLease, bytes.NewReader(js))
	r.Header.Set("Authorization", "Bearer "+node.Token)
	r.Header.Set("Content-Type", "application/json")
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
		GotConn: func(ci httptrace.GotConnInfo) { a.conns = append(a.conns, ci) }}))
	resp, err := a.client.Do(r)
	var lr shared.LeaseResponse
	if err != nil {
		return nil, lr, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode == http.StatusOK {
		err = json.Unmarshal(raw, &lr)
	}
	return resp, lr, err
}

// dial opens a TLS connection to the replica as the agent's transport does
// (HTTP/1.1 offered), for requests written by hand.
func (a *tlsAgent) dial() *tls.Conn {
	a.t.Helper()
	cfg := a.transport.TLSClientConfig.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(a.replica.URL, "https://"), cfg)
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { conn.Close() })
	return conn
}

// writeLease writes a lease request as node on conn.
func (a *tlsAgent) writeLease(conn *tls.Conn, node nodeIdentity, wait time.Duration) {
	a.t.Helper()
	js, _ := json.Marshal(shared.LeaseRequest{Max: 1, WaitMillis: int(wait.Milliseconds())})
	req, _ := http.NewRequest(http.MethodPost, a.replica.URL+shared.AgentPathLease, bytes.NewReader(js))
	req.Header.Set("Authorization", "Bearer "+node.Token)
	req.Header.Set("Content-Type", "application/json")
	if err := req.Write(conn); err != nil {
		a.t.Fatal(err)
	}
}

// TestParkedTLSPollHoldsNoGoroutine: an agent over TLS (HTTP/1.1, see
// client.NewTransport) has its poll parked off net/http like one over plain
// HTTP: no goroutine while it waits, woken by its node's enqueue, and the
// same TLS connection — no new handshake — serves its next request.
func TestParkedTLSPollHoldsNoGoroutine(t *testing.T) {
	b := setup(t)
	a := startTLSAgent(t, b)
	waitListeners(t, b.DB, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	resp, _, err := a.lease(ctx, b.NodeA, shared.LeaseRequest{Max: 1})
	if err != nil || resp.StatusCode != http.StatusOK || resp.TLS == nil || resp.ProtoMajor != 1 {
		t.Fatalf("first lease over TLS: %v %+v", err, resp)
	}
	type answer struct {
		resp *http.Response
		lr   shared.LeaseResponse
		err  error
	}
	answered := make(chan answer, 1)
	go func() {
		resp, lr, err := a.lease(ctx, b.NodeA, shared.LeaseRequest{Max: 1, WaitMillis: int(parkedWait.Milliseconds())})
		answered <- answer{resp, lr, err}
	}()
	waitParked(t, a.replica.App, 1)
	eventually(t, wakeBound, func() bool { return handlerGoroutines(t) == 0 },
		"%d goroutines wait in the lease handler with a TLS poll parked, want 0", handlerGoroutines(t))

	rec := b.submit(b.Alice, b.NodeA.Container, "id")
	select {
	case got := <-answered:
		if got.err != nil || got.resp.StatusCode != http.StatusOK || len(got.lr.Commands) != 1 || got.lr.Commands[0].ID != rec.ID {
			t.Fatalf("parked TLS poll answered %v %+v, want command %s", got.err, got.lr, rec.ID)
		}
	case <-time.After(parkedWait):
		t.Fatal("the parked TLS poll was not woken by its node's enqueue")
	}

	// Back to the server with its TLS state: the next request goes on the
	// same connection, without a handshake, and is served over TLS.
	resp, _, err = a.lease(ctx, b.NodeA, shared.LeaseRequest{Max: 1})
	if err != nil || resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("request after the parked TLS poll: %v %+v", err, resp)
	}
	if len(a.conns) != 3 || !a.conns[1].Reused || !a.conns[2].Reused || a.conns[2].Conn != a.conns[0].Conn {
		t.Fatalf("connections %+v; want the first one reused", a.conns)
	}
	if n := a.handshakes.Load(); n != 1 {
		t.Fatalf("%d TLS handshakes, want 1", n)
	}
}

// TestParkedTLSPollOfAGoneAgentClaimsNothing: an agent over TLS that closed
// its connection while its poll was parked — its TLS stack sends a
// close_notify alert before the end of the stream, so data waits on the
// socket — gets no lease when its node is woken.
func TestParkedTLSPollOfAGoneAgentClaimsNothing(t *testing.T) {
	b := setup(t)
	a := startTLSAgent(t, b)
	waitListeners(t, b.DB, 2)
	conn := a.dial()
	a.writeLease(conn, b.NodeA, parkedWait)
	waitParked(t, a.replica.App, 1)
	// The agent leaves: Close sends the close_notify alert, then the
	// end of the stream.
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}

	rec := b.submit(b.Alice, b.NodeA.Container, "id")
	eventually(t, within, func() bool { return a.replica.App.Poller.Parked() == 0 }, "the gone TLS agent's poll stayed parked after its node's enqueue")
	if n := b.count(`SELECT count(*) FROM commands WHERE id = $1 AND attempt = 0 AND leased_by IS NULL`, rec.ID); n != 1 {
		t.Fatalf("the command was leased for a TLS agent that had left")
	}
}

// TestParkedTLSPollKeepsAPipelinedRequest: a client over TLS that sends its
// next request while its poll is parked (HTTP/1.1 pipelining) is not taken
// for gone when its node is woken — the request's bytes are read through
// TLS to tell them from a close_notify — and that request is answered after
// the poll's, on the same connection.
func TestParkedTLSPollKeepsAPipelinedRequest(t *testing.T) {
	b := setup(t)
	a := startTLSAgent(t, b)
	waitListeners(t, b.DB, 2)
	conn := a.dial()
	a.writeLease(conn, b.NodeA, parkedWait)
	waitParked(t, a.replica.App, 1)
	a.writeLease(conn, b.NodeA, 0) // pipelined behind the parked poll

	rec := b.submit(b.Alice, b.NodeA.Container, "id")
	_ = conn.SetReadDeadline(time.Now().Add(within))
	br := bufio.NewReader(conn)
	for i, want := range []int{1, 0} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		var lr shared.LeaseResponse
		err = json.NewDecoder(resp.Body).Decode(&lr)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || len(lr.Commands) != want || (want == 1 && lr.Commands[0].ID != rec.ID) {
			t.Fatalf("answer %d: %d %+v (%v), want %d command(s)", i, resp.StatusCode, lr, err, want)
		}
	}
}
