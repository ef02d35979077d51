package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/execq/execq/agent/runc/runctest"
	"github.com/execq/execq/coordinator/testpg"
	"github.com/execq/execq/internal/syncbuf"
	"github.com/execq/execq/shared"
)

// binDir holds the binaries built by TestMain.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "execq-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go env GOMOD:", err)
		os.Exit(1)
	}
	for name, pkg := range map[string]string{
		"execq-coordinator": "./coordinator/cmd/execq-coordinator",
		"execq-agent":       "./agent/cmd/execq-agent",
		"execq":             "./cli/cmd/execq",
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: build %s: %v\n%s", name, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running binary whose output is kept for failure reports.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
	err  error
}

func startProc(t testing.TB, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, out: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, name), args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s output (last 8 KiB) ---\n%s", name, tail(p.out.String(), 8<<10))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (p *proc) signal(sig syscall.Signal) {
	_ = p.cmd.Process.Signal(sig)
}

// kill SIGKILLs the process (if still running) and waits for it.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// exited waits up to d for the process to end and returns its exit code.
func (p *proc) exited(d time.Duration) (int, bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		return 0, false
	}
}

// wantCleanExit waits up to a minute for the process to exit 0; when
// describes the moment (for the failure message).
func (p *proc) wantCleanExit(when string) {
	p.t.Helper()
	if code, ok := p.exited(time.Minute); !ok || code != 0 {
		p.t.Fatalf("%s exited=%v code=%d, want a clean exit 0 %s", p.name, ok, code, when)
	}
}

// stackOptions tune the coordinator of a stack.
type stackOptions struct {
	leaseTTL  time.Duration
	heartbeat time.Duration
	// outputCap is the bytes kept per stream (0: the coordinator's default).
	outputCap int64
	env       []string // extra EXECQ_* settings for the coordinator
	// tls serves the stack over HTTPS (tls_test.go).
	tls *stackTLS
	// dbURL is the coordinator's database (empty: a fresh one on the test
	// cluster); failover_test.go points it at a primary and its standby.
	dbURL string
}

// stack is a coordinator on its own database, a user and a node identity,
// and a runc root for that node's containers.
type stack struct {
	t         testing.TB
	dbURL     string
	addr      string
	coordEnv  []string
	coord     *proc
	userToken string
	nodeToken string
	runcRoot  string
	// workDir is the agents' --work-dir. Each stack has its own, so one
	// test's agent never takes another test's programs for orphans left by
	// a dead agent of its own host.
	workDir string
	client  *http.Client
	// scheme is "https" when the stack serves TLS; tls is then its setup.
	scheme string
	tls    *stackTLS
}

func newStack(t testing.TB, opt stackOptions) *stack {
	t.Helper()
	if opt.leaseTTL == 0 {
		opt.leaseTTL = 3 * time.Second
	}
	if opt.heartbeat == 0 {
		opt.heartbeat = opt.leaseTTL / 3
	}
	if opt.dbURL == "" {
		opt.dbURL = testpg.New(t)
	}
	s := &stack{t: t, dbURL: opt.dbURL, addr: freeAddr(t), runcRoot: runctest.NewRoot(t),
		workDir: t.TempDir(), client: &http.Client{Timeout: 60 * time.Second}}
	s.coordEnv = []string{
		"EXECQ_DATABASE_URL=" + s.dbURL,
		"EXECQ_LISTEN=" + s.addr,
		"EXECQ_LEASE_TTL=" + opt.leaseTTL.String(),
		"EXECQ_HEARTBEAT_INTERVAL=" + opt.heartbeat.String(),
		"EXECQ_REAP_INTERVAL=200ms",
		"EXECQ_SAFETY_POLL=1s",
	}
	if opt.outputCap > 0 {
		s.coordEnv = append(s.coordEnv, fmt.Sprintf("EXECQ_OUTPUT_CAP_BYTES=%d", opt.outputCap))
	}
	s.coordEnv = append(s.coordEnv, opt.env...)
	s.scheme = "http"
	if opt.tls != nil {
		s.useTLS(opt.tls)
	}
	s.startCoordinator()
	var user struct{ Token string }
	var node struct{ Token string }
	s.admin(&user, "users", "create", "--name", "e2e-user")
	s.admin(&node, "nodes", "create", "--name", "e2e-node")
	s.userToken, s.nodeToken = user.Token, node.Token
	var grant struct {
		GrantID string `json:"grant_id"`
	}
	s.admin(&grant, "grants", "add", "--user", "e2e-user", "--selector", "node=e2e-node")
	return s
}

