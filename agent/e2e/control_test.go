package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

// call sends a JSON request (body may be a raw string) and returns the
// status and the raw answer.
func (s *stack) call(method, path, token string, body any) (int, []byte) {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, s.url(path), rd)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// cancel asks for a cancel and decodes the record of a 200 or 202.
func (s *stack) cancel(id string, body any) (int, shared.CommandExecutionRecord, []byte) {
	s.t.Helper()
	code, raw := s.call("POST", "/api/v1/commands/"+id+"/cancel", s.userToken, body)
	var rec shared.CommandExecutionRecord
	if code == http.StatusOK || code == http.StatusAccepted {
		if err := json.Unmarshal(raw, &rec); err != nil {
			s.t.Fatalf("cancel %s: decode %q: %v", id, raw, err)
		}
	}
	return code, rec, raw
}

// submitWith enqueues a command with a full submit body.
func (s *stack) submitWith(container string, req shared.SubmitRequest) shared.CommandExecutionRecord {
	s.t.Helper()
	var rec shared.CommandExecutionRecord
	if code := s.do("POST", "/api/v1/containers/"+container+"/commands", s.userToken, req, &rec); code != http.StatusAccepted {
		s.t.Fatalf("submit %+v: status %d", req, code)
	}
	return rec
}

func endReason(rec shared.CommandExecutionRecord) string {
	if rec.EndReason == nil {
		return "<null>"
	}
	return string(*rec.EndReason)
}

