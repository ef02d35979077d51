package runc_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/execq/execq/agent/runc"
	"github.com/execq/execq/agent/runc/runctest"
	"github.com/execq/execq/internal/syncbuf"
)

type execResult struct {
	stdout, stderr string
	res            runc.Result
	err            error
}

func execIn(t *testing.T, c *runctest.Container, program string, args ...string) execResult {
	t.Helper()
	var stdout, stderr syncbuf.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := c.Runner.Exec(ctx, runc.ExecConfig{ContainerID: c.ID, Program: program, Args: args, Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		return execResult{err: err}
	}
	res, err := p.Wait()
	return execResult{stdout: stdout.String(), stderr: stderr.String(), res: res, err: err}
}

func TestExecOutputAndExitCodes(t *testing.T) {
	c := runctest.Start(t, runctest.Options{Env: []string{"EXECQ_TEST=from-bundle"}, Cwd: "/tmp"})
	tests := []struct {
		name           string
		program        string
		args           []string
		stdout, stderr string
		code           int
	}{
		{"stdout", "echo", []string{"hello"}, "hello\n", "", 0},
		{"stderr", "sh", []string{"-c", "echo oops >&2"}, "", "oops\n", 0},
		{"both and exit 3", "sh", []string{"-c", "echo out; echo err >&2; exit 3"}, "out\n", "err\n", 3},
		{"exit 0", "sh", []string{"-c", "exit 0"}, "", "", 0},
		{"exit 1", "sh", []string{"-c", "exit 1"}, "", "", 1},
		{"exit 255", "sh", []string{"-c", "exit 255"}, "", "", 255},
		{"false", "false", nil, "", "", 1},
		{"no args", "true", nil, "", "", 0},
		{"empty string arg", "printf", []string{"[%s]", ""}, "[]", "", 0},
		{"dash args", "printf", []string{"%s\n", "-x", "--y", "--", "-n"}, "-x\n--y\n--\n-n\n", "", 0},
		{"dash args through sh", "/bin/sh", []string{"-c", `printf "%s\n" "$@"`, "sh", "-x", "--y"}, "-x\n--y\n", "", 0},
		{"spaces and quotes", "printf", []string{"[%s]\n", "a b", "  c ", `"q'`}, "[a b]\n[  c ]\n[\"q']\n", "", 0},
		{"absolute path", "/bin/echo", []string{"-n", "x"}, "x", "", 0},
		{"container env", "sh", []string{"-c", "echo $EXECQ_TEST"}, "from-bundle\n", "", 0},
		{"container cwd", "pwd", nil, "/tmp\n", "", 0},
		{"killed by signal", "sh", []string{"-c", "kill -9 $$"}, "", "", 137},
		{"looks like an execve failure but is not", "sh", []string{"-c", `echo "exec /bin/x: no such file or directory" >&2; exit 1`}, "", "exec /bin/x: no such file or directory\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := execIn(t, c, tt.program, tt.args...)
			if r.err != nil {
				t.Fatalf("unexpected error: %v", r.err)
			}
			if r.stdout != tt.stdout || r.stderr != tt.stderr || r.res.ExitCode != tt.code {
				t.Fatalf("got stdout %q stderr %q exit %d; want %q %q %d", r.stdout, r.stderr, r.res.ExitCode, tt.stdout, tt.stderr, tt.code)
			}
			if r.res.Pid <= 0 {
				t.Fatalf("no pid for a program that ran")
			}
		})
	}
}

