package runc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ExecConfig describes one program to run in a container.
type ExecConfig struct {
	ContainerID string
	Program     string
	Args        []string
	// Stdout and Stderr receive the program's output, each byte once, and
	// only after the program is known to have started (see the package
	// doc). Writes may block: the program then blocks on its pipe, which is
	// how a caller applies back-pressure. nil discards.
	Stdout io.Writer
	Stderr io.Writer
}

// ExecError means the program never ran: runc could not start it (not found,
// not executable, the container is gone or stopped). Reason is runc's own
// message.
type ExecError struct {
	ContainerID string
	Program     string
	Reason      string
	// Err is the underlying error when there is one (ErrNotExist for a
	// container runc does not know).
	Err error
}

func (e *ExecError) Error() string {
	return fmt.Sprintf("could not start %q in container %s: %s", e.Program, e.ContainerID, e.Reason)
}

func (e *ExecError) Unwrap() error { return e.Err }

// ErrNotStarted is returned by Signal before the program is known to have
// started or when it never did.
var ErrNotStarted = errors.New("program not started")

// Result is how a program that ran ended.
type Result struct {
	// ExitCode is runc exec's status, which is the program's own: 0..255,
	// or 128+n when the program was killed by signal n.
	ExitCode int
	// Pid is the program's pid in the host's pid namespace.
	Pid int
}

// Process is a program started by Exec. Wait must be called to release it.
type Process struct {
	cfg     ExecConfig
	cmd     *exec.Cmd
	dir     string
	pidFile string
	logFile string

	exited  chan struct{} // closed when runc exec has exited (cmd.Wait returned)
	cleaned chan struct{} // closed when the scratch directory is gone (see Wait)
	remove  func(string) error

	decided chan struct{} // closed once started and pid are known
	started bool
	pid     int

	readers sync.WaitGroup
	mu      sync.Mutex // guards the fields below
	counts  [2]int64   // bytes passed on per stream
	errHead []byte     // first bytes of stderr, to recognise an execve failure
	pre     [2][]byte  // first bytes runc wrote when the program never started

	stopOnce   sync.Once
	killedRunc bool // set by Stop's last resort, read after exited

	waitOnce sync.Once
	result   Result
	err      error
}

const (
	headBytes = 4096
	// pidPollMax bounds how long output waits for the pid file to appear
	// between polls; runc writes it within milliseconds of the exec.
	pidPollMax = 20 * time.Millisecond
)

// Exec starts args in container id with `runc exec` and returns at once.
// ctx bounds only the preparation (runc state, reading the bundle); the
// program is not tied to it — stop it with Stop, never by killing runc.
// A container runc does not know gives an *ExecError wrapping ErrNotExist.
func (r *Runner) Exec(ctx context.Context, cfg ExecConfig) (*Process, error) {
	pr, err := r.Prepare(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return pr.Start()
}

// Prepared is an exec made ready to start: the container's process spec
// read and written to its scratch directory. Nothing runs until Start; an
// exec that will not be started must be Discarded.
type Prepared struct {
	r    *Runner
	cfg  ExecConfig
	dir  string
	once sync.Once
}

// Prepare does what Exec does before it starts runc: it finds the
// container's bundle, reads its process, and writes the exec's spec. It
// takes a millisecond or two (more on a busy disk), which a caller that
// must wait for something else before it may run the program — the agent
// waits for the coordinator to record the start — spends meanwhile rather
// than after. Errors are Exec's.
func (r *Runner) Prepare(ctx context.Context, cfg ExecConfig) (*Prepared, error) {
	args := append([]string{cfg.Program}, cfg.Args...)
	spec, err := r.ProcessSpec(ctx, cfg.ContainerID, args)
	if err != nil {
		if errors.Is(err, ErrNotExist) {
			return nil, &ExecError{ContainerID: cfg.ContainerID, Program: cfg.Program, Reason: "container does not exist on this host", Err: err}
		}
		return nil, fmt.Errorf("prepare exec in container %s: %w", cfg.ContainerID, err)
	}
	dir, err := os.MkdirTemp(r.TempDir, strings.TrimSuffix(execDirPattern, "*"))
	if err != nil {
		return nil, fmt.Errorf("prepare exec in container %s: %w", cfg.ContainerID, err)
	}
	// Lets a later agent reap the program should this one die
	// (ReapOrphans), and remove the directory of one it never started.
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		r.removeDir(dir)
		return nil, fmt.Errorf("prepare exec in container %s: %w", cfg.ContainerID, err)
	}
	raw, err := json.Marshal(spec)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "process.json"), raw, 0o600)
	}
	if err != nil {
		r.removeDir(dir)
		return nil, fmt.Errorf("write process spec for container %s: %w", cfg.ContainerID, err)
	}
	return &Prepared{r: r, cfg: cfg, dir: dir}, nil
}

// Discard removes an exec that will not be started. It does nothing once
// Start was called.
func (pr *Prepared) Discard() {
	pr.once.Do(func() { pr.r.removeDir(pr.dir) })
}

