package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/execq/execq/cli/client"
	"github.com/execq/execq/internal/syncbuf"
	"github.com/execq/execq/internal/testpki"
	"github.com/execq/execq/shared"
)

// The execq command line against the real stack: the binary as operators
// run it, its exit statuses, and its client (cli/client) underneath.

// cliEnv is the environment execq runs with against the stack.
func (s *stack) cliEnv(extra ...string) []string {
	return append([]string{"EXECQ_SERVER=" + s.url(""), "EXECQ_TOKEN=" + s.userToken}, extra...)
}

// cliResult is one finished run of execq.
type cliResult struct {
	stdout, stderr []byte
	code           int
}

// runCLI runs execq to its end (at most two minutes) with env on top of
// the test's environment (EXECQ_* variables of the caller removed).
func runCLI(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	cmd := cliCommand(env, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("execq %q did not end within 2 minutes; stderr %q", args, errb.String())
	}
	return cliResult{out.Bytes(), errb.Bytes(), cmd.ProcessState.ExitCode()}
}

func cliCommand(env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(binDir, "execq"), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EXECQ_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// apiClient is the typed client for the stack's user.
func (s *stack) apiClient(t *testing.T) *client.Client {
	t.Helper()
	cl, err := client.New(client.Options{Server: s.url(""), Token: s.userToken})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// runningIn waits until the container has a running command and returns it.
func (s *stack) runningIn(t *testing.T, cl *client.Client, containerID string) shared.CommandExecutionRecord {
	t.Helper()
	var rec shared.CommandExecutionRecord
	s.eventually(30*time.Second, "a running command in "+containerID, func() bool {
		page, err := cl.History(context.Background(), client.HistoryQuery{ContainerID: containerID, Status: shared.StatusRunning})
		if err != nil || len(page.Commands) == 0 {
			return false
		}
		rec = page.Commands[0].CommandExecutionRecord
		return true
	})
	return rec
}

// oneLine checks that execq failed with exactly one "execq: …" line on
// stderr, no stack trace, and nothing on stdout.
func oneLine(t *testing.T, r cliResult, wantCode int, want string) {
	t.Helper()
	msg := string(r.stderr)
	if r.code != wantCode || strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "execq: ") ||
		!strings.Contains(msg, want) || strings.Contains(msg, "goroutine") || strings.Contains(msg, "panic") || len(r.stdout) != 0 {
		t.Fatalf("exit %d, stderr %q, stdout %q; want exit %d and one line with %q", r.code, msg, r.stdout, wantCode, want)
	}
}

// TestCLI runs execq exec and the reading commands against one stack.
func TestCLI(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	s.startAgent()
	s.waitReported(c)
	env := s.cliEnv()

	t.Run("exit status and split streams by container name", func(t *testing.T) {
		// runctest names every container by its hostname, execq-test.
		r := runCLI(t, env, "exec", "execq-test", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
		if r.code != 7 || string(r.stdout) != "out\n" || string(r.stderr) != "err\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q; want 7, \"out\\n\", \"err\\n\"", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("exact binary bytes", func(t *testing.T) {
		data := make([]byte, 1<<20)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		c.WriteFile(t, "/data/1MiB-binary", data, 0o644)
		r := runCLI(t, env, "exec", c.ID, "--", "cat", "/data/1MiB-binary")
		if r.code != 0 || !bytes.Equal(r.stdout, data) {
			t.Fatalf("exit %d, %d bytes (equal %v), stderr %q; want the file's %d bytes exactly",
				r.code, len(r.stdout), bytes.Equal(r.stdout, data), r.stderr, len(data))
		}
	})

	t.Run("live output", func(t *testing.T) {
		cmd := cliCommand(env, "exec", c.ID, "--", "sh", "-c", stampedLoop(5, "1"))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		br := bufio.NewReader(stdout)
		first, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read the first line: %v (stderr %q)", err, errb.String())
		}
		got := uptime(t)
		f := strings.Fields(first)
		stampedAt, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil || f[0] != "1" {
			t.Fatalf("first line %q: want \"1 <uptime>\"", first)
		}
		if lat := time.Duration((got - stampedAt) * float64(time.Second)); lat > 1500*time.Millisecond {
			t.Fatalf("the first line reached execq's stdout %s after it was written, want within 1.5 s", lat)
		}
		rest, _ := io.ReadAll(br)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("execq: %v; stderr %q", err, errb.String())
		}
		if n := strings.Count(first+string(rest), "\n"); n != 5 {
			t.Fatalf("%d lines, want 5: %q", n, first+string(rest))
		}
	})

	t.Run("SIGINT cancels the remote command", func(t *testing.T) {
		cl := s.apiClient(t)
		cmd := cliCommand(env, "exec", c.ID, "--", "sleep", "600")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill() }()
		rec := s.runningIn(t, cl, c.ID)
		var pid int
		s.eventually(30*time.Second, "sleep 600 in the container", func() bool {
			pid = containerPid(t, s.runcRoot, c.ID, "sleep 600")
			return pid != 0
		})
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatalf("execq still running a minute after SIGINT; stderr %q", errb.String())
		}
		if code := cmd.ProcessState.ExitCode(); code != 130 {
			t.Fatalf("exit %d, want 130 (cancelled); stderr %q", code, errb.String())
		}
		waitGone(t, pid)
		if p := containerPid(t, s.runcRoot, c.ID, "sleep 600"); p != 0 {
			t.Fatalf("sleep 600 still in the container (pid %d)", p)
		}
		final := s.get(rec.ID)
		if final.EndReason == nil || *final.EndReason != shared.EndCancelled {
			t.Fatalf("record %+v, want end_reason cancelled", final)
		}
		if !strings.Contains(errb.String(), "execq: cancelling command "+rec.ID) || !strings.Contains(errb.String(), "execq: cancelled by") {
			t.Fatalf("stderr %q: want the cancel announced and the coordinator's reason line", errb.String())
		}
	})

	t.Run("second SIGINT stops waiting and names the command", func(t *testing.T) {
		cl := s.apiClient(t)
		// The program ignores SIGTERM and the grace is long: the first
		// press cannot end it soon.
		cmd := cliCommand(env, "exec", "--grace", "2m", c.ID, "--", "sh", "-c", `trap "" TERM; sleep 600`)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill() }()
		rec := s.runningIn(t, cl, c.ID)
		_ = cmd.Process.Signal(syscall.SIGINT)
		s.eventually(30*time.Second, "the cancel request", func() bool { return s.get(rec.ID).CancelRequestedAt != nil })
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatalf("execq still running a minute after the second SIGINT; stderr %q", errb.String())
		}
		if code := cmd.ProcessState.ExitCode(); code != 130 || !strings.Contains(errb.String(), "stopped waiting for command "+rec.ID) {
			t.Fatalf("exit %d, stderr %q; want 130 and the command's ID", code, errb.String())
		}
		// The command stays until its grace ends; the container's removal
		// at the end of the test stops it.
	})

	t.Run("detach, wait, attach, logs, get, ls, containers, cancel", func(t *testing.T) {
		r := runCLI(t, env, "exec", "--detach", c.ID, "--", "sh", "-c", `printf 'a\000b\377'; echo e >&2; exit 3`)
		id := strings.TrimSpace(string(r.stdout))
		if r.code != 0 || uuid.Validate(id) != nil {
			t.Fatalf("exec --detach: exit %d, stdout %q, stderr %q; want the command's ID", r.code, r.stdout, r.stderr)
		}
		if r := runCLI(t, env, "wait", id); r.code != 3 || !strings.Contains(string(r.stdout), "failed (exited, exit code 3)") {
			t.Fatalf("wait: exit %d, stdout %q, stderr %q; want 3", r.code, r.stdout, r.stderr)
		}
		if r := runCLI(t, env, "attach", id); r.code != 3 || string(r.stdout) != "a\x00b\xff" || string(r.stderr) != "e\n" {
			t.Fatalf("attach: exit %d, stdout %q, stderr %q; want 3 and the output as exec shows it", r.code, r.stdout, r.stderr)
		}
		if r := runCLI(t, env, "logs", "--stream", "stdout", id); r.code != 0 || string(r.stdout) != "a\x00b\xff" || len(r.stderr) != 0 {
			t.Fatalf("logs --stream stdout: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		if r := runCLI(t, env, "logs", "-f", id); r.code != 0 || string(r.stdout) != "a\x00b\xff" || string(r.stderr) != "e\n" {
			t.Fatalf("logs -f: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		r = runCLI(t, env, "get", "-o", "json", id)
		var rec shared.CommandExecutionRecord
		if err := json.Unmarshal(r.stdout, &rec); r.code != 0 || err != nil || rec.ID != id || rec.ExitCode == nil || *rec.ExitCode != 3 {
			t.Fatalf("get -o json: exit %d, stdout %q (%v)", r.code, r.stdout, err)
		}
		if r := runCLI(t, env, "get", id); r.code != 0 || !strings.Contains(string(r.stdout), "exit code:") {
			t.Fatalf("get: exit %d, stdout %q", r.code, r.stdout)
		}
		r = runCLI(t, env, "ls", "-o", "json", "--container", "execq-test", "--status", "failed", "--limit", "1")
		var page shared.HistoryPage
		if err := json.Unmarshal(r.stdout, &page); r.code != 0 || err != nil || len(page.Commands) != 1 || page.Commands[0].ID != id {
			t.Fatalf("ls -o json: exit %d, stdout %q (%v); want this command first", r.code, r.stdout, err)
		}
		if r := runCLI(t, env, "ls", "--limit", "1"); r.code != 0 || !strings.Contains(string(r.stdout), id) || !strings.Contains(string(r.stderr), "--cursor") {
			t.Fatalf("ls: exit %d, stdout %q, stderr %q; want the table and the next page's cursor", r.code, r.stdout, r.stderr)
		}
		if r := runCLI(t, env, "ls", "--all", "-o", "wide"); r.code != 0 || !strings.Contains(string(r.stdout), "END REASON") || !strings.Contains(string(r.stdout), id) {
			t.Fatalf("ls --all -o wide: exit %d, stdout %q", r.code, r.stdout)
		}
		if r := runCLI(t, env, "containers", "-o", "wide"); r.code != 0 || !strings.Contains(string(r.stdout), c.ID) || !strings.Contains(string(r.stdout), "container="+c.ID) {
			t.Fatalf("containers: exit %d, stdout %q", r.code, r.stdout)
		}
		oneLine(t, runCLI(t, env, "cancel", id), 1, "already ended: failed")
	})

	t.Run("errors are one line", func(t *testing.T) {
		oneLine(t, runCLI(t, env, "exec", "no-such-container", "--", "true"), 125, `no container is named "no-such-container"`)
		oneLine(t, runCLI(t, env, "exec", uuid.NewString(), "--", "true"), 125, "unknown_container")
		oneLine(t, runCLI(t, s.cliEnv("EXECQ_TOKEN=not-a-token"), "exec", c.ID, "--", "true"), 125, "unauthenticated")
		oneLine(t, runCLI(t, []string{"EXECQ_SERVER=http://" + freeAddr(t), "EXECQ_TOKEN=" + s.userToken}, "exec", c.ID, "--", "true"), 125, "cannot reach the coordinator")
		oneLine(t, runCLI(t, env, "get", uuid.NewString()), 1, "not_found")
		oneLine(t, runCLI(t, []string{"EXECQ_SERVER=http://" + freeAddr(t), "EXECQ_TOKEN=x"}, "ls"), 1, "cannot reach the coordinator")
		// -v shows the exchange but never the token.
		r := runCLI(t, env, "-v", "containers")
		if r.code != 0 || !strings.Contains(string(r.stderr), "GET "+s.url("/api/v1/containers")+" → 200") || strings.Contains(string(r.stderr), s.userToken) {
			t.Fatalf("-v: exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

// TestCLIResumesAcrossCoordinatorRestart: the coordinator is killed and
// restarted while execq exec follows; execq reconnects from the offset it
// reached, and its stdout is every line once, in order.
func TestCLIResumesAcrossCoordinatorRestart(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{leaseTTL: 15 * time.Second, heartbeat: time.Second})
	c := s.container()
	s.startAgent()
	s.waitReported(c)

	const lines = 100
	cmd := cliCommand(s.cliEnv(), "-v", "exec", c.ID, "--", "sh", "-c",
		fmt.Sprintf("i=0; while [ $i -lt %d ]; do echo line $i; i=$((i+1)); sleep 0.05; done", lines))
	out, errb := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	s.eventually(30*time.Second, "the first lines on execq's stdout", func() bool { return strings.Contains(out.String(), "line 3\n") })
	s.coord.kill()
	time.Sleep(time.Second) // the command keeps printing meanwhile
	s.startCoordinator()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("execq still running 2 minutes after the restart; stderr %q", errb.String())
	}
	var want strings.Builder
	for i := range lines {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 || out.String() != want.String() {
		t.Fatalf("exit %d; stdout %q; want every line once, in order (stderr %q)", code, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "resuming") {
		t.Fatalf("stderr %q: the follow was never resumed, so the test did not test a resume", errb.String())
	}
}

// cuttingProxy forwards TCP connections to target and cuts each one once
// it has sent limit bytes of the answer back: a network, load balancer or
// coordinator that drops long answers midway.
func cuttingProxy(t *testing.T, target string, limit int64) (addr string, cuts *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cuts = &atomic.Int64{}
	go func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer down.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, down) }()
				if n, _ := io.Copy(down, io.LimitReader(up, limit)); n == limit {
					cuts.Add(1)
				}
			}()
		}
	}()
	return ln.Addr().String(), cuts
}

// TestClientFollowResumesAcrossCutConnections: every connection is cut
// after 64 KiB of answer; the client's Follow reconnects from the offset it
// reached each time, and reads 1 MiB of random bytes exactly, ending with
// the final status from the trailer.
func TestClientFollowResumesAcrossCutConnections(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	s.startAgent()
	s.waitReported(c)
	data := make([]byte, 1<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	c.WriteFile(t, "/data/1MiB-binary", data, 0o644)
	// Written slowly, in 16 pieces, so the follow is live for part of it.
	rec := s.submit(c.ID, "sh", "-c", `i=0; while [ $i -lt 16 ]; do dd if=/data/1MiB-binary bs=65536 skip=$i count=1 2>/dev/null; i=$((i+1)); sleep 0.1; done`)

	addr, cuts := cuttingProxy(t, s.addr, 64<<10)
	cl, err := client.New(client.Options{Server: "http://" + addr, Token: s.userToken})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := cl.Follow(ctx, rec.ID, shared.StreamStdout, 0)
	defer f.Close()
	var reconnects int
	f.OnReconnect = func(int64, error) { reconnects++ }
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("follow: %v after %d bytes", err, len(got))
	}
	if !bytes.Equal(got, data) || f.Info().Status != shared.StatusSucceeded {
		t.Fatalf("%d bytes (equal %v), status %q; want the 1 MiB exactly and succeeded", len(got), bytes.Equal(got, data), f.Info().Status)
	}
	if cuts.Load() < 16 || reconnects < 16 {
		t.Fatalf("%d connections cut, %d reconnects: want at least 16 of each, or nothing was tested", cuts.Load(), reconnects)
	}
}

// openPTY opens a pseudo-terminal pair: what the process under test gets
// as its terminal, and the side the test reads.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open pty %d: %v", n, err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestCLIQueuedSpinnerOnlyOnATerminal: while no agent runs the command,
// execq exec shows "queued N s…" on a terminal's stderr, and nothing when
// stderr is a pipe; the output that follows is the program's alone.
func TestCLIQueuedSpinnerOnlyOnATerminal(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	a := s.startAgent()
	s.waitReported(c)
	a.kill() // the container stays known; nothing runs its commands now

	master, tty := openPTY(t)
	onTTY := cliCommand(s.cliEnv(), "exec", c.ID, "--", "echo", "hi")
	var ttyOut bytes.Buffer
	onTTY.Stdout, onTTY.Stderr = &ttyOut, tty
	var screen syncbuf.Buffer
	go func() { _, _ = io.Copy(&screen, master) }()
	piped := cliCommand(s.cliEnv(), "exec", c.ID, "--", "echo", "hi")
	var pipedOut, pipedErr bytes.Buffer
	piped.Stdout, piped.Stderr = &pipedOut, &pipedErr
	for _, cmd := range []*exec.Cmd{onTTY, piped} {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill() }()
	}
	s.eventually(30*time.Second, "the spinner on the terminal", func() bool { return strings.Contains(screen.String(), "queued 1 s…") })
	s.startAgent()
	for _, cmd := range []*exec.Cmd{onTTY, piped} {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("execq: %v; terminal %q, stderr %q", err, screen.String(), pipedErr.String())
			}
		case <-time.After(time.Minute):
			t.Fatal("execq still running a minute after the agent came back")
		}
	}
	if ttyOut.String() != "hi\n" || pipedOut.String() != "hi\n" || pipedErr.Len() != 0 {
		t.Fatalf("stdout %q and %q, piped stderr %q; want hi twice and no spinner without a terminal", ttyOut.String(), pipedOut.String(), pipedErr.String())
	}
	// The spinner's line is erased once the command left the queue.
	if scr := screen.String(); !strings.HasSuffix(scr, "\r\033[K") {
		t.Fatalf("terminal ends with %q, want the spinner erased", tail(scr, 80))
	}
}

// TestCLIOverTLS: execq verifies an https:// coordinator against
// --ca-file (or EXECQ_CA_FILE), follows live output over it, and without
// the CA says in one line that the certificate is not trusted.
func TestCLIOverTLS(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t, "e2e-cli")
	s := newStack(t, stackOptions{tls: &stackTLS{ca: ca, server: issue(t, ca, testpki.Options{Name: "coordinator",
		Hosts: []string{"127.0.0.1", "localhost"}})}})
	c := s.container()
	s.startAgent(s.agentTLSArgs()...)
	s.waitReported(c)

	r := runCLI(t, s.cliEnv(), "--ca-file", ca.File, "exec", c.ID, "--", "sh", "-c", "echo over tls; echo err >&2; exit 3")
	if r.code != 3 || string(r.stdout) != "over tls\n" || string(r.stderr) != "err\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 3, the output over TLS", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, s.cliEnv("EXECQ_CA_FILE="+ca.File), "containers"); r.code != 0 || !strings.Contains(string(r.stdout), c.ID) {
		t.Fatalf("EXECQ_CA_FILE: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	oneLine(t, runCLI(t, s.cliEnv(), "exec", c.ID, "--", "true"), 125, "--ca-file")
}