func TestExecCannotStart(t *testing.T) {
	c := runctest.Start(t, runctest.Options{})
	c.WriteFile(t, "/bin/notexec", []byte("#!/bin/sh\necho hi\n"), 0o644)
	c.WriteFile(t, "/bin/garbage", []byte("not a binary\x00\x01"), 0o755)
	c.WriteFile(t, "/bin/badshebang", []byte("#!/no/such/interpreter\necho hi\n"), 0o755)
	tests := []struct {
		name    string
		program string
		reason  string // substring of runc's words
	}{
		{"not found", "no-such-program", "executable file not found"},
		{"not found absolute", "/usr/bin/nothere", "no such file or directory"},
		{"program beginning with dash", "--version", "executable file not found"},
		{"not executable", "/bin/notexec", "permission denied"},
		{"a directory", "/bin", "permission denied"},
		{"exec format error", "/bin/garbage", "exec format error"},
		{"missing interpreter", "/bin/badshebang", "no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := execIn(t, c, tt.program, "arg")
			var ee *runc.ExecError
			if !errors.As(r.err, &ee) {
				t.Fatalf("want *ExecError, got err %v (exit %d, stdout %q, stderr %q)", r.err, r.res.ExitCode, r.stdout, r.stderr)
			}
			if !strings.Contains(ee.Reason, tt.reason) || ee.Program != tt.program || ee.ContainerID != c.ID {
				t.Fatalf("ExecError %+v; want reason containing %q", ee, tt.reason)
			}
			if strings.Contains(r.stdout+r.stderr, "exec failed") {
				t.Fatalf("runc's own message leaked into the output: stdout %q stderr %q", r.stdout, r.stderr)
			}
			t.Logf("%s: %v", tt.name, r.err)
		})
	}
}

func TestExecContainerGone(t *testing.T) {
	c := runctest.Start(t, runctest.Options{})
	c.Remove(t)
	r := execIn(t, c, "echo", "hi")
	var ee *runc.ExecError
	if !errors.As(r.err, &ee) || !errors.Is(r.err, runc.ErrNotExist) {
		t.Fatalf("want *ExecError wrapping ErrNotExist, got %v", r.err)
	}
	t.Log(r.err)
}

func TestExecContainerStopped(t *testing.T) {
	c := runctest.Start(t, runctest.Options{})
	ctx := context.Background()
	if err := c.Runner.Kill(ctx, c.ID, "KILL"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Runner.State(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if st.Status == "stopped" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container still %s", st.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := execIn(t, c, "echo", "hi")
	var ee *runc.ExecError
	if !errors.As(r.err, &ee) {
		t.Fatalf("want *ExecError, got %v (exit %d)", r.err, r.res.ExitCode)
	}
	t.Log(r.err)
}

// hashWriter hashes what it is given; the runner writes each stream from
// one goroutine.
type hashWriter struct {
	h hashState
	n int64
}

type hashState interface {
	io.Writer
	Sum([]byte) []byte
}

func (w *hashWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return w.h.Write(p)
}

func TestExecLargeOutputBothStreams(t *testing.T) {
	c := runctest.Start(t, runctest.Options{})
	block := make([]byte, 1<<20)
	if _, err := rand.Read(block); err != nil {
		t.Fatal(err)
	}
	c.WriteFile(t, "/data", block, 0o644)
	// 25 MiB on each stream, written concurrently: runs only if both
	// pipes are drained at the same time.
	script := `i=0; while [ $i -lt 25 ]; do cat /data; cat /data >&2; i=$((i+1)); done`
	want := sha256.New()
	for range 25 {
		want.Write(block)
	}
	wantSum := want.Sum(nil)
	stdout := &hashWriter{h: sha256.New()}
	stderr := &hashWriter{h: sha256.New()}
	p, err := c.Runner.Exec(context.Background(), runc.ExecConfig{ContainerID: c.ID, Program: "sh", Args: []string{"-c", script}, Stdout: stdout, Stderr: stderr})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var res runc.Result
	go func() {
		defer close(done)
		res, err = p.Wait()
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		p.Stop(time.Second)
		t.Fatal("50 MiB of output did not finish in 2 minutes (deadlock?)")
	}
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exit %d err %v", res.ExitCode, err)
	}
	if stdout.n != 25<<20 || stderr.n != 25<<20 {
		t.Fatalf("got %d stdout and %d stderr bytes, want %d each", stdout.n, stderr.n, 25<<20)
	}
	if !bytes.Equal(stdout.h.Sum(nil), wantSum) || !bytes.Equal(stderr.h.Sum(nil), wantSum) {
		t.Fatal("checksum mismatch")
	}
	if o, e := p.Counts(); o != 25<<20 || e != 25<<20 {
		t.Fatalf("Counts = %d, %d", o, e)
	}
}

func TestExecBinaryExact(t *testing.T) {
	c := runctest.Start(t, runctest.Options{})
	data := make([]byte, 1<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	// Make sure the awkward bytes are there whatever rand gave.
	copy(data, []byte{0, 0xff, 0xfe, '\r', '\n', 0x80, 0})
	c.WriteFile(t, "/blob", data, 0o644)
	r := execIn(t, c, "cat", "/blob")
	if r.err != nil || r.res.ExitCode != 0 {
		t.Fatalf("exit %d err %v", r.res.ExitCode, r.err)
	}
	if r.stdout != string(data) {
		t.Fatalf("binary output differs: got %d bytes, want %d", len(r.stdout), len(data))
	}
}

// gateWriter blocks every write until opened: a coordinator that is away.
type gateWriter struct {
	open chan struct{}
	mu   sync.Mutex
	n    int
}

func (g *gateWriter) Write(p []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	g.n += len(p)
	g.mu.Unlock()
	return len(p), nil
}

func TestExecBackPressure(t *testing.T) {
	c := runctest.Start(t, runctest.Options{})
	g := &gateWriter{open: make(chan struct{})}
	p, err := c.Runner.Exec(context.Background(), runc.ExecConfig{ContainerID: c.ID, Program: "head", Args: []string{"-c", "4194304", "/dev/zero"}, Stdout: g})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _, _ = p.Wait() }()
	select {
	case <-done:
		t.Fatal("program finished although nobody took its output")
	case <-time.After(time.Second):
	}
	close(g.open)
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("program did not finish after the output was released")
	}
	res, err := p.Wait()
	if err != nil || res.ExitCode != 0 || g.n != 4<<20 {
		t.Fatalf("exit %d err %v bytes %d", res.ExitCode, err, g.n)
	}
}