// Start starts the prepared exec as Exec does. It may be called once; a
// failed Start leaves nothing behind.
func (pr *Prepared) Start() (*Process, error) {
	started := false
	pr.once.Do(func() { started = true })
	if !started {
		return nil, errors.New("prepared exec started twice or discarded")
	}
	r, cfg, dir := pr.r, pr.cfg, pr.dir
	p := &Process{
		cfg:     cfg,
		dir:     dir,
		pidFile: filepath.Join(dir, "pid"),
		logFile: filepath.Join(dir, "runc.log"),
		exited:  make(chan struct{}),
		cleaned: make(chan struct{}),
		remove:  r.removeDir,
		decided: make(chan struct{}),
	}
	specFile := filepath.Join(dir, "process.json")

	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		r.removeDir(dir)
		return nil, fmt.Errorf("exec in container %s: %w", cfg.ContainerID, err)
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		stdoutR.Close()
		stdoutW.Close()
		r.removeDir(dir)
		return nil, fmt.Errorf("exec in container %s: %w", cfg.ContainerID, err)
	}

	// Our own pipes rather than exec.Cmd's copying goroutines: cmd.Wait
	// then returns when runc exits, independently of whether anyone reads,
	// which lets the output wait for the start decision without deadlock.
	p.cmd = exec.Command(r.binary(), "--root", r.root(), "--log", p.logFile, "--log-format", "json",
		"exec", "--process", specFile, "--pid-file", p.pidFile, cfg.ContainerID)
	p.cmd.Stdout = stdoutW
	p.cmd.Stderr = stderrW
	// Its own process group, so a Ctrl-C at the agent's terminal does not
	// reach runc, which would forward it to the program.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = p.cmd.Start()
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		stdoutR.Close()
		stderrR.Close()
		r.removeDir(dir)
		return nil, fmt.Errorf("run %s exec: %w", r.binary(), err)
	}

	go func() {
		// The status is read from cmd.ProcessState; a non-zero exit is
		// not an error here.
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	go p.watchStart()
	p.readers.Add(2)
	go p.copy(0, stdoutR, cfg.Stdout)
	go p.copy(1, stderrR, cfg.Stderr)
	return p, nil
}

// watchStart decides whether the program started: the pid file appears
// (runc writes it atomically, by rename) or runc exits without it.
func (p *Process) watchStart() {
	defer close(p.decided)
	wait := time.Millisecond
	for {
		if pid, ok := p.readPid(); ok {
			p.started, p.pid = true, pid
			return
		}
		select {
		case <-p.exited:
			p.pid, p.started = p.readPid()
			return
		case <-time.After(wait):
		}
		if wait < pidPollMax {
			wait *= 2
		}
	}
}

func (p *Process) readPid() (int, bool) {
	b, err := os.ReadFile(p.pidFile)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// copy passes one stream on once the start is decided. Before that nothing
// is read, so the program blocks once the pipe is full (64 KiB) for the few
// milliseconds until runc writes the pid file.
func (p *Process) copy(stream int, r *os.File, w io.Writer) {
	defer p.readers.Done()
	defer r.Close()
	<-p.decided
	buf := make([]byte, 64*1024)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			p.consume(stream, buf[:n], &w)
		}
		if err != nil {
			return
		}
	}
}

func (p *Process) consume(stream int, b []byte, w *io.Writer) {
	if !p.started {
		// Only runc wrote this: keep its beginning for the error message.
		p.mu.Lock()
		if room := headBytes - len(p.pre[stream]); room > 0 {
			p.pre[stream] = append(p.pre[stream], b[:min(room, len(b))]...)
		}
		p.mu.Unlock()
		return
	}
	p.mu.Lock()
	p.counts[stream] += int64(len(b))
	if stream == 1 && len(p.errHead) < headBytes {
		p.errHead = append(p.errHead, b[:min(headBytes-len(p.errHead), len(b))]...)
	}
	p.mu.Unlock()
	if *w == nil {
		return
	}
	if _, err := (*w).Write(b); err != nil {
		// The caller no longer wants output; keep draining so runc and
		// the program are never blocked on a pipe nobody reads.
		*w = nil
	}
}

// Pid returns the program's host pid, or 0 before it is known to have
// started.
func (p *Process) Pid() int {
	select {
	case <-p.decided:
		return p.pid
	default:
		return 0
	}
}

// Started is closed once it is known whether the program started; Pid is
// then non-zero if it did.
func (p *Process) Started() <-chan struct{} { return p.decided }

// Signal sends sig to the program's process group (the program and the
// children it did not move elsewhere). It is a no-op once runc has exited,
// so a recycled pid is never signalled.
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.decided:
	default:
		return ErrNotStarted
	}
	if !p.started {
		return ErrNotStarted
	}
	select {
	case <-p.exited:
		return nil
	default:
	}
	err := syscall.Kill(-p.pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		// Not a group leader after all (or the group is gone): the process.
		err = syscall.Kill(p.pid, sig)
	}
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("signal %v to pid %d: %w", sig, p.pid, err)
	}
	return nil
}

