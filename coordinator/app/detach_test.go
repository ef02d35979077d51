package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptrace"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

// handlerGoroutines counts the goroutines inside the lease handler.
func handlerGoroutines(t *testing.T) int {
	t.Helper()
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 2); err != nil {
		t.Fatal(err)
	}
	n := 0
	for g := range strings.SplitSeq(buf.String(), "\n\n") {
		if strings.Contains(g, "coordinator/api.(*Server).lease(") {
			n++
		}
	}
	return n
}

// TestParkedPollHoldsNoGoroutine: a long-poll parked with nothing to claim
// lets go of its handler (and the memory net/http holds for a request in
// flight), is still woken by an enqueue for its node alone, and its answer
// comes on the same keep-alive connection, which serves the agent's next
// request.
func TestParkedPollHoldsNoGoroutine(t *testing.T) {
	b := setup(t)
	waitListeners(t, b.DB, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Node B's polls stay parked throughout.
	var others []<-chan pollResult
	for range 8 {
		others = append(others, b.parkPoll(ctx, b.URL, b.NodeB, parkedWait))
	}
	waitParked(t, b.App, 8)

	// Node A's agent: one connection, used for a request before its poll.
	tr := &http.Transport{MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	agent := &http.Client{Transport: tr}
	var conns []httptrace.GotConnInfo
	post := func(body any) (*http.Response, error) {
		js, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, b.URL+shared.AgentPathLease, bytes.NewReader(js))
		req.Header.Set("Authorization", "Bearer "+b.NodeA.Token)
		req.Header.Set("Content-Type", "application/json")
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(ci httptrace.GotConnInfo) { conns = append(conns, ci) }}))
		return agent.Do(req)
	}
	send := func(body any) *http.Response {
		t.Helper()
		resp, err := post(body)
		if err != nil {
			t.Fatalf("agent request: %v", err)
		}
		return resp
	}
	drain := func(resp *http.Response) {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	drain(send(shared.LeaseRequest{Max: 1}))

	answered := make(chan *http.Response, 1)
	go func() {
		resp, err := post(shared.LeaseRequest{Max: 1, WaitMillis: int(parkedWait.Milliseconds())})
		if err != nil {
			t.Errorf("node A's poll: %v", err)
			close(answered)
			return
		}
		answered <- resp
	}()
	waitParked(t, b.App, 9)
	eventually(t, wakeBound, func() bool { return handlerGoroutines(t) == 0 },
		"%d goroutines wait in the lease handler with 9 polls parked, want 0", handlerGoroutines(t))

	enqueued := time.Now()
	rec := b.submit(b.Alice, b.NodeA.Container, "id")
	select {
	case resp, ok := <-answered:
		if !ok {
			t.FailNow()
		}
		var lr shared.LeaseResponse
		err := json.NewDecoder(resp.Body).Decode(&lr)
		drain(resp)
		if err != nil || resp.StatusCode != http.StatusOK || len(lr.Commands) != 1 || lr.Commands[0].ID != rec.ID {
			t.Fatalf("node A's parked poll answered %d %+v (%v), want command %s", resp.StatusCode, lr, err, rec.ID)
		}
		if resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("answer's Content-Type %q", resp.Header.Get("Content-Type"))
		}
		if d := time.Since(enqueued); d > wakeBound {
			t.Fatalf("parked poll answered %s after the enqueue, want < %s", d, wakeBound)
		}
	case <-time.After(parkedWait):
		t.Fatal("node A's parked poll was not woken by its node's enqueue")
	}
	if got := b.App.Poller.Parked(); got != 8 {
		t.Fatalf("after node A's enqueue, %d polls parked, want node B's 8", got)
	}

	// The connection came back to the server: the next request reuses it.
	resp := send(shared.LeaseRequest{Max: 1})
	drain(resp)
	if resp.StatusCode != http.StatusOK || len(conns) != 3 || !conns[1].Reused || !conns[2].Reused || conns[2].Conn != conns[0].Conn {
		t.Fatalf("request after the parked poll: status %d, connections %+v; want the first one reused", resp.StatusCode, conns)
	}

	// Node B's agents leave; their polls end.
	cancel()
	for _, ch := range others {
		<-ch
	}
}

// TestParkedPollOfAGoneAgentClaimsNothing: an agent that closed its
// connection while its poll was parked gets no lease when its node is
// woken — the command stays queued for the next poll, not leased to nobody
// until its TTL runs out.
func TestParkedPollOfAGoneAgentClaimsNothing(t *testing.T) {
	b := setup(t)
	waitListeners(t, b.DB, 1)
	ctx, cancel := context.WithCancel(context.Background())
	gone := b.parkPoll(ctx, b.URL, b.NodeA, parkedWait)
	waitParked(t, b.App, 1)
	cancel() // the client closes its connection
	<-gone

	rec := b.submit(b.Alice, b.NodeA.Container, "id")
	eventually(t, within, func() bool { return b.App.Poller.Parked() == 0 }, "the gone agent's poll stayed parked after its node's enqueue")
	if n := b.count(`SELECT count(*) FROM commands WHERE id = $1 AND attempt = 0 AND leased_by IS NULL`, rec.ID); n != 1 {
		t.Fatalf("the command was leased for an agent that had left")
	}
	if lc := b.leaseCommand(b.NodeA, rec.ID); lc.Attempt != 1 {
		t.Fatalf("next poll got attempt %d, want 1", lc.Attempt)
	}
}