func signalOf(rec shared.CommandExecutionRecord) string {
	if rec.Signal == nil {
		return "<null>"
	}
	return *rec.Signal
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestCancelQueued: a queued command cancelled before any agent saw it is
// cancelled at once and never runs; a second cancel is 409 with the status;
// another user gets the 404 of an unknown ID; bad bodies change nothing.
func TestCancelQueued(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	agent := s.startAgent()
	s.waitReported(c)
	// The agent stops, so nothing is leased while the cancel is prepared.
	agent.signal(syscall.SIGTERM)
	agent.wantCleanExit("after SIGTERM with nothing running")

	rec := s.submit(c.ID, "sh", "-c", "echo ran >> /tmp/marks")
	var other struct{ Token string }
	s.admin(&other, "users", "create", "--name", "someone-else")
	if code, raw := s.call("POST", "/api/v1/commands/"+rec.ID+"/cancel", other.Token, nil); code != http.StatusNotFound {
		t.Errorf("another user's cancel: %d %s, want 404", code, raw)
	}
	for _, bad := range []string{`{"grace_seconds":-1}`, `{"grace_seconds":100000}`, `{"grace_seconds":null}`, `{"grace_seconds":"5"}`, `{"grace":5}`} {
		if code, raw := s.call("POST", "/api/v1/commands/"+rec.ID+"/cancel", s.userToken, bad); code != http.StatusBadRequest {
			t.Errorf("cancel with %s: %d %s, want 400", bad, code, raw)
		}
	}
	if got := s.get(rec.ID); got.Status != shared.StatusQueued {
		t.Fatalf("refused cancels changed the command: %s", got.Status)
	}

	code, got, raw := s.cancel(rec.ID, nil)
	if code != http.StatusOK || got.Status != shared.StatusCancelled || endReason(got) != "cancelled" || got.CancelRequestedBy == nil {
		t.Fatalf("cancel queued: %d %s", code, raw)
	}
	if !strings.HasPrefix(lastLine(got.Stderr), "execq: cancelled by e2e-user") {
		t.Errorf("cancelled stderr %q", got.Stderr)
	}
	code, _, raw = s.cancel(rec.ID, `{"grace_seconds":1}`)
	var conflict struct {
		Error  shared.ErrorDetail
		Status shared.Status
	}
	_ = json.Unmarshal(raw, &conflict)
	if code != http.StatusConflict || conflict.Error.Code != "already_finished" || conflict.Status != shared.StatusCancelled {
		t.Errorf("second cancel: %d %s, want 409 already_finished with status cancelled", code, raw)
	}
	if code, _, raw := s.cancel("00000000-0000-0000-0000-000000000000", nil); code != http.StatusNotFound {
		t.Errorf("cancel of an unknown ID: %d %s", code, raw)
	}

	// An agent now runs what is queued after it; the cancelled command never runs.
	s.startAgent()
	after := s.wait(s.submit(c.ID, "true").ID, 30*time.Second)
	if after.Status != shared.StatusSucceeded || endReason(after) != "exited" {
		t.Fatalf("command after the cancelled one: %+v", after)
	}
	if raw, err := os.ReadFile(filepath.Join(c.Rootfs, "tmp", "marks")); err == nil || len(raw) > 0 {
		t.Errorf("the cancelled command ran: marks %q (%v)", raw, err)
	}
}

// TestCancelRacingStart cancels commands the instant they are submitted to
// a running agent, so cancels land before the lease, between lease and
// start, and right after start. Whatever the interleaving, a command that
// ends cancelled never ran, a running one is stopped and says so, and
// nothing is left running.
func TestCancelRacingStart(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{env: []string{"EXECQ_DEFAULT_GRACE=1s"}})
	c := s.container()
	s.startAgent("--concurrency", "4")
	s.waitReported(c)
	const n = 20
	seen := map[int]int{}
	for i := range n {
		rec := s.submit(c.ID, "sh", "-c", fmt.Sprintf("echo ran >> /tmp/marks-%d; sleep 600", i))
		// Spread the cancels over the start: at once, and a few
		// milliseconds later (around the lease, the start, the exec).
		time.Sleep(time.Duration(i%5) * 3 * time.Millisecond)
		code, _, raw := s.cancel(rec.ID, nil)
		seen[code]++
		if code != http.StatusOK && code != http.StatusAccepted {
			t.Fatalf("cancel %d: %d %s", i, code, raw)
		}
		got := s.wait(rec.ID, 60*time.Second)
		marks, _ := os.ReadFile(filepath.Join(c.Rootfs, "tmp", fmt.Sprintf("marks-%d", i)))
		switch {
		case endReason(got) != "cancelled":
			t.Errorf("command %d ended %s/%s, want end_reason cancelled: %q", i, got.Status, endReason(got), got.Stderr)
		case got.Status == shared.StatusCancelled && len(marks) > 0:
			t.Errorf("command %d is cancelled (never started) but ran", i)
		case got.Status == shared.StatusFailed && !strings.HasPrefix(lastLine(got.Stderr), "execq: cancelled by e2e-user"):
			t.Errorf("command %d: stderr %q", i, got.Stderr)
		case got.Status != shared.StatusCancelled && got.Status != shared.StatusFailed:
			t.Errorf("command %d: status %s", i, got.Status)
		}
	}
	if containerRuns(t, c.Root, c.ID, "sleep 600") {
		t.Errorf("a cancelled program still runs in the container")
	}
	t.Logf("cancel answers: %v (200 = not started, 202 = running)", seen)
}

