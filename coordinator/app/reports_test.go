package app_test

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/execq/execq/agent/client"
	"github.com/execq/execq/shared"
)

// TestReportsAnswerEachItem: one reports request with starts and finishes
// of several commands — valid ones, a stale lease, another node's command,
// a finish missing output — answers each item as its per-command route
// would, and does what the valid ones ask.
func TestReportsAnswerEachItem(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var leased []shared.LeasedCommand
	for range 3 {
		rec := b.submit(b.Alice, b.NodeA.Container, "true")
		leased = append(leased, b.leaseCommand(b.NodeA, rec.ID))
	}
	done := b.run("echo", "hello")
	b.heartbeat(b.NodeA, done, stdout(0, "he"))
	short := b.run("echo", "short")
	recB := b.submit(b.Alice, b.NodeB.Container, "true")
	other := b.leaseCommand(b.NodeB, recB.ID)

	req := shared.ReportsRequest{
		Starts: []shared.StartItem{
			{CommandID: leased[0].ID, Attempt: leased[0].Attempt},
			{CommandID: leased[1].ID, Attempt: leased[1].Attempt + 1},
			{CommandID: leased[2].ID, Attempt: leased[2].Attempt},
			{CommandID: other.ID, Attempt: other.Attempt},
		},
		Finishes: []shared.FinishItem{
			{CommandID: done.ID, FinishRequest: shared.FinishRequest{Attempt: done.Attempt, ExitCode: exitCode(0),
				StdoutLength: 6, Chunks: []shared.Chunk{stdout(2, "llo\n")}}},
			{CommandID: short.ID, FinishRequest: shared.FinishRequest{Attempt: short.Attempt, ExitCode: exitCode(0),
				StdoutLength: 6, Chunks: []shared.Chunk{stdout(0, "sh")}}},
		},
	}
	var resp shared.ReportsResponse
	b.mustJSON(b.URL, http.MethodPost, shared.AgentPathReports, b.NodeA.Token, req, http.StatusOK, &resp)

	wantStart := []struct {
		status int
		code   string
	}{{0, ""}, {http.StatusConflict, shared.CodeLeaseLost}, {0, ""}, {http.StatusForbidden, shared.CodeForbidden}}
	for i, want := range wantStart {
		got := resp.Starts[i]
		switch {
		case got.CommandID != req.Starts[i].CommandID:
			t.Errorf("starts[%d] answers for %s, want %s", i, got.CommandID, req.Starts[i].CommandID)
		case want.status == 0 && (got.Error != nil || got.Status != shared.StatusRunning || got.LeaseExpiresAt.IsZero()):
			t.Errorf("starts[%d]: %+v, want running", i, got)
		case want.status != 0 && (got.Error == nil || got.Error.Status != want.status || got.Error.Code != want.code):
			t.Errorf("starts[%d]: %+v, want %d %s", i, got, want.status, want.code)
		}
	}
	if f := resp.Finishes[0]; f.Error != nil || f.Status != shared.StatusSucceeded {
		t.Errorf("finishes[0]: %+v, want succeeded", f)
	}
	if f := resp.Finishes[1]; f.Error == nil || f.Error.Code != shared.CodeOutputGap || f.Error.Offsets == nil || f.Error.Offsets.Stdout != 2 {
		t.Errorf("finishes[1]: %+v, want output_gap at stdout 2", f)
	}
	for id, want := range map[string]shared.Status{leased[0].ID: shared.StatusRunning, leased[1].ID: shared.StatusQueued,
		leased[2].ID: shared.StatusRunning, short.ID: shared.StatusRunning} {
		if got := b.get(b.Alice, id).Status; got != want {
			t.Errorf("%s: %s, want %s", id, got, want)
		}
	}
	if got := b.get(b.Alice, done.ID); got.Stdout != "hello\n" || got.Status != shared.StatusSucceeded {
		t.Errorf("finished: %s %q", got.Status, got.Stdout)
	}
	if got := b.get(b.Alice, recB.ID).Status; got != shared.StatusQueued {
		t.Errorf("node B's command: %s after node A tried to start it, want queued", got)
	}
}

