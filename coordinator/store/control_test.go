package store

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

func TestCancelQueuedRefusesStart(t *testing.T) {
	t.Parallel()
	f := setup(t)
	idle := f.enqueue("true")
	bob, _, err := f.st.CreateUser(f.ctx, "bob", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.st.Cancel(f.ctx, idle.ID, bob, 5); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another user's cancel: %v, want ErrNotFound", err)
	}
	c, res, err := f.st.Cancel(f.ctx, idle.ID, f.user, 5)
	if err != nil || res != CancelledQueued || c.Status != shared.StatusCancelled || c.EndReason.String != "cancelled" {
		t.Fatalf("cancel queued: %v %v %+v", res, err, c.Command)
	}
	if !strings.Contains(string(c.Stderr), "execq: cancelled by alice") || !c.CancelRequestedAt.Valid {
		t.Errorf("cancelled record stderr %q, cancel at %v", c.Stderr, c.CancelRequestedAt)
	}
	// Leased but not started: the holder is told "cancelled" at start.
	f.enqueue("true")
	leased := f.claimOne()
	if _, res, err := f.st.Cancel(f.ctx, leased.ID, f.user, 5); err != nil || res != CancelledQueued {
		t.Fatalf("cancel leased: %v %v", res, err)
	}
	if _, err := f.st.Start(f.ctx, leased.ID, f.node.ID, leased.Attempt, testTTL); !errors.Is(err, ErrCancelled) {
		t.Errorf("start of a cancelled lease: %v, want ErrCancelled", err)
	}
	// Terminal: nothing changes.
	if c, res, err := f.st.Cancel(f.ctx, leased.ID, f.user, 5); err != nil || res != AlreadyFinished || c.Status != shared.StatusCancelled {
		t.Errorf("cancel again: %v %v %s", res, err, c.Status)
	}
}

func TestCancelRunning(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	other := f.running()
	if got, err := f.st.PendingCancels(f.ctx, f.node.ID); err != nil || len(got) != 0 {
		t.Fatalf("pending before any cancel: %v %v", got, err)
	}
	rec, res, err := f.st.Cancel(f.ctx, c.ID, f.user, 7)
	if err != nil || res != CancelRequested || rec.Status != shared.StatusRunning {
		t.Fatalf("cancel running: %v %v %s", res, err, rec.Status)
	}
	// A second request keeps the first grace.
	if _, res, err := f.st.Cancel(f.ctx, c.ID, f.user, 1); err != nil || res != CancelRequested {
		t.Fatalf("cancel again: %v %v", res, err)
	}
	got, err := f.st.PendingCancels(f.ctx, f.node.ID)
	if err != nil || len(got) != 1 || got[0] != (shared.CancelOrder{CommandID: c.ID, Attempt: c.Attempt, GraceSeconds: 7}) {
		t.Fatalf("pending cancels %+v %v", got, err)
	}
	rn, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, nil, testTTL, testCap)
	if err != nil || !rn.Cancel || rn.CancelGrace != 7 {
		t.Fatalf("heartbeat answer %+v %v, want cancel with grace 7", rn, err)
	}
	if rn, err := f.st.Heartbeat(f.ctx, other.ID, f.node.ID, other.Attempt, nil, testTTL, testCap); err != nil || rn.Cancel {
		t.Fatalf("uncancelled heartbeat %+v %v", rn, err)
	}
	code := 137
	fin, err := f.st.Finish(f.ctx, c.ID, f.node.ID, shared.FinishRequest{Attempt: c.Attempt, ExitCode: &code,
		EndReason: shared.EndCancelled, Signal: "SIGKILL"}, testCap)
	if err != nil || fin.Status != shared.StatusFailed {
		t.Fatalf("finish cancelled: %+v %v", fin, err)
	}
	done := f.get(c.ID)
	if done.EndReason.String != "cancelled" || done.EndSignal.String != "SIGKILL" ||
		!strings.Contains(string(done.Stderr), "execq: cancelled by alice") || !strings.Contains(string(done.Stderr), "SIGKILL") {
		t.Errorf("cancelled run: reason %v signal %v stderr %q", done.EndReason, done.EndSignal, done.Stderr)
	}
	if got, _ := f.st.PendingCancels(f.ctx, f.node.ID); len(got) != 0 {
		t.Errorf("a finished command is still pending cancel: %+v", got)
	}
}