// TestCancelRunning: a running command gets SIGTERM on the real process,
// ends failed with end_reason cancelled, keeps the output it wrote, says in
// stderr who cancelled it and which signal ended it, and leaves no process
// in the container.
func TestCancelRunning(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	s.startAgent()
	s.waitReported(c)
	rec := s.submit(c.ID, "sh", "-c", "echo before; echo warn >&2; sleep 600")
	s.eventually(30*time.Second, "output before the cancel", func() bool {
		return s.get(rec.ID).Status == shared.StatusRunning && string(s.output(rec.ID, "stdout")) == "before\n"
	})
	if !containerRuns(t, c.Root, c.ID, "sleep 600") {
		t.Fatal("the program does not run in the container")
	}
	code, got, raw := s.cancel(rec.ID, `{"grace_seconds":5}`)
	if code != http.StatusAccepted || got.Status != shared.StatusRunning || got.CancelRequestedAt == nil {
		t.Fatalf("cancel running: %d %s", code, raw)
	}
	got = s.wait(rec.ID, 30*time.Second)
	if got.Status != shared.StatusFailed || endReason(got) != "cancelled" || signalOf(got) != "SIGTERM" {
		t.Fatalf("cancelled run: %s %s %s stderr %q", got.Status, endReason(got), signalOf(got), got.Stderr)
	}
	if got.Stdout != "before\n" || !strings.HasPrefix(got.Stderr, "warn\n") {
		t.Errorf("output up to the cancel lost: stdout %q stderr %q", got.Stdout, got.Stderr)
	}
	if l := lastLine(got.Stderr); !strings.HasPrefix(l, "execq: cancelled by e2e-user") || !strings.Contains(l, "SIGTERM") {
		t.Errorf("stderr's last line %q: want who cancelled and the signal", l)
	}
	if containerRuns(t, c.Root, c.ID, "sleep 600") {
		t.Errorf("the cancelled program still runs in the container")
	}
	if code, _, raw := s.cancel(rec.ID, nil); code != http.StatusConflict {
		t.Errorf("cancel after the end: %d %s, want 409", code, raw)
	}
}

// TestCancelWaits: POST …/cancel?wait= answers once the command is terminal.
func TestCancelWaits(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	s.startAgent()
	s.waitReported(c)
	rec := s.submit(c.ID, "sleep", "600")
	s.waitStatus(rec.ID, shared.StatusRunning, 30*time.Second)
	code, raw := s.call("POST", "/api/v1/commands/"+rec.ID+"/cancel?wait=20s", s.userToken, nil)
	var got shared.CommandExecutionRecord
	_ = json.Unmarshal(raw, &got)
	if code != http.StatusOK || got.Status != shared.StatusFailed || endReason(got) != "cancelled" {
		t.Fatalf("cancel ?wait=: %d %s", code, raw)
	}
}

// TestTimeout: `sleep 600` with timeout_seconds 2 is stopped by the agent
// (SIGTERM) and ends timed_out; a program that ignores SIGTERM is SIGKILLed
// after the grace. Neither leaves a process.
func TestTimeout(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{env: []string{"EXECQ_DEFAULT_GRACE=1s"}})
	c := s.container()
	s.startAgent()
	s.waitReported(c)

	for _, body := range []string{
		`{"program":"true","args":[],"timeout_seconds":0}`,
		`{"program":"true","args":[],"timeout_seconds":99999999}`,
		`{"program":"true","args":[],"timeout_seconds":null}`,
		`{"program":"true","args":[],"queue_timeout_seconds":-1}`,
	} {
		if got, raw := s.call("POST", "/api/v1/containers/"+c.ID+"/commands", s.userToken, body); got != http.StatusBadRequest {
			t.Errorf("submit %s: %d %s, want 400", body, got, raw)
		}
	}

	sleeper := s.submitWith(c.ID, shared.SubmitRequest{Program: "sleep", Args: []string{"600"}, TimeoutSeconds: shared.Secs(2)})
	if sleeper.TimeoutSeconds == nil || *sleeper.TimeoutSeconds != 2 || sleeper.QueueTimeoutSeconds == nil {
		t.Errorf("record limits: timeout %v queue %v", sleeper.TimeoutSeconds, sleeper.QueueTimeoutSeconds)
	}
	stubborn := s.submitWith(c.ID, shared.SubmitRequest{Program: "sh", TimeoutSeconds: shared.Secs(2),
		Args: []string{"-c", `trap "echo got TERM" TERM; echo ready; while true; do sleep 1; done`}})

	got := s.wait(sleeper.ID, 60*time.Second)
	if got.Status != shared.StatusFailed || endReason(got) != "timed_out" || signalOf(got) != "SIGTERM" ||
		!strings.HasPrefix(lastLine(got.Stderr), "execq: timed out after 2 s") {
		t.Errorf("sleep 600 with a 2 s timeout: %s %s %s stderr %q", got.Status, endReason(got), signalOf(got), got.Stderr)
	}
	got = s.wait(stubborn.ID, 60*time.Second)
	if got.Status != shared.StatusFailed || endReason(got) != "timed_out" || signalOf(got) != "SIGKILL" ||
		!strings.Contains(got.Stdout, "ready\n") || !strings.Contains(got.Stdout, "got TERM") {
		t.Errorf("SIGTERM-ignoring program: %s %s %s stdout %q stderr %q", got.Status, endReason(got), signalOf(got), got.Stdout, got.Stderr)
	}
	// (The container's init is sleep 3600.)
	if containerRuns(t, c.Root, c.ID, "sleep 600") || containerRuns(t, c.Root, c.ID, "sleep 1") || containerRuns(t, c.Root, c.ID, "got TERM") {
		t.Errorf("a timed-out program still runs in the container")
	}
}

