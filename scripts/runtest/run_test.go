package runtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/execq/execq/coordinator/testpg"
	"github.com/execq/execq/internal/syncbuf"
)

// Bounds, not expectations: a run on a loaded machine (the first one builds
// both binaries) may be slow, but never this slow.
const (
	upTimeout   = 4 * time.Minute
	stopTimeout = 90 * time.Second
)

// succeeded is how the finished demo record shows its status (jq's layout).
const succeeded = `"status": "succeeded"`

// TestRunStopsOnCtrlC is the terminal's Ctrl-C: SIGINT to the foreground
// process group (make and scripts/run.sh) once the demo command finished.
func TestRunStopsOnCtrlC(t *testing.T) {
	r := startRun(t, runOptions{terminal: true})
	r.waitFor(t, succeeded)
	r.tryExecq(t)
	r.signalGroup(t, syscall.SIGINT)
	r.wait(t)
	r.assertNothingLeft(t)
}

// TestRunStopsOnCtrlCTwice: a command is running, so the agent drains it
// for its grace period; the run says what it waits for, and an impatient
// second Ctrl-C during that wait must not cut the stop short.
func TestRunStopsOnCtrlCTwice(t *testing.T) {
	r := startRun(t, runOptions{terminal: true})
	r.waitFor(t, succeeded)
	r.startLongCommand(t)
	r.signalGroup(t, syscall.SIGINT)
	r.waitFor(t, "stopping the stack")
	r.signalGroup(t, syscall.SIGINT)
	r.wait(t)
	r.assertNothingLeft(t)
	r.assertSaidWhatItWaitsFor(t)
}

// TestRunStopsOnSIGTERM is what timeout(1), a supervisor or a closed
// terminal sends to the process group. GNU make forwards a SIGTERM to its
// child, so the script receives it a second time, possibly after its cleanup
// began: that copy is sent here to the script while the agent drains a
// running command, and must not cut the cleanup short.
func TestRunStopsOnSIGTERM(t *testing.T) {
	r := startRun(t, runOptions{terminal: true})
	r.waitFor(t, succeeded)
	r.startLongCommand(t)
	script := r.scriptPID(t)
	r.signalGroup(t, syscall.SIGTERM)
	// make may already have died of the first signal: what it left behind
	// is then for the assertions below.
	if r.waitForOrExit(t, "stopping the stack") {
		if err := syscall.Kill(script, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("SIGTERM to the script (pid %d): %v", script, err)
		}
	}
	r.wait(t)
	r.assertNothingLeft(t)
	r.assertSaidWhatItWaitsFor(t)
}

// TestRunStopsOnSIGHUP is a terminal that goes away.
func TestRunStopsOnSIGHUP(t *testing.T) {
	r := startRun(t, runOptions{terminal: true})
	r.waitFor(t, succeeded)
	r.signalGroup(t, syscall.SIGHUP)
	r.wait(t)
	r.assertNothingLeft(t)
}

// TestRunOnce is CI's `make run`: ONCE=1 (and no terminal) brings the stack
// up, runs the demo command, stops everything and exits 0.
func TestRunOnce(t *testing.T) {
	r := startRun(t, runOptions{args: []string{"ONCE=1"}})
	if err := r.wait(t); err != nil {
		t.Fatalf("make run ONCE=1: %v; output:\n%s", err, r.output())
	}
	if !strings.Contains(r.output(), succeeded) {
		t.Fatalf("make run ONCE=1 exited 0 without a succeeded record; output:\n%s", r.output())
	}
	r.assertNothingLeft(t)
}

// TestRunWithoutTerminalIsOnce: stdin that is not a terminal (CI, a pipe,
// </dev/null) makes `make run` a once run without ONCE=1.
func TestRunWithoutTerminalIsOnce(t *testing.T) {
	r := startRun(t, runOptions{})
	if err := r.wait(t); err != nil {
		t.Fatalf("make run </dev/null: %v; output:\n%s", err, r.output())
	}
	if !strings.Contains(r.output(), succeeded) {
		t.Fatalf("make run </dev/null exited 0 without a succeeded record; output:\n%s", r.output())
	}
	r.assertNothingLeft(t)
}