// TestReportsRefuseBadInputWhole: an item a per-command route would refuse
// as 400 refuses the whole request, and none of its items is done.
func TestReportsRefuseBadInputWhole(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec := b.submit(b.Alice, b.NodeA.Container, "true")
	lc := b.leaseCommand(b.NodeA, rec.ID)
	valid := shared.StartItem{CommandID: lc.ID, Attempt: lc.Attempt}
	for name, req := range map[string]shared.ReportsRequest{
		"empty":          {Starts: []shared.StartItem{}, Finishes: []shared.FinishItem{}},
		"not a uuid":     {Starts: []shared.StartItem{valid, {CommandID: "nope", Attempt: 1}}, Finishes: []shared.FinishItem{}},
		"attempt 0":      {Starts: []shared.StartItem{valid, {CommandID: lc.ID, Attempt: 0}}, Finishes: []shared.FinishItem{}},
		"bad end reason": {Starts: []shared.StartItem{valid}, Finishes: []shared.FinishItem{{CommandID: lc.ID, FinishRequest: shared.FinishRequest{Attempt: 1, Chunks: []shared.Chunk{}, EndReason: "bored"}}}},
		"finished twice": {Starts: []shared.StartItem{valid}, Finishes: []shared.FinishItem{
			{CommandID: lc.ID, FinishRequest: shared.FinishRequest{Attempt: 1, Chunks: []shared.Chunk{}, ExitCode: exitCode(0)}},
			{CommandID: lc.ID, FinishRequest: shared.FinishRequest{Attempt: 1, Chunks: []shared.Chunk{}, ExitCode: exitCode(0)}}}},
	} {
		t.Run(name, func(t *testing.T) {
			b := b.with(t)
			b.wantError(b.do(http.MethodPost, shared.AgentPathReports, b.NodeA.Token, req), http.StatusBadRequest, "invalid_field")
			if got := b.get(b.Alice, rec.ID).Status; got != shared.StatusQueued {
				t.Errorf("status %s after a refused request, want queued", got)
			}
		})
	}
}

// countingTransport counts the requests to one path.
type countingTransport struct {
	path string
	n    atomic.Int64
	next http.RoundTripper
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == c.path {
		c.n.Add(1)
	}
	return c.next.RoundTrip(r)
}

// TestBatchingClientSendsTogether: the agent's client sends the starts of
// commands started at once in fewer requests than commands, and each caller
// gets its own answer: a stale lease's start is refused as lease_lost, as
// the per-command route would refuse it.
func TestBatchingClientSendsTogether(t *testing.T) {
	t.Parallel()
	b := setup(t)
	counter := &countingTransport{path: shared.AgentPathReports, next: b.client.Transport}
	c, err := client.New(client.Config{BaseURL: b.URL, Token: b.NodeA.Token, Transport: counter})
	if err != nil {
		t.Fatal(err)
	}
	bc := client.NewBatching(c)
	const n = 12
	for range n {
		b.submit(b.Alice, b.NodeA.Container, "true")
	}
	// All at once: the test's lease TTL is short.
	var leased []shared.LeasedCommand
	for len(leased) < n {
		leased = append(leased, b.leaseAt(b.URL, b.NodeA, n-len(leased), 1000).Commands...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, lc := range leased {
		attempt := lc.Attempt
		if i == 0 {
			attempt++ // stale
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = bc.Start(ctx, lc.ID, attempt)
		}()
	}
	wg.Wait()
	if !client.HasCode(errs[0], shared.CodeLeaseLost) || !client.IsRejected(errs[0]) {
		t.Errorf("stale start: %v, want a lease_lost refusal", errs[0])
	}
	for i, err := range errs[1:] {
		if err != nil {
			t.Errorf("start %d: %v", i+1, err)
		}
	}
	if got := counter.n.Load(); got >= n || got == 0 {
		t.Errorf("%d reports requests for %d starts, want fewer (and at least one)", got, n)
	}
	// Finishes go the same way.
	for i, lc := range leased[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := bc.Finish(ctx, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0),
				StdoutLength: 1, Chunks: []shared.Chunk{stdout(0, string(rune('a'+i)))}})
			if err != nil || resp.Status != shared.StatusSucceeded {
				t.Errorf("finish %d: %+v, %v", i+1, resp, err)
			}
		}()
	}
	wg.Wait()
	for i, lc := range leased[1:] {
		if got := b.get(b.Alice, lc.ID); got.Stdout != string(rune('a'+i)) {
			t.Errorf("command %d: stdout %q", i+1, got.Stdout)
		}
	}
	t.Logf("%d reports requests for %d starts and %d finishes", counter.n.Load(), n, n-1)
}
