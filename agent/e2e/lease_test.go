package e2e_test

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

// TestHungHeartbeatIsAbandoned: one heartbeat of a quiet command is swallowed
// by the network (sent, never answered). The agent must give up on it well
// within the lease TTL the coordinator announced (6s here) and heartbeat
// again, so the command is not reaped as "agent lost" and succeeds.
func TestHungHeartbeatIsAbandoned(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{leaseTTL: 6 * time.Second, heartbeat: 2 * time.Second})
	p := newFaultProxy(t, s.url(""))
	var once atomic.Bool
	p.holdWhen(func(r *http.Request) bool {
		return strings.HasSuffix(r.URL.Path, "/heartbeat") && once.CompareAndSwap(false, true)
	})
	c := s.container()
	s.startAgentAt(p.URL())
	s.waitReported(c)

	rec := s.submit(c.ID, "sh", "-c", "sleep 10; echo done")
	got := s.wait(rec.ID, time.Minute)
	if p.held.Load() != 1 {
		t.Fatalf("%d requests held, want the one heartbeat", p.held.Load())
	}
	if got.Status != shared.StatusSucceeded || got.Stdout != "done\n" {
		t.Fatalf("after one hung heartbeat: status %s stdout %q stderr %q; want succeeded", got.Status, got.Stdout, got.Stderr)
	}
}

// TestAgentFencesItselfWhenCutOff: the network between agent and coordinator
// swallows everything for longer than the lease TTL (3s). The coordinator
// fails the command as "agent lost"; the agent, which cannot hear that, must
// stop the program itself once it has not renewed the lease for the TTL
// (SIGTERM, then SIGKILL after --kill-after 1s), not when the network heals.
// Once it does heal, the agent takes new work.
func TestAgentFencesItselfWhenCutOff(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{leaseTTL: 3 * time.Second, heartbeat: time.Second})
	p := newFaultProxy(t, s.url(""))
	c := s.container()
	a := s.startAgentAt(p.URL(), "--kill-after", "1s")
	s.waitReported(c)

	rec := s.submit(c.ID, "sh", "-c", "trap '' TERM; echo started; while true; do sleep 1; done")
	s.waitStatus(rec.ID, shared.StatusRunning, 30*time.Second)
	s.eventually(30*time.Second, "the program to run in the container", func() bool {
		return containerRuns(t, c.Root, c.ID, "while true")
	})
	p.cut.Store(true)
	cut := time.Now()
	// TTL + kill-after is 4s; the bound leaves room for a loaded machine.
	s.eventually(20*time.Second, "the program to be stopped during the cut", func() bool {
		return !containerRuns(t, c.Root, c.ID, "while true")
	})
	t.Logf("program gone %s into the cut", time.Since(cut).Round(100*time.Millisecond))
	if !p.cut.Load() {
		t.Fatal("cut healed early")
	}
	if got := s.waitStatus(rec.ID, shared.StatusFailed, 30*time.Second); !strings.Contains(got.Stderr, "agent lost") {
		t.Fatalf("stderr %q lacks the agent lost line", got.Stderr)
	}
	if !strings.Contains(a.out.String(), "lease not renewed") {
		t.Fatal("the agent did not log that it stopped the command itself")
	}

	p.cut.Store(false)
	probe := s.submit(c.ID, "echo", "after")
	if got := s.wait(probe.ID, time.Minute); got.Status != shared.StatusSucceeded || got.Stdout != "after\n" {
		t.Fatalf("after the cut: status %s stdout %q stderr %q", got.Status, got.Stdout, got.Stderr)
	}
}
