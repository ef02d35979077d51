package app_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/shared"
)

func TestLeaseOwnership(t *testing.T) {
	t.Parallel()
	b := setup(t)

	t.Run("another node is forbidden", func(t *testing.T) {
		b := b.with(t)
		rec := b.submit(b.Alice, b.NodeA.Container, "id")
		lc := b.leaseCommand(b.NodeA, rec.ID)
		// Node B quoting node A's lease exactly is still not node A.
		b.wantError(b.agent(b.NodeB, lc.ID, "start", shared.StartRequest{Attempt: lc.Attempt}), http.StatusForbidden, shared.CodeForbidden)
		b.start(b.NodeA, lc)
		before := b.snapshot()
		b.wantError(b.agent(b.NodeB, lc.ID, "heartbeat", shared.HeartbeatRequest{Attempt: lc.Attempt, Chunks: []shared.Chunk{stdout(0, "evil")}}),
			http.StatusForbidden, shared.CodeForbidden)
		b.wantError(b.finish(b.NodeB, shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0)}, lc.ID), http.StatusForbidden, shared.CodeForbidden)
		if after := b.snapshot(); after != before {
			t.Fatal("another node's requests changed the job table")
		}
		// Node B's poll never sees node A's commands.
		b.submit(b.Alice, b.NodeA.Container, "id")
		if resp := b.leaseAt(b.URL, b.NodeB, 100, 0); len(resp.Commands) != 0 {
			t.Fatalf("node B was handed %+v", resp.Commands)
		}
		b.heartbeat(b.NodeA, lc, stdout(0, "uid=0\n"))
		b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 6, ExitCode: exitCode(0)}, shared.StatusSucceeded)
		// Drain the second command so later subtests start from an empty queue.
		resp := b.leaseAt(b.URL, b.NodeA, 100, 0)
		if len(resp.Commands) != 1 {
			t.Fatalf("node A queue: %+v", resp.Commands)
		}
		drained := resp.Commands[0]
		b.start(b.NodeA, drained)
		b.finishOK(b.NodeA, drained.ID, shared.FinishRequest{Attempt: drained.Attempt, ExitCode: exitCode(0)}, shared.StatusSucceeded)
	})

	t.Run("unknown command is not found", func(t *testing.T) {
		b := b.with(t)
		id := uuid.NewString()
		b.wantError(b.agent(b.NodeA, id, "start", shared.StartRequest{Attempt: 1}), http.StatusNotFound, "not_found")
		b.wantError(b.agent(b.NodeA, id, "heartbeat", shared.HeartbeatRequest{Attempt: 1}), http.StatusNotFound, "not_found")
		b.wantError(b.finish(b.NodeA, shared.FinishRequest{Attempt: 1, ExitCode: exitCode(0)}, id), http.StatusNotFound, "not_found")
	})

	t.Run("start is idempotent for the same lease", func(t *testing.T) {
		b := b.with(t)
		rec := b.submit(b.Alice, b.NodeA.Container, "id")
		lc := b.leaseCommand(b.NodeA, rec.ID)
		b.start(b.NodeA, lc)
		started := b.get(b.Alice, rec.ID).StartedAt
		b.start(b.NodeA, lc)
		if again := b.get(b.Alice, rec.ID).StartedAt; !again.Equal(*started) {
			t.Fatalf("a repeated start moved started_at from %s to %s", started, again)
		}
		b.wantError(b.agent(b.NodeA, lc.ID, "start", shared.StartRequest{Attempt: lc.Attempt + 1}), http.StatusConflict, shared.CodeLeaseLost)
		// Attempts start at 1: 0 is no lease at all, refused as out of range.
		b.wantError(b.agent(b.NodeA, lc.ID, "start", shared.StartRequest{Attempt: 0}), http.StatusBadRequest, "invalid_field")
		b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0)}, shared.StatusSucceeded)
	})

	t.Run("heartbeats keep a running command alive", func(t *testing.T) {
		b := b.with(t)
		lc := b.run("sleep", "5")
		// Three lease TTLs of heartbeats at half the TTL: the reaper, running
		// every 100ms, must not touch it.
		end := time.Now().Add(3 * testLeaseTTL)
		var off int64
		for time.Now().Before(end) {
			hb := b.heartbeat(b.NodeA, lc, stdout(off, "."))
			off++
			if !hb.LeaseExpiresAt.After(time.Now()) {
				t.Fatalf("heartbeat answered an expired lease %s", hb.LeaseExpiresAt)
			}
			time.Sleep(testHeartbeat / 2)
		}
		if got := b.get(b.Alice, lc.ID); got.Status != shared.StatusRunning {
			t.Fatalf("heartbeated command became %s (stderr %q)", got.Status, got.Stderr)
		}
		b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: off, ExitCode: exitCode(0)}, shared.StatusSucceeded)
		if got := b.get(b.Alice, lc.ID); got.Stdout != strings.Repeat(".", int(off)) {
			t.Fatalf("stdout %q", got.Stdout)
		}
	})

	t.Run("expiry before start requeues with a new attempt", func(t *testing.T) {
		b := b.with(t)
		rec := b.submit(b.Alice, b.NodeA.Container, "id")
		old := b.leaseCommand(b.NodeA, rec.ID)
		// The reaper releases the lease and the command is queued as before.
		eventually(t, within, func() bool {
			return b.count(`SELECT count(*) FROM commands WHERE id = $1 AND status = 'queued' AND leased_by IS NULL`, rec.ID) == 1
		}, "the expired lease of %s was never released", rec.ID)
		if got := b.get(b.Alice, rec.ID); got.Status != shared.StatusQueued || got.StartedAt != nil {
			t.Fatalf("requeued record %+v", got)
		}
		b.wantError(b.agent(b.NodeA, rec.ID, "start", shared.StartRequest{Attempt: old.Attempt}), http.StatusConflict, shared.CodeLeaseLost)
		lc := b.leaseCommand(b.NodeA, rec.ID)
		if lc.Attempt != old.Attempt+1 {
			t.Fatalf("second lease has attempt %d, want %d", lc.Attempt, old.Attempt+1)
		}
		b.wantError(b.agent(b.NodeA, rec.ID, "start", shared.StartRequest{Attempt: old.Attempt}), http.StatusConflict, shared.CodeLeaseLost)
		b.start(b.NodeA, lc)
		b.wantError(b.finish(b.NodeA, shared.FinishRequest{Attempt: old.Attempt, ExitCode: exitCode(0)}, rec.ID), http.StatusConflict, shared.CodeLeaseLost)
		b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0)}, shared.StatusSucceeded)
	})

	t.Run("expiry after start fails as agent lost, never re-run", func(t *testing.T) {
		b := b.with(t)
		lc := b.run("sleep", "1000")
		b.heartbeat(b.NodeA, lc, stdout(0, "working\n"), stderr(0, "note\n"))
		// The agent stops heartbeating.
		got := b.waitStatus(b.Alice, lc.ID, shared.StatusFailed)
		if !strings.Contains(got.Stderr, "agent lost") || got.ExitCode != nil || got.FinishedAt == nil {
			t.Fatalf("lost command: %+v", got)
		}
		// What arrived before the loss is kept.
		if got.Stdout != "working\n" || !strings.HasPrefix(got.Stderr, "note\n") {
			t.Fatalf("output before the loss: stdout %q stderr %q", got.Stdout, got.Stderr)
		}
		if resp := b.leaseAt(b.URL, b.NodeA, 100, 200); len(resp.Commands) != 0 {
			t.Fatalf("a lost command was leased again: %+v", resp.Commands)
		}
		// The agent coming back is told its lease is gone.
		b.wantError(b.agent(b.NodeA, lc.ID, "heartbeat", shared.HeartbeatRequest{Attempt: lc.Attempt}), http.StatusConflict, shared.CodeLeaseLost)
		b.wantError(b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 8, StderrLength: 5, ExitCode: exitCode(0)}, lc.ID),
			http.StatusConflict, shared.CodeLeaseLost)
		b.wantError(b.agent(b.NodeA, lc.ID, "start", shared.StartRequest{Attempt: lc.Attempt}), http.StatusConflict, shared.CodeLeaseLost)
		if again := b.get(b.Alice, lc.ID); again.Status != shared.StatusFailed || again.Stderr != got.Stderr {
			t.Fatalf("record changed after the loss: %+v", again)
		}
	})
}

