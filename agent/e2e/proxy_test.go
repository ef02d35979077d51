package e2e_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/execq/execq/shared"
)

// faultProxy sits between an agent and a real coordinator. It forwards agent
// requests as they are, except those its hold rule picks: those are read and
// then never answered, as a network that swallows packets, until the agent
// gives up on them (or the test ends). It also counts the output bytes the
// agent put in its heartbeat and finish requests.
type faultProxy struct {
	t   testing.TB
	srv *httptest.Server
	rp  *httputil.ReverseProxy

	mu   sync.Mutex
	hold func(r *http.Request) bool
	// cut holds every request while set: a network outage.
	cut atomic.Bool

	held        atomic.Int64 // requests held so far
	outputBytes atomic.Int64 // chunk data bytes in heartbeats and finishes
	closed      chan struct{}
}

func newFaultProxy(t testing.TB, target string) *faultProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{t: t, rp: httputil.NewSingleHostReverseProxy(u), closed: make(chan struct{})}
	// A request the agent abandoned is expected here, not worth a line.
	p.rp.ErrorLog = log.New(io.Discard, "", 0)
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(func() {
		close(p.closed)
		p.srv.CloseClientConnections()
		p.srv.Close()
	})
	return p
}

// URL is what the agent is given as its coordinator.
func (p *faultProxy) URL() string { return p.srv.URL }

// holdWhen sets the rule picking requests to hold (nil: none).
func (p *faultProxy) holdWhen(rule func(r *http.Request) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = rule
}

func (p *faultProxy) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	p.mu.Lock()
	rule := p.hold
	p.mu.Unlock()
	if p.cut.Load() || (rule != nil && rule(r)) {
		// The body has been read, so the server notices when the agent
		// closes the connection: that cancels r.Context().
		p.held.Add(1)
		select {
		case <-r.Context().Done():
		case <-p.closed:
		}
		return
	}
	if strings.HasSuffix(r.URL.Path, "/heartbeat") || strings.HasSuffix(r.URL.Path, "/finish") {
		var req struct{ Chunks []shared.Chunk }
		if json.Unmarshal(body, &req) == nil {
			for _, c := range req.Chunks {
				p.outputBytes.Add(int64(len(c.Data)))
			}
		}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	p.rp.ServeHTTP(w, r)
}
