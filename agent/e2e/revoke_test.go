package e2e_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

// TestNodeRevokedWhileRunning: `nodes revoke` while the node's agent runs a
// program that ignores SIGTERM. The agent's heartbeats answer 401, so it
// cannot renew the lease and stops the program itself; the record fails as
// agent lost. `nodes rotate-token` re-admits the node: an agent given the
// new token reports its containers again and runs commands.
func TestNodeRevokedWhileRunning(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{leaseTTL: 3 * time.Second, heartbeat: time.Second})
	c := s.container()
	a := s.startAgent("--kill-after", "1s")
	s.waitReported(c)

	rec := s.submit(c.ID, "sh", "-c", "trap '' TERM; echo started; while true; do sleep 1; done")
	s.waitStatus(rec.ID, shared.StatusRunning, 30*time.Second)
	s.eventually(30*time.Second, "the program to run in the container", func() bool {
		return containerRuns(t, c.Root, c.ID, "while true")
	})

	var revoked struct {
		Status         string `json:"status"`
		CommandsFailed int    `json:"commands_failed"`
	}
	s.admin(&revoked, "nodes", "revoke", "--name", "e2e-node")
	if revoked.Status != "revoked" || revoked.CommandsFailed != 0 {
		t.Fatalf("nodes revoke printed %+v; want revoked, the running command left to its lease", revoked)
	}
	// TTL + kill-after is 4s; the bound leaves room for a loaded machine.
	s.eventually(20*time.Second, "the program to be stopped after the revoke", func() bool {
		return !containerRuns(t, c.Root, c.ID, "while true")
	})
	if got := s.waitStatus(rec.ID, shared.StatusFailed, 30*time.Second); !strings.Contains(got.Stderr, "agent lost") {
		t.Fatalf("stderr %q lacks the agent lost line", got.Stderr)
	}
	if code := s.do(http.MethodPost, shared.AgentPathLease, s.nodeToken, shared.LeaseRequest{Max: 1}, nil); code != http.StatusUnauthorized {
		t.Fatalf("the revoked node's token: %d, want 401", code)
	}
	a.kill()

	var rotated struct{ Token string }
	s.admin(&rotated, "nodes", "rotate-token", "--name", "e2e-node")
	s.nodeToken = rotated.Token
	s.startAgent()
	s.waitReported(c)
	probe := s.submit(c.ID, "echo", "back")
	if got := s.wait(probe.ID, time.Minute); got.Status != shared.StatusSucceeded || got.Stdout != "back\n" {
		t.Fatalf("after rotate-token: status %s stdout %q stderr %q", got.Status, got.Stdout, got.Stderr)
	}
}