// TestRunFailureSaysWhy: when a step fails, the run says which step, why,
// and shows the end of the log that explains it, stops what it started and
// exits non-zero. The failure is injected with a runc that refuses to create
// containers (and passes every other call to the real runc).
func TestRunFailureSaysWhy(t *testing.T) {
	realRunc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatalf("runc not found: %v", err)
	}
	fake := t.TempDir()
	script := fmt.Sprintf(`#!/bin/sh
for a in "$@"; do
	if [ "$a" = run ]; then echo "injected failure: no containers today" >&2; exit 3; fi
done
exec %s "$@"
`, realRunc)
	if err := os.WriteFile(filepath.Join(fake, "runc"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r := startRun(t, runOptions{args: []string{"ONCE=1"}, path: fake + ":" + os.Getenv("PATH")})
	if err := r.wait(t); err == nil {
		t.Fatalf("make run exited 0 although no container could be created; output:\n%s", r.output())
	}
	out := r.output()
	for _, want := range []string{
		`FAILED at step "creating two busybox containers`,
		"exited with status 3",
		"injected failure: no containers today",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q; output:\n%s", want, out)
		}
	}
	r.assertNothingLeft(t)
}

type runOptions struct {
	// terminal gives the run a pseudo-terminal as stdin, as a person's shell
	// does; otherwise stdin is /dev/null, as in CI.
	terminal bool
	// args are appended to `make run`.
	args []string
	// path replaces PATH when set.
	path string
}

type run struct {
	root, dir, listen string
	cmd               *exec.Cmd
	out               *syncbuf.Buffer
	exited            chan struct{}
	waitErr           error
}

// startRun starts `make run` in the repository holding this package, in a
// process group of its own, as a shell starts a foreground job.
func startRun(t *testing.T, opt runOptions) *run {
	t.Helper()
	root := repoRoot(t)
	dbURL := testpg.New(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	r := &run{
		root:   root,
		dir:    t.TempDir(),
		listen: freeAddr(t),
		out:    &syncbuf.Buffer{},
		exited: make(chan struct{}),
	}
	env := []string{
		"EXECQ_RUN_LISTEN=" + r.listen,
		"EXECQ_RUN_DIR=" + r.dir,
		"EXECQ_RUN_DB=" + strings.TrimPrefix(u.Path, "/"),
		// The cluster `make test` started (TEST_DATABASE_URL), whatever
		// port it was given.
		"EXECQ_DEV_PG_PORT=" + u.Port(),
	}
	if opt.path != "" {
		env = append(env, "PATH="+opt.path)
	}
	r.cmd = exec.Command("make", append([]string{"--no-print-directory", "run"}, opt.args...)...)
	r.cmd.Dir = root
	r.cmd.Env = append(cleanEnv(), env...)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if opt.terminal {
		master, tty := openPTY(t)
		t.Cleanup(func() { master.Close() })
		// Read (and drop) what is written to the terminal, so nothing blocks.
		go func() { _, _ = bytes.NewBuffer(nil).ReadFrom(master) }()
		r.cmd.Stdin = tty
		defer tty.Close()
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start make run: %v", err)
	}
	go func() {
		r.waitErr = r.cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-r.exited:
		default:
			// A failed test must not leave a stack behind: stop it by force.
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
			<-r.exited
		}
		stop := exec.Command("scripts/run.sh", "--stop")
		stop.Dir, stop.Env = root, r.cmd.Env
		if out, err := stop.CombinedOutput(); err != nil {
			t.Logf("scripts/run.sh --stop: %v\n%s", err, out)
		}
		if t.Failed() {
			t.Logf("make run output:\n%s", r.output())
		}
	})
	return r
}

