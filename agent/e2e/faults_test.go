package e2e_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

// TestAgentKilledWhileRunning: SIGKILL the agent while a command runs. With
// no heartbeats the reaper fails the command with an "agent lost" line within
// lease TTL + grace + reap interval (3s + 3s + 0.2s here; the test allows 30s
// for a loaded machine) and it is never run again, even once an agent is back;
// the new agent kills the program the dead one left running.
func TestAgentKilledWhileRunning(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{leaseTTL: 3 * time.Second})
	c := s.container()
	a := s.startAgent()
	s.waitReported(c)

	rec := s.submit(c.ID, "sh", "-c", "echo started >> /tmp/runs.log; echo started; sleep 600")
	s.waitStatus(rec.ID, shared.StatusRunning, 30*time.Second)
	// Running means the agent was told yes; wait until the program is truly
	// under way in the container before pulling the plug.
	s.eventually(30*time.Second, "the command to start in the container", func() bool {
		return containerRuns(t, c.Root, c.ID, "sleep 600")
	})
	a.kill()
	killed := time.Now()

	got := s.waitStatus(rec.ID, shared.StatusFailed, 30*time.Second)
	t.Logf("failed %s after the agent was killed", time.Since(killed).Round(100*time.Millisecond))
	if !strings.Contains(got.Stderr, "agent lost") {
		t.Fatalf("stderr %q lacks the agent lost line", got.Stderr)
	}
	if got.ExitCode != nil {
		t.Fatalf("exit_code %d for a command whose exit is unknown", *got.ExitCode)
	}

	// A new agent must not pick it up again, and ends the orphaned program
	// its predecessor left in the container.
	s.startAgent()
	s.eventually(30*time.Second, "the orphaned program to be ended", func() bool {
		return !containerRuns(t, c.Root, c.ID, "sleep 600")
	})
	probe := s.submit(c.ID, "true")
	s.wait(probe.ID, time.Minute)
	if got := s.get(rec.ID); got.Status != shared.StatusFailed {
		t.Fatalf("status changed to %s after the agent came back", got.Status)
	}
	raw, _ := os.ReadFile(filepath.Join(c.Rootfs, "tmp", "runs.log"))
	if n := strings.Count(string(raw), "started"); n != 1 {
		t.Fatalf("the command started %d times, want once", n)
	}
}

// TestLeasedNotStartedRunsOnceAfterRestart: an agent that leased a command
// and died before starting it. The lease expires, the command goes back to
// the queue and the restarted agent runs it exactly once. The dead agent's
// lease is taken with the node's own token over the protocol, which is what
// an agent killed between lease and start leaves behind.
func TestLeasedNotStartedRunsOnceAfterRestart(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{leaseTTL: 3 * time.Second})
	c := s.container()
	a := s.startAgent()
	s.waitReported(c)
	a.kill()

	rec := s.submit(c.ID, "sh", "-c", "echo ran >> /tmp/once.log")
	var lease shared.LeaseResponse
	if code := s.do("POST", shared.AgentPathLease, s.nodeToken, shared.LeaseRequest{Max: 1}, &lease); code != http.StatusOK || len(lease.Commands) != 1 {
		t.Fatalf("lease as the dying agent: status %d, %+v", code, lease)
	}
	if got := s.get(rec.ID); got.Status != shared.StatusQueued {
		t.Fatalf("leased, not started command shows %s, want queued", got.Status)
	}

	s.startAgent()
	got := s.wait(rec.ID, time.Minute)
	if got.Status != shared.StatusSucceeded {
		t.Fatalf("status %s stderr %q", got.Status, got.Stderr)
	}
	// The old lease's start is refused: at most once.
	code := s.do("POST", shared.AgentPathCommands+rec.ID+"/start", s.nodeToken, shared.StartRequest{Attempt: lease.Commands[0].Attempt}, nil)
	if code != http.StatusConflict {
		t.Fatalf("start with the dead agent's lease: status %d, want 409", code)
	}
	raw, _ := os.ReadFile(filepath.Join(c.Rootfs, "tmp", "once.log"))
	if string(raw) != "ran\n" {
		t.Fatalf("once.log = %q, want exactly one run", raw)
	}
}

