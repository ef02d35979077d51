package e2e_test

import (
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

// TestExecCases runs the everyday cases through the whole stack: submit over
// REST, lease, runc exec in a real container, stream back, finish.
func TestExecCases(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	// A program whose path has a space, to show paths and args pass intact.
	c.WriteFile(t, "/opt/my tools/show args", []byte("#!/bin/sh\nfor a in \"$@\"; do printf '[%s]\\n' \"$a\"; done\n"), 0o755)
	c.WriteFile(t, "/opt/not-executable", []byte("#!/bin/sh\necho hi\n"), 0o644)
	s.startAgent("--concurrency", "4")
	s.waitReported(c)

	cases := []struct {
		name     string
		program  string
		args     []string
		status   shared.Status
		exit     *int
		stdout   string
		stderr   string // exact, unless stderrHas is set
		stderrIn string
	}{
		{name: "stdout", program: "echo", args: []string{"hello"}, status: shared.StatusSucceeded, exit: ptr(0), stdout: "hello\n"},
		{name: "stderr", program: "sh", args: []string{"-c", "echo oops >&2"}, status: shared.StatusSucceeded, exit: ptr(0), stderr: "oops\n"},
		{name: "interleaved", program: "sh", args: []string{"-c", "echo o1; echo e1 >&2; echo o2; echo e2 >&2"},
			status: shared.StatusSucceeded, exit: ptr(0), stdout: "o1\no2\n", stderr: "e1\ne2\n"},
		{name: "exit 1", program: "false", status: shared.StatusFailed, exit: ptr(1)},
		{name: "exit 3", program: "sh", args: []string{"-c", "exit 3"}, status: shared.StatusFailed, exit: ptr(3)},
		{name: "exit 255", program: "sh", args: []string{"-c", "echo bye; exit 255"}, status: shared.StatusFailed, exit: ptr(255), stdout: "bye\n"},
		{name: "not found", program: "/no/such/program", status: shared.StatusFailed, exit: nil, stderrIn: "/no/such/program"},
		{name: "not executable", program: "/opt/not-executable", status: shared.StatusFailed, exit: nil, stderrIn: "/opt/not-executable"},
		{name: "dash args", program: "printf", args: []string{"%s|%s|%s\n", "-n", "--version", "-"}, status: shared.StatusSucceeded, exit: ptr(0), stdout: "-n|--version|-\n"},
		{name: "dash program", program: "-x", status: shared.StatusFailed, exit: nil, stderrIn: "-x"},
		{name: "spaces", program: "/opt/my tools/show args", args: []string{"a b", " c ", ""}, status: shared.StatusSucceeded, exit: ptr(0), stdout: "[a b]\n[ c ]\n[]\n"},
		{name: "empty args", program: "pwd", status: shared.StatusSucceeded, exit: ptr(0), stdout: "/\n"},
	}
	ids := make([]string, len(cases))
	for i, tc := range cases {
		rec := s.submit(c.ID, tc.program, tc.args...)
		if rec.Args == nil {
			t.Fatalf("%s: args is null in the queued record", tc.name)
		}
		ids[i] = rec.ID
	}
	for i, tc := range cases {
		rec := s.wait(ids[i], time.Minute)
		t.Run(tc.name, func(t *testing.T) {
			if rec.Status != tc.status {
				t.Errorf("status %s, want %s (stderr %q)", rec.Status, tc.status, rec.Stderr)
			}
			if (rec.ExitCode == nil) != (tc.exit == nil) || (rec.ExitCode != nil && *rec.ExitCode != *tc.exit) {
				t.Errorf("exit_code %v, want %v", deref(rec.ExitCode), deref(tc.exit))
			}
			if rec.Stdout != tc.stdout {
				t.Errorf("stdout %q, want %q", rec.Stdout, tc.stdout)
			}
			if tc.stderrIn != "" {
				// An execution error: stderr says, in an execq line, why the
				// program never ran — unlike a program that exits 255 itself.
				if !strings.Contains(rec.Stderr, "execq") || !strings.Contains(rec.Stderr, tc.stderrIn) {
					t.Errorf("stderr %q does not explain the failure to run %s", rec.Stderr, tc.stderrIn)
				}
			} else if rec.Stderr != tc.stderr {
				t.Errorf("stderr %q, want %q", rec.Stderr, tc.stderr)
			}
			if rec.StartedAt == nil || rec.FinishedAt == nil {
				t.Errorf("started_at/finished_at missing: %+v", rec)
			}
		})
	}
}

// TestContainerGone: a command for a container that vanished after it was
// reported fails with an explanation, not a hang.
func TestContainerGone(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	a := s.startAgent()
	s.waitReported(c)
	// Stop the agent so the inventory still lists the container when the
	// command is submitted; the next agent finds it gone at exec time.
	a.kill()
	c.Remove(t)
	rec := s.submit(c.ID, "true")
	s.startAgent()
	got := s.wait(rec.ID, time.Minute)
	if got.Status != shared.StatusFailed || got.ExitCode != nil || !strings.Contains(got.Stderr, "execq") {
		t.Fatalf("want failed with an execq explanation, got %+v", got)
	}
}

func ptr(n int) *int { return &n }

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestHealthyRunLogsNoWarning: on a healthy stack, commands whose output is
// still being uploaded when they exit succeed without the agent logging a
// warning. (A heartbeat the agent cut short itself because the program
// ended is not a failed heartbeat.)
func TestHealthyRunLogsNoWarning(t *testing.T) {
	t.Parallel()
	// A TTL long enough that a busy test machine makes no call time out.
	s := newStack(t, stackOptions{leaseTTL: 15 * time.Second, heartbeat: time.Second})
	c := s.container()
	a := s.startAgent("--concurrency", "4", "--chunk-bytes", "1024")
	s.waitReported(c)

	var ids []string
	for range 12 {
		ids = append(ids, s.submit(c.ID, "seq", "1", "20000").ID)
	}
	for _, id := range ids {
		if got := s.wait(id, 2*time.Minute); got.Status != shared.StatusSucceeded || len(got.Stdout) != 108894 {
			t.Fatalf("status %s, %d stdout bytes, stderr %q", got.Status, len(got.Stdout), got.Stderr)
		}
	}
	for _, line := range strings.Split(a.out.String(), "\n") {
		if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			t.Errorf("healthy run logged: %s", line)
		}
	}
}