func (r *run) output() string { return r.out.String() }

// waitFor waits until the run has printed want.
func (r *run) waitFor(t *testing.T, want string) {
	t.Helper()
	if !r.waitForOrExit(t, want) {
		t.Fatalf("make run exited (%v) before printing %q", r.waitErr, want)
	}
}

// waitForOrExit waits until the run has printed want (true) or has exited
// without printing it (false).
func (r *run) waitForOrExit(t *testing.T, want string) bool {
	t.Helper()
	deadline := time.After(upTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(r.output(), want) {
		select {
		case <-r.exited:
			return strings.Contains(r.output(), want)
		case <-deadline:
			t.Fatalf("make run did not print %q within %s", want, upTimeout)
		case <-tick.C:
		}
	}
	return true
}

func (r *run) signalGroup(t *testing.T, sig syscall.Signal) {
	t.Helper()
	// ESRCH: the group is already gone, which the assertions then judge.
	if err := syscall.Kill(-r.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("signal %v to make run's process group: %v", sig, err)
	}
}

// scriptPID returns the pid of make's child, scripts/run.sh.
func (r *run) scriptPID(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so split after ')'.
		rest := string(stat[bytes.LastIndexByte(stat, ')')+1:])
		fields := strings.Fields(rest)
		if len(fields) > 1 && fields[1] == strconv.Itoa(r.cmd.Process.Pid) {
			return pid
		}
	}
	t.Fatalf("make (pid %d) has no child", r.cmd.Process.Pid)
	return 0
}

// startLongCommand submits a command that outlives the test's patience to
// the run's second demo container, as a person trying the stack would, and
// waits until the agent runs it.
func (r *run) startLongCommand(t *testing.T) {
	t.Helper()
	env := readEnvFile(t, filepath.Join(r.dir, "demo.env"))
	call := func(method, path, body string) map[string]any {
		t.Helper()
		req, err := http.NewRequest(method, env["EXECQ_API"]+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+env["EXECQ_TOKEN"])
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		var rec map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil || resp.StatusCode >= 300 {
			t.Fatalf("%s %s: HTTP %d, %v, %v", method, path, resp.StatusCode, rec, err)
		}
		return rec
	}
	// The demo user is no admin (the admin-only grants route does not
	// exist for it), and its grant covers both demo containers.
	req, err := http.NewRequest(http.MethodGet, env["EXECQ_API"]+"/api/v1/grants", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+env["EXECQ_TOKEN"])
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the demo user's GET /api/v1/grants: %v %v, want 404 (not an admin)", resp, err)
	} else {
		resp.Body.Close()
	}
	listed := map[string]bool{}
	containers, _ := call(http.MethodGet, "/api/v1/containers", "")["containers"].([]any)
	for _, c := range containers {
		if m, ok := c.(map[string]any); ok {
			listed[m["id"].(string)] = true
		}
	}
	if len(listed) != 2 || !listed[env["EXECQ_CONTAINER_1"]] || !listed[env["EXECQ_CONTAINER_2"]] {
		t.Fatalf("the demo user lists %v, want the two demo containers", listed)
	}
	rec := call(http.MethodPost, "/api/v1/containers/"+env["EXECQ_CONTAINER_2"]+"/commands",
		`{"program":"/bin/sleep","args":["300"]}`)
	id, _ := rec["id"].(string)
	deadline := time.Now().Add(upTimeout)
	for rec["status"] != "running" {
		if time.Now().After(deadline) {
			t.Fatalf("command %s still %v", id, rec["status"])
		}
		time.Sleep(100 * time.Millisecond)
		rec = call(http.MethodGet, "/api/v1/commands/"+id, "")
	}
}