// TestCoordinatorRestartWhileStreaming: the coordinator is SIGKILLed and
// restarted while a command streams output; the agent keeps the command
// running, buffers, resends from the right offsets, and the record's output is
// complete and in order.
func TestCoordinatorRestartWhileStreaming(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{leaseTTL: 15 * time.Second, heartbeat: time.Second})
	c := s.container()
	s.startAgent()
	s.waitReported(c)

	const lines = 80
	rec := s.submit(c.ID, "sh", "-c", fmt.Sprintf("i=0; while [ $i -lt %d ]; do echo line $i; i=$((i+1)); sleep 0.05; done", lines))
	s.waitStatus(rec.ID, shared.StatusRunning, 30*time.Second)
	time.Sleep(time.Second) // let some output reach the coordinator
	s.coord.kill()
	time.Sleep(2 * time.Second) // the command keeps printing meanwhile
	s.startCoordinator()

	got := s.wait(rec.ID, 2*time.Minute)
	var want strings.Builder
	for i := range lines {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if got.Status != shared.StatusSucceeded || got.Stdout != want.String() {
		t.Fatalf("status %s; stdout %q; want every line once, in order", got.Status, got.Stdout)
	}
}

// TestSigtermDrain: on SIGTERM the agent stops leasing, lets the running
// command finish while heartbeating, reports it and exits 0.
func TestSigtermDrain(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	a := s.startAgent("--grace", "60s")
	s.waitReported(c)

	rec := s.submit(c.ID, "sh", "-c", "sleep 4; echo finished")
	s.waitStatus(rec.ID, shared.StatusRunning, 30*time.Second)
	a.signal(syscall.SIGTERM)
	// Submitted after SIGTERM: must not be taken by the draining agent.
	later := s.submit(c.ID, "echo", "later")

	a.wantCleanExit("after the drain")
	got := s.get(rec.ID)
	if got.Status != shared.StatusSucceeded || got.Stdout != "finished\n" {
		t.Fatalf("drained command: status %s stdout %q stderr %q", got.Status, got.Stdout, got.Stderr)
	}
	if got := s.get(later.ID); got.Status != shared.StatusQueued {
		t.Fatalf("command submitted during the drain is %s, want queued", got.Status)
	}
}

// TestSigtermGraceExpires: a command that outlives the grace period is ended
// (its real process signalled through runc's pid file, not runc exec killed)
// and reported failed with the reason; the agent still exits 0.
func TestSigtermGraceExpires(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	a := s.startAgent("--grace", "1s")
	s.waitReported(c)

	rec := s.submit(c.ID, "sh", "-c", "echo begun; sleep 600")
	s.waitStatus(rec.ID, shared.StatusRunning, 30*time.Second)
	a.signal(syscall.SIGTERM)
	a.wantCleanExit("after ending the command")
	got := s.get(rec.ID)
	if got.Status != shared.StatusFailed || !strings.Contains(got.Stderr, "execq") || !strings.Contains(got.Stdout, "begun") {
		t.Fatalf("want failed with an execq reason and the output so far; got %+v", got)
	}
	// The program itself is gone from the container, not orphaned.
	s.eventually(10*time.Second, "sleep 600 gone from the container", func() bool {
		return !containerRuns(t, c.Root, c.ID, "sleep 600")
	})
}

// TestSecondSignalEndsCommands: a second SIGTERM during the drain ends the
// commands at once instead of waiting for the grace period.
func TestSecondSignalEndsCommands(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	a := s.startAgent("--grace", "10m")
	s.waitReported(c)

	rec := s.submit(c.ID, "sleep", "600")
	s.waitStatus(rec.ID, shared.StatusRunning, 30*time.Second)
	a.signal(syscall.SIGTERM)
	time.Sleep(500 * time.Millisecond)
	a.signal(syscall.SIGTERM)
	a.wantCleanExit("after a second signal")
	if got := s.get(rec.ID); got.Status != shared.StatusFailed || !strings.Contains(got.Stderr, "execq") {
		t.Fatalf("want failed with a reason, got %+v", got)
	}
}