// admin runs an execq-coordinator admin command and decodes its JSON output.
func (s *stack) admin(out any, args ...string) {
	s.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "execq-coordinator"), args...)
	cmd.Env = append(os.Environ(), "EXECQ_DATABASE_URL="+s.dbURL)
	raw, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("execq-coordinator %v: %v", args, err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		s.t.Fatalf("execq-coordinator %v printed %q: %v", args, raw, err)
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (s *stack) url(path string) string { return s.scheme + "://" + s.addr + path }

// startCoordinator starts (or restarts) the coordinator and waits for /readyz.
func (s *stack) startCoordinator() {
	s.t.Helper()
	s.coord = startProc(s.t, "execq-coordinator", s.coordEnv, "serve")
	s.eventually(30*time.Second, "coordinator ready", func() bool {
		resp, err := s.client.Get(s.url("/readyz"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// startAgent starts an agent for the stack's node with extra flags.
func (s *stack) startAgent(extra ...string) *proc {
	s.t.Helper()
	return s.startAgentAt(s.url(""), extra...)
}

// startAgentAt starts an agent that reaches the coordinator at coordURL (a
// proxy in front of it).
func (s *stack) startAgentAt(coordURL string, extra ...string) *proc {
	s.t.Helper()
	args := append([]string{"--coordinator", coordURL, "--runc-root", s.runcRoot, "--work-dir", s.workDir}, extra...)
	return startProc(s.t, "execq-agent", []string{"EXECQ_AGENT_TOKEN=" + s.nodeToken}, args...)
}

// container starts a busybox container under the stack's runc root.
func (s *stack) container() *runctest.Container {
	s.t.Helper()
	return runctest.Start(s.t, runctest.Options{Root: s.runcRoot})
}

// waitReported waits until the agent has reported every container.
func (s *stack) waitReported(cs ...*runctest.Container) {
	s.t.Helper()
	s.eventually(30*time.Second, "containers reported", func() bool {
		var list shared.ContainerList
		if s.do("GET", "/api/v1/containers", s.userToken, nil, &list) != http.StatusOK {
			return false
		}
		seen := map[string]bool{}
		for _, c := range list.Containers {
			seen[c.ID] = true
		}
		for _, c := range cs {
			if !seen[c.ID] {
				return false
			}
		}
		return true
	})
}

// do sends a JSON request and decodes a JSON answer; it returns the status
// (0 on a transport error).
func (s *stack) do(method, path, token string, body, out any) int {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, s.url(path), rd)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := s.client.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			s.t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode
}

// submit enqueues a command and returns its record.
func (s *stack) submit(container, program string, args ...string) shared.CommandExecutionRecord {
	s.t.Helper()
	var rec shared.CommandExecutionRecord
	code := s.do("POST", "/api/v1/containers/"+container+"/commands", s.userToken,
		shared.SubmitRequest{Program: program, Args: args}, &rec)
	if code != http.StatusAccepted {
		s.t.Fatalf("submit %s %v: status %d", program, args, code)
	}
	return rec
}

// get returns the current record.
func (s *stack) get(id string) shared.CommandExecutionRecord {
	s.t.Helper()
	var rec shared.CommandExecutionRecord
	if code := s.do("GET", "/api/v1/commands/"+id, s.userToken, nil, &rec); code != http.StatusOK {
		s.t.Fatalf("get %s: status %d", id, code)
	}
	return rec
}

// wait returns the record once terminal, failing after d.
func (s *stack) wait(id string, d time.Duration) shared.CommandExecutionRecord {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		var rec shared.CommandExecutionRecord
		code := s.do("GET", "/api/v1/commands/"+id+"?wait=5s", s.userToken, nil, &rec)
		if code == http.StatusOK && rec.Status.Terminal() {
			return rec
		}
		if code != http.StatusOK {
			time.Sleep(100 * time.Millisecond) // coordinator restarting
		}
	}
	s.t.Fatalf("command %s not terminal after %s: %+v", id, d, s.get(id))
	return shared.CommandExecutionRecord{}
}

// waitStatus polls until the command has the given status.
func (s *stack) waitStatus(id string, want shared.Status, d time.Duration) shared.CommandExecutionRecord {
	s.t.Helper()
	var rec shared.CommandExecutionRecord
	s.eventually(d, "command "+id+" "+string(want), func() bool {
		rec = s.get(id)
		return rec.Status == want
	})
	return rec
}

// output reads a stream's exact bytes.
func (s *stack) output(id, stream string) []byte {
	s.t.Helper()
	_, out := s.outputStatus(id, stream)
	return []byte(out)
}

// eventually polls cond every 50ms until it holds, failing after d.
func (s *stack) eventually(d time.Duration, what string, cond func() bool) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			s.t.Fatalf("timed out after %s waiting for %s", d, what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