func TestStopTerminatesProcessGroup(t *testing.T) {
	c := runctest.Start(t, runctest.Options{})
	var out syncbuf.Buffer
	// A background child holding stdout: runc exec would wait for it.
	p, err := c.Runner.Exec(context.Background(), runc.ExecConfig{ContainerID: c.ID, Program: "sh", Args: []string{"-c", "sleep 3600 & echo started; wait"}, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return out.String() == "started\n" })
	if p.Pid() <= 0 {
		t.Fatal("no pid after output")
	}
	start := time.Now()
	p.Stop(5 * time.Second)
	res, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 128+15 {
		t.Fatalf("exit %d, want 143 (SIGTERM)", res.ExitCode)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("SIGTERM should have been enough, took %v", d)
	}
	assertOnlyInit(t, c)
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	c := runctest.Start(t, runctest.Options{})
	var out syncbuf.Buffer
	p, err := c.Runner.Exec(context.Background(), runc.ExecConfig{ContainerID: c.ID, Program: "sh", Args: []string{"-c", `trap "" TERM; echo ready; while :; do sleep 1; done`}, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return out.String() == "ready\n" })
	start := time.Now()
	p.Stop(500 * time.Millisecond)
	res, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 128+9 {
		t.Fatalf("exit %d, want 137 (SIGKILL)", res.ExitCode)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("SIGKILL came after %v, before the kill delay", d)
	}
	assertOnlyInit(t, c)
}

func TestSignalBeforeRunDoesNothingAfterExit(t *testing.T) {
	c := runctest.Start(t, runctest.Options{})
	p, err := c.Runner.Exec(context.Background(), runc.ExecConfig{ContainerID: c.ID, Program: "true"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	// runc has exited: the pid may be recycled, so nothing is sent.
	if err := p.Signal(9); err != nil {
		t.Fatal(err)
	}
	p.Stop(time.Second) // returns at once
}

// assertOnlyInit checks that of the live processes that sleep, only the
// container's init (sleep 3600) is left.
func assertOnlyInit(t *testing.T, c *runctest.Container) {
	t.Helper()
	var last string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		r := execIn(t, c, "ps", "-o", "pid,args")
		last = r.stdout
		alive := 0
		for _, line := range strings.Split(r.stdout, "\n") {
			// "[sleep]" is a zombie: dead, waiting for the container's
			// init (a plain sleep here) to reap it.
			if strings.Contains(line, "sleep") && !strings.Contains(line, "[") {
				alive++
			}
		}
		if r.err == nil && alive == 1 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("leftover processes:\n%s", last)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