func TestFinishEndReasons(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, tc := range []struct {
		req    shared.FinishRequest
		status shared.Status
		reason shared.EndReason
		signal string
	}{
		{shared.FinishRequest{ExitCode: ptr(0)}, shared.StatusSucceeded, shared.EndExited, ""},
		{shared.FinishRequest{ExitCode: ptr(3)}, shared.StatusFailed, shared.EndExited, ""},
		{shared.FinishRequest{ExitCode: ptr(137)}, shared.StatusFailed, shared.EndKilled, "SIGKILL"},
		{shared.FinishRequest{Error: "no such program"}, shared.StatusFailed, shared.EndExecError, ""},
		{shared.FinishRequest{Error: "agent shut down", EndReason: shared.EndAgentLost}, shared.StatusFailed, shared.EndAgentLost, ""},
		{shared.FinishRequest{ExitCode: ptr(143), EndReason: shared.EndTimedOut, Signal: "SIGTERM"}, shared.StatusFailed, shared.EndTimedOut, "SIGTERM"},
		{shared.FinishRequest{EndReason: shared.EndCancelled}, shared.StatusCancelled, shared.EndCancelled, ""},
		{shared.FinishRequest{EndReason: shared.EndCancelled, Error: "runc exec was killed"}, shared.StatusFailed, shared.EndCancelled, ""},
	} {
		c := f.running()
		tc.req.Attempt = c.Attempt
		res, err := f.st.Finish(f.ctx, c.ID, f.node.ID, tc.req, testCap)
		got := f.get(c.ID)
		if err != nil || res.Status != tc.status || got.EndReason.String != string(tc.reason) || got.EndSignal.String != tc.signal {
			t.Errorf("finish %+v: %s %v, reason %q signal %q; want %s %s %q", tc.req, res.Status, err,
				got.EndReason.String, got.EndSignal.String, tc.status, tc.reason, tc.signal)
		}
	}
}

func ptr(n int) *int { return &n }

func TestFailNotPickedUpAndTimedOut(t *testing.T) {
	t.Parallel()
	f := setup(t)
	req := shared.SubmitRequest{Program: "true", Args: []string{}, TimeoutSeconds: shared.Secs(2), QueueTimeoutSeconds: shared.Secs(60)}
	stale, err := f.st.Enqueue(f.ctx, f.container, f.user.ID, req)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := f.st.Enqueue(f.ctx, f.container, f.user.ID, req)
	if err != nil {
		t.Fatal(err)
	}
	f.exec(`UPDATE commands SET queue_deadline = now() - interval '1 second' WHERE id = $1`, stale.ID)
	// Past its queue deadline a lease cannot start it.
	cs, err := f.st.Claim(f.ctx, f.node.ID, 2, testTTL)
	if err != nil || len(cs) != 2 {
		t.Fatalf("claim: %v %v", cs, err)
	}
	if _, err := f.st.Start(f.ctx, stale.ID, f.node.ID, 1, testTTL); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("start past the queue deadline: %v, want ErrLeaseLost", err)
	}
	ids, err := f.st.FailNotPickedUp(f.ctx, 10)
	if err != nil || len(ids) != 1 || ids[0] != stale.ID {
		t.Fatalf("not picked up: %v %v", ids, err)
	}
	got := f.get(stale.ID)
	if got.Status != shared.StatusFailed || got.EndReason.String != "not_picked_up" || !strings.Contains(string(got.Stderr), "execq: not picked up") {
		t.Errorf("not picked up record: %s %v %q", got.Status, got.EndReason, got.Stderr)
	}

	if _, err := f.st.Start(f.ctx, fresh.ID, f.node.ID, 1, testTTL); err != nil {
		t.Fatal(err)
	}
	if ids, err := f.st.FailTimedOut(f.ctx, time.Second, 10); err != nil || len(ids) != 0 {
		t.Fatalf("timed out too early: %v %v", ids, err)
	}
	f.exec(`UPDATE commands SET run_deadline = now() - interval '2 seconds' WHERE id = $1`, fresh.ID)
	ids, err = f.st.FailTimedOut(f.ctx, time.Second, 10)
	if err != nil || len(ids) != 1 {
		t.Fatalf("timed out: %v %v", ids, err)
	}
	got = f.get(fresh.ID)
	if got.Status != shared.StatusFailed || got.EndReason.String != "timed_out" || !strings.Contains(string(got.Stderr), "execq: timed out after 2 s") || got.LeasedBy.Valid {
		t.Errorf("timed out record: %s %v %q leased %v", got.Status, got.EndReason, got.Stderr, got.LeasedBy)
	}
	// The agent, if still there, is refused.
	if _, err := f.st.Heartbeat(f.ctx, fresh.ID, f.node.ID, 1, nil, testTTL, testCap); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("heartbeat after the backstop: %v, want ErrLeaseLost", err)
	}
}