// Stop ends the program: SIGTERM to its process group, SIGKILL after
// killAfter, and — only if runc exec still has not exited killAfter after
// that, which means a descendant that left the group holds the output open —
// SIGKILL to runc exec itself. It returns when runc exec has exited. Calling
// it again, or concurrently, just waits.
func (p *Process) Stop(killAfter time.Duration) {
	p.stopOnce.Do(func() {
		select {
		case <-p.decided:
		case <-p.exited:
		}
		<-p.decided
		if p.started {
			_ = p.Signal(syscall.SIGTERM)
			if p.waitExited(killAfter) {
				return
			}
			_ = p.Signal(syscall.SIGKILL)
			if p.waitExited(killAfter) {
				return
			}
		}
		select {
		case <-p.exited:
			return
		default:
		}
		p.mu.Lock()
		p.killedRunc = true
		p.mu.Unlock()
		_ = p.cmd.Process.Kill()
	})
	<-p.exited
}

func (p *Process) waitExited(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exited:
		return true
	case <-t.C:
		return false
	}
}

// Wait waits for runc exec to exit and the output to be passed on. It
// returns an *ExecError when the program never ran, another error when the
// outcome is unknown (runc itself was killed), and otherwise the program's
// exit status — a non-zero status is not an error.
//
// The exec's scratch directory is removed after Wait has its answer, not
// before: a few unlinks on the agent's disk (a millisecond or more when it
// is busy) that the command's finish need not wait for. Cleaned says when
// it is gone; a caller that stops the agent waits for it, so a later agent
// does not take the directory for an orphan's.
func (p *Process) Wait() (Result, error) {
	p.waitOnce.Do(func() {
		<-p.exited
		<-p.decided
		p.readers.Wait()
		p.result, p.err = p.outcome()
		go func() {
			defer close(p.cleaned)
			p.remove(p.dir)
		}()
	})
	return p.result, p.err
}

// Cleaned is closed once Wait has removed the exec's scratch directory.
func (p *Process) Cleaned() <-chan struct{} { return p.cleaned }

// Counts returns the bytes passed on so far for stdout and stderr.
func (p *Process) Counts() (stdout, stderr int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[0], p.counts[1]
}

func (p *Process) outcome() (Result, error) {
	state := p.cmd.ProcessState
	if !p.started {
		return Result{}, &ExecError{ContainerID: p.cfg.ContainerID, Program: p.cfg.Program, Reason: p.startFailure(state)}
	}
	res := Result{Pid: p.pid}
	ws, _ := state.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		p.mu.Lock()
		killedRunc := p.killedRunc
		p.mu.Unlock()
		if killedRunc {
			return res, fmt.Errorf("runc exec had to be killed (signal %v) after the program's process group was killed; a process that left the group kept its output open; exit status unknown", ws.Signal())
		}
		return res, fmt.Errorf("runc exec was killed by signal %v; the program's exit status is unknown", ws.Signal())
	}
	res.ExitCode = state.ExitCode()
	if reason, ok := p.execveFailure(res.ExitCode); ok {
		return res, &ExecError{ContainerID: p.cfg.ContainerID, Program: p.cfg.Program, Reason: reason}
	}
	return res, nil
}

// startFailure builds the reason runc gave for not starting the program:
// its log file first (it holds only runc's messages), then what it printed.
func (p *Process) startFailure(state *os.ProcessState) string {
	if b, err := os.ReadFile(p.logFile); err == nil {
		if msg := runcMessage(b); msg != "" {
			return msg
		}
	}
	p.mu.Lock()
	pre := strings.TrimSpace(string(p.pre[1]) + "\n" + string(p.pre[0]))
	p.mu.Unlock()
	if pre != "" {
		return truncate([]byte(pre), 2000)
	}
	return fmt.Sprintf("runc exec ended (%v) without starting the program", state)
}

// execveRe is runc init's message when execve(2) fails after runc handed
// over to it (runc 1.1: "exec <path>: <errno text>", status 1).
var execveRe = regexp.MustCompile(`^exec (.+): (exec format error|no such file or directory|permission denied|not a directory|is a directory|text file busy|too many levels of symbolic links|file name too long|argument list too long|cannot allocate memory|input/output error)\n$`)

// execveFailure recognises that case by its exact shape, so a program that
// merely exits 1 is never mistaken for one that could not be executed.
func (p *Process) execveFailure(code int) (string, bool) {
	if code != 1 {
		return "", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.counts[0] != 0 || p.counts[1] != int64(len(p.errHead)) {
		return "", false
	}
	m := execveRe.FindSubmatch(p.errHead)
	if m == nil {
		return "", false
	}
	path := string(m[1])
	if path != p.cfg.Program && filepath.Base(path) != filepath.Base(p.cfg.Program) {
		return "", false
	}
	return strings.TrimSuffix(string(m[0]), "\n"), true
}
