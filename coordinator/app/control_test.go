package app_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// TestControlPollWokenAcrossReplicas parks an agent's control poll on one
// replica and cancels through the other: the poll answers with the order,
// the heartbeat answer carries it too, and the finish writes who cancelled
// and the signal.
func TestControlPollWokenAcrossReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := startReplica(t, b.DBURL)
	waitListeners(t, b.DB, 2)
	lc := b.run("sleep", "600")

	// Nothing to stop: the poll parks, then answers empty.
	var empty shared.ControlResponse
	b.mustJSON(b.URL, http.MethodPost, shared.AgentPathControl, b.NodeA.Token, shared.ControlRequest{WaitMillis: 50}, http.StatusOK, &empty)
	if len(empty.Cancels) != 0 {
		t.Fatalf("control answer without a cancel: %+v", empty)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan shared.ControlResponse, 1)
	go func() {
		var resp shared.ControlResponse
		r, err := b.request(ctx, b.URL, http.MethodPost, shared.AgentPathControl, b.NodeA.Token, shared.ControlRequest{WaitMillis: 60000})
		if err == nil {
			_ = json.Unmarshal(r.Body, &resp)
		}
		got <- resp
	}()
	eventually(t, within, func() bool { return b.App.Notifier.Parked(store.ControlChannel) == 1 }, "control poll parked")

	// bob may not; an admin may.
	b.wantError(b.doAt(other.URL, http.MethodPost, commandPath(lc.ID)+"/cancel", b.Bob.Token, nil), http.StatusNotFound, "not_found")
	var rec shared.CommandExecutionRecord
	b.mustJSON(other.URL, http.MethodPost, commandPath(lc.ID)+"/cancel", b.Root.Token, map[string]int{"grace_seconds": 3}, http.StatusAccepted, &rec)
	if rec.Status != shared.StatusRunning || rec.CancelRequestedAt == nil || rec.EndReason != nil {
		t.Fatalf("record after cancel: %+v", rec)
	}
	resp := <-got
	if len(resp.Cancels) != 1 || resp.Cancels[0] != (shared.CancelOrder{CommandID: lc.ID, Attempt: lc.Attempt, GraceSeconds: 3}) {
		t.Fatalf("control answer %+v, want the cancel order", resp)
	}
	// An order the agent knows is not repeated.
	b.mustJSON(b.URL, http.MethodPost, shared.AgentPathControl, b.NodeA.Token,
		shared.ControlRequest{WaitMillis: 50, Known: []string{lc.ID}}, http.StatusOK, &empty)
	if len(empty.Cancels) != 0 {
		t.Fatalf("known order repeated: %+v", empty)
	}
	// Node B has nothing to stop.
	b.mustJSON(b.URL, http.MethodPost, shared.AgentPathControl, b.NodeB.Token, shared.ControlRequest{}, http.StatusOK, &empty)
	if len(empty.Cancels) != 0 {
		t.Fatalf("another node got the order: %+v", empty)
	}
	if hb := b.heartbeat(b.NodeA, lc); !hb.Cancel || hb.CancelGraceSeconds != 3 {
		t.Fatalf("heartbeat answer %+v, want cancel", hb)
	}

	b.wantError(b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(143), EndReason: "bored"}, lc.ID),
		http.StatusBadRequest, "invalid_field")
	b.wantError(b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(143), Signal: "SIGSTOP"}, lc.ID),
		http.StatusBadRequest, "invalid_field")
	b.mustJSON(b.URL, http.MethodPost, agentCommandPath(lc.ID, "finish"), b.NodeA.Token,
		shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(143), EndReason: shared.EndCancelled, Signal: "SIGTERM"}, http.StatusOK, nil)
	done := b.get(b.Alice, lc.ID)
	if done.Status != shared.StatusFailed || done.EndReason == nil || *done.EndReason != shared.EndCancelled ||
		done.Signal == nil || *done.Signal != "SIGTERM" || !strings.HasPrefix(done.Stderr, "execq: cancelled by root") {
		t.Fatalf("cancelled record: %+v", done)
	}
	r := b.doAt(b.URL, http.MethodPost, commandPath(lc.ID)+"/cancel", b.Alice.Token, nil)
	b.wantError(r, http.StatusConflict, "already_finished")
	if !strings.Contains(string(r.Body), `"status":"failed"`) {
		t.Errorf("409 body %s: want the current status", r.Body)
	}
}

// TestCancelLeasedBeforeStart: a command leased by an agent that has not
// started it is cancelled at once, and the agent's start is refused with
// "cancelled", so it never runs.
func TestCancelLeasedBeforeStart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec := b.submit(b.Alice, b.NodeA.Container, "touch", "/tmp/ran")
	lc := b.leaseCommand(b.NodeA, rec.ID)
	var got shared.CommandExecutionRecord
	b.mustJSON(b.URL, http.MethodPost, commandPath(rec.ID)+"/cancel", b.Alice.Token, "", http.StatusOK, &got)
	if got.Status != shared.StatusCancelled || got.EndReason == nil || *got.EndReason != shared.EndCancelled || got.StartedAt != nil {
		t.Fatalf("cancel of a leased command: %+v", got)
	}
	b.wantError(b.agent(b.NodeA, rec.ID, "start", shared.StartRequest{Attempt: lc.Attempt}), http.StatusConflict, shared.CodeCancelled)
	if got := b.get(b.Alice, rec.ID); got.Status != shared.StatusCancelled {
		t.Fatalf("after the refused start: %s", got.Status)
	}
}

// TestTimeoutBackstop: an agent that keeps heartbeating but never stops a
// command past its timeout has it failed by the reaper (timed_out) once
// timeout + grace + lease TTL have passed, and its next heartbeat is refused,
// which makes a real agent stop the program.
func TestTimeoutBackstop(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.DefaultGrace = 0 }))
	var rec shared.CommandExecutionRecord
	b.mustJSON(b.URL, http.MethodPost, submitPath(b.NodeA.Container), b.Alice.Token,
		shared.SubmitRequest{Program: "sleep", Args: []string{"600"}, TimeoutSeconds: shared.Secs(1)}, http.StatusAccepted, &rec)
	lc := b.leaseCommand(b.NodeA, rec.ID)
	if lc.TimeoutSeconds != 1 || lc.GraceSeconds != 0 {
		t.Fatalf("lease limits: timeout %d grace %d", lc.TimeoutSeconds, lc.GraceSeconds)
	}
	b.start(b.NodeA, lc)
	var last response
	eventually(t, within, func() bool {
		last = b.agent(b.NodeA, lc.ID, "heartbeat", shared.HeartbeatRequest{Attempt: lc.Attempt})
		if last.Status == http.StatusOK {
			time.Sleep(200 * time.Millisecond)
			return false
		}
		return true
	}, "heartbeat refused after the timeout backstop")
	b.wantError(last, http.StatusConflict, shared.CodeLeaseLost)
	got := b.get(b.Alice, rec.ID)
	if got.Status != shared.StatusFailed || got.EndReason == nil || *got.EndReason != shared.EndTimedOut ||
		!strings.HasPrefix(got.Stderr, "execq: timed out after 1 s") {
		t.Fatalf("backstopped record: %+v", got)
	}
}
