package app_test

import (
	"net/http"
	"testing"

	"github.com/execq/execq/shared"
)

// TestReleaseRequeuesAtOnce: an agent that leased a command but will not
// start it (it is shutting down) gives the lease back; the command is
// leasable again at once, without waiting out the TTL, and the released
// lease can no longer start it.
func TestReleaseRequeuesAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec := b.submit(b.Alice, b.NodeA.Container, "true")
	lc := b.leaseCommand(b.NodeA, rec.ID)

	// Another node may not release it.
	r := b.agent(b.NodeB, lc.ID, "release", shared.ReleaseRequest{Attempt: lc.Attempt})
	b.wantError(r, http.StatusForbidden, shared.CodeForbidden)

	for range 2 { // a repeat is harmless
		if r := b.agent(b.NodeA, lc.ID, "release", shared.ReleaseRequest{Attempt: lc.Attempt}); r.Status != http.StatusOK {
			t.Fatalf("release: %s", r)
		}
	}
	// Leasable again at once: the TTL (2s) has not passed, wait_ms 0.
	again := b.leaseAt(b.URL, b.NodeA, 1, 0)
	if len(again.Commands) != 1 || again.Commands[0].ID != rec.ID || again.Commands[0].Attempt != lc.Attempt+1 {
		t.Fatalf("lease after release: %+v, want %s with attempt %d", again.Commands, rec.ID, lc.Attempt+1)
	}
	// The released lease is dead: no start, no release of the new lease.
	r = b.agent(b.NodeA, lc.ID, "start", shared.StartRequest{Attempt: lc.Attempt})
	b.wantError(r, http.StatusConflict, shared.CodeLeaseLost)
	r = b.agent(b.NodeA, lc.ID, "release", shared.ReleaseRequest{Attempt: lc.Attempt})
	b.wantError(r, http.StatusConflict, shared.CodeLeaseLost)

	// A started command cannot be released: it may already be running.
	b.start(b.NodeA, again.Commands[0])
	r = b.agent(b.NodeA, lc.ID, "release", shared.ReleaseRequest{Attempt: again.Commands[0].Attempt})
	b.wantError(r, http.StatusConflict, shared.CodeLeaseLost)
	if got := b.get(b.Alice, rec.ID); got.Status != shared.StatusRunning {
		t.Fatalf("status %s after a refused release, want running", got.Status)
	}
}