// TestLeaseExpiryWithoutReaper checks the lease conditions themselves, with
// the reaper out of the way.
func TestLeaseExpiryWithoutReaper(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.ReapInterval = time.Hour }))

	rec := b.submit(b.Alice, b.NodeA.Container, "id")
	old := b.leaseCommand(b.NodeA, rec.ID)
	b.waitLeaseExpired(rec.ID)
	b.wantError(b.agent(b.NodeA, rec.ID, "start", shared.StartRequest{Attempt: old.Attempt}), http.StatusConflict, shared.CodeLeaseLost)
	if got := b.get(b.Alice, rec.ID); got.Status != shared.StatusQueued {
		t.Fatalf("a refused start changed the status to %s", got.Status)
	}
	// The expired lease is claimable again.
	lc := b.leaseCommand(b.NodeA, rec.ID)
	if lc.Attempt != old.Attempt+1 {
		t.Fatalf("attempt %d, want %d", lc.Attempt, old.Attempt+1)
	}
	b.start(b.NodeA, lc)
	b.wantError(b.agent(b.NodeA, rec.ID, "start", shared.StartRequest{Attempt: old.Attempt}), http.StatusConflict, shared.CodeLeaseLost)
	// Running and expired but not yet reaped is still never handed out.
	b.waitLeaseExpired(rec.ID)
	if resp := b.leaseAt(b.URL, b.NodeA, 100, 0); len(resp.Commands) != 0 {
		t.Fatalf("an expired running command was leased again: %+v", resp.Commands)
	}
}