// tryExecq runs one of the execq lines the run prints, with the demo
// user's settings it writes to demo.env: the quick start works as shown.
func (r *run) tryExecq(t *testing.T) {
	t.Helper()
	line := "execq exec execq-demo-2 -- sh -c 'echo out; echo err >&2; exit 7'"
	r.waitFor(t, line)
	env := readEnvFile(t, filepath.Join(r.dir, "demo.env"))
	cmd := exec.Command(filepath.Join(r.root, "bin", "execq"), "exec", "execq-demo-2", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
	cmd.Env = append(cleanEnv(), "EXECQ_SERVER="+env["EXECQ_SERVER"], "EXECQ_TOKEN="+env["EXECQ_TOKEN"])
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	_ = cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 7 || stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Fatalf("%s: exit %d, stdout %q, stderr %q; want 7, out, err", line, code, stdout.String(), stderr.String())
	}
}

// readEnvFile reads the KEY=value lines of the demo.env file the run writes.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = v
		}
	}
	return env
}

// wait waits for make to exit and returns its error (nil for status 0).
func (r *run) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-r.exited:
		return r.waitErr
	case <-time.After(upTimeout + stopTimeout):
		t.Fatalf("make run did not exit")
		return nil
	}
}

// assertNothingLeft checks what a stopped run must not leave: a process in
// its group, a listener on the coordinator's port, a coordinator or agent
// serving this run, a container in its runc root.
func (r *run) assertNothingLeft(t *testing.T) {
	t.Helper()
	// make waits for its child, and the script's own children must be gone
	// too. After a second SIGINT make itself dies at once (its handler is
	// reset), and the script finishes stopping the stack on its own: wait
	// for the whole group, bounded.
	deadline := time.Now().Add(stopTimeout)
	for {
		err := syscall.Kill(-r.cmd.Process.Pid, 0)
		if errors.Is(err, syscall.ESRCH) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("a process of make run's group is still alive %s after make exited (kill -0: %v)", stopTimeout, err)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if c, err := net.DialTimeout("tcp", r.listen, time.Second); err == nil {
		c.Close()
		t.Errorf("something still listens on the coordinator's address %s", r.listen)
	}
	if pids := daemonsServing(t, r.listen); len(pids) > 0 {
		t.Errorf("coordinator or agent processes of this run are still running: %v", pids)
	}
	runcRoot := filepath.Join(r.dir, "runc")
	out, err := exec.Command("runc", "--root", runcRoot, "list", "--quiet").CombinedOutput()
	if err != nil {
		t.Errorf("runc --root %s list: %v\n%s", runcRoot, err, out)
	} else if ids := strings.Fields(string(out)); len(ids) > 0 {
		t.Errorf("containers still in %s: %v", runcRoot, ids)
	}
}

// assertSaidWhatItWaitsFor checks that a stop which waits for the agent to
// drain a running command says so, with the demo's short grace.
func (r *run) assertSaidWhatItWaitsFor(t *testing.T) {
	t.Helper()
	if want := "waiting for agent: it lets running commands finish for up to 5s"; !strings.Contains(r.output(), want) {
		t.Errorf("the stop waited for the agent without saying %q", want)
	}
}

// daemonsServing lists execq-coordinator and execq-agent processes whose
// command line names addr: this run's coordinator listens on it, its agent
// talks to it. Other stacks on the host use other addresses.
func daemonsServing(t *testing.T, addr string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue // not a process, or one that just exited
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		name := filepath.Base(args[0])
		if name != "execq-coordinator" && name != "execq-agent" {
			continue
		}
		if strings.Contains(string(raw), addr) {
			found = append(found, e.Name()+" "+strings.Join(args, " "))
		}
	}
	return found
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// cleanEnv is the test's environment without what the `make test` around
// it set for its own make (jobserver, level) and without a choice of mode.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "EXECQ_RUN_ONCE", "ONCE":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// openPTY opens a pseudo-terminal pair; the run gets the terminal end as its
// stdin, so `[ -t 0 ]` holds as in a person's shell.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		m.Close()
		t.Fatalf("open pty %d: %v", n, err)
	}
	return m, s
}