// TestQueueTimeout: a command for a host whose agent is stopped ends
// failed, end_reason not_picked_up, after its queue timeout.
func TestQueueTimeout(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	agent := s.startAgent()
	s.waitReported(c)
	agent.signal(syscall.SIGTERM)
	agent.wantCleanExit("after SIGTERM with nothing running")

	rec := s.submitWith(c.ID, shared.SubmitRequest{Program: "sh", Args: []string{"-c", "echo ran >> /tmp/marks"}, QueueTimeoutSeconds: shared.Secs(1)})
	got := s.wait(rec.ID, 30*time.Second)
	if got.Status != shared.StatusFailed || endReason(got) != "not_picked_up" || got.StartedAt != nil ||
		!strings.HasPrefix(lastLine(got.Stderr), "execq: not picked up") {
		t.Fatalf("queue timeout: %s %s stderr %q", got.Status, endReason(got), got.Stderr)
	}
	// A restarted agent does not run it.
	s.startAgent()
	if after := s.wait(s.submit(c.ID, "true").ID, 30*time.Second); after.Status != shared.StatusSucceeded {
		t.Fatalf("command after restart: %s", after.Status)
	}
	if raw, err := os.ReadFile(filepath.Join(c.Rootfs, "tmp", "marks")); err == nil || len(raw) > 0 {
		t.Errorf("the command not picked up ran later: %q (%v)", raw, err)
	}
}

// TestEndReasons: a program that exits, one that cannot be started and one
// killed by a signal execq did not send each say so in end_reason.
func TestEndReasons(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	s.startAgent()
	s.waitReported(c)
	exited := s.submit(c.ID, "sh", "-c", "exit 3")
	missing := s.submit(c.ID, "/no/such/program")
	killed := s.submit(c.ID, "sh", "-c", "echo x; kill -KILL $$")
	if got := s.wait(exited.ID, 30*time.Second); endReason(got) != "exited" || got.ExitCode == nil || *got.ExitCode != 3 || got.Signal != nil {
		t.Errorf("exit 3: %s %s %v", got.Status, endReason(got), got.ExitCode)
	}
	if got := s.wait(missing.ID, 30*time.Second); got.Status != shared.StatusFailed || endReason(got) != "exec_error" {
		t.Errorf("missing program: %s %s %q", got.Status, endReason(got), got.Stderr)
	}
	got := s.wait(killed.ID, 30*time.Second)
	if got.Status != shared.StatusFailed || endReason(got) != "killed" || signalOf(got) != "SIGKILL" || got.Stdout != "x\n" ||
		!strings.HasPrefix(lastLine(got.Stderr), "execq: the program was killed by SIGKILL") {
		t.Errorf("killed: %s %s %s stdout %q stderr %q", got.Status, endReason(got), signalOf(got), got.Stdout, got.Stderr)
	}
}
