package runc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Defaults for a zero Runner.
const (
	DefaultBinary = "runc"
	DefaultRoot   = "/run/runc"
)

// ErrNotExist is returned when runc has no container with the given ID.
var ErrNotExist = errors.New("container does not exist")

// Runner runs the runc binary against one runc root. The zero value uses
// DefaultBinary and DefaultRoot. A Runner is safe for concurrent use.
type Runner struct {
	// Binary is the runc executable, a path or a name looked up in PATH.
	Binary string
	// Root is runc's state directory (runc --root).
	Root string
	// TempDir holds each exec's scratch files (process spec, pid file, runc
	// log). Empty means os.TempDir().
	TempDir string

	mu      sync.Mutex
	bundles map[string]bundleEntry // container ID -> bundle, see bundle()

	// removeDirFn replaces os.RemoveAll for an exec's scratch directory in
	// tests (export_test.go).
	removeDirFn func(string) error
}

func (r *Runner) removeDir(dir string) error {
	if r.removeDirFn != nil {
		return r.removeDirFn(dir)
	}
	return os.RemoveAll(dir)
}

// bundleEntry remembers a container's bundle together with the identity of
// its state directory under the root (inode and birth time), which changes
// when a container of the same ID is deleted and created again. (Not the
// ctime: every runc exec touches the directory.)
type bundleEntry struct {
	path  string
	ino   uint64
	btime unix.StatxTimestamp
}

// Container is one container as `runc list` and `runc state` describe it.
type Container struct {
	ID      string    `json:"id"`
	Pid     int       `json:"pid"`
	Status  string    `json:"status"` // created, running, paused, stopped
	Bundle  string    `json:"bundle"`
	Created time.Time `json:"created"`
}

func (r *Runner) binary() string {
	if r.Binary == "" {
		return DefaultBinary
	}
	return r.Binary
}

func (r *Runner) root() string {
	if r.Root == "" {
		return DefaultRoot
	}
	return r.Root
}

// globalArgs are the flags every runc invocation starts with. JSON logs let
// us pick runc's own error message out of its output.
func (r *Runner) globalArgs() []string {
	return []string{"--root", r.root(), "--log-format", "json"}
}

// List returns every container under the root. A root that does not exist
// yet holds no containers, which runc reports as an empty list.
func (r *Runner) List(ctx context.Context) ([]Container, error) {
	out, err := r.run(ctx, "list", "--format", "json")
	if err != nil {
		return nil, fmt.Errorf("list runc containers under %s: %w", r.root(), err)
	}
	var cs []Container
	// runc prints "null" for an empty root.
	if err := json.Unmarshal(out, &cs); err != nil {
		return nil, fmt.Errorf("list runc containers under %s: decode %q: %w", r.root(), truncate(out, 200), err)
	}
	return cs, nil
}

// State returns one container's state. It wraps ErrNotExist when runc does
// not know the container.
func (r *Runner) State(ctx context.Context, id string) (Container, error) {
	out, err := r.run(ctx, "state", id)
	if err != nil {
		return Container{}, fmt.Errorf("runc state %s: %w", id, err)
	}
	var c Container
	if err := json.Unmarshal(out, &c); err != nil {
		return Container{}, fmt.Errorf("runc state %s: decode: %w", id, err)
	}
	return c, nil
}

// ProcessSpec returns the process spec to exec args in container id: the
// container's own process from its bundle's config.json with Args replaced
// and no terminal. Keeping the rest means an exec gets the same user, env,
// cwd, capabilities, rlimits and security labels as the container's init —
// `runc exec --process` would otherwise not apply the container's
// no_new_privileges, AppArmor profile or user.
func (r *Runner) ProcessSpec(ctx context.Context, id string, args []string) (*specs.Process, error) {
	bundle, err := r.bundle(ctx, id)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("read bundle config of container %s: %w", id, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return nil, fmt.Errorf("decode bundle config %s: %w", cfgPath, err)
	}
	p := spec.Process
	if p == nil {
		// A bundle without a process section is unusual but valid for
		// runc create; fall back to what runc spec would generate.
		p = &specs.Process{Cwd: "/", Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
	}
	p.Args = append([]string(nil), args...)
	p.Terminal = false
	p.ConsoleSize = nil
	p.CommandLine = ""
	if p.Cwd == "" {
		p.Cwd = "/"
	}
	return p, nil
}

// bundle returns container id's bundle directory. `runc state` costs a
// third of a `runc exec` (a fork and runc's start-up, ~20ms), so the answer
// is remembered while the container's state directory under the root is the
// same one (same inode and birth time); a container deleted and created
// again under the same ID gets a new directory and is asked about afresh.
// On a filesystem without birth times nothing is remembered.
func (r *Runner) bundle(ctx context.Context, id string) (string, error) {
	key, keyed := r.stateDirIdentity(id)
	if keyed {
		r.mu.Lock()
		e, ok := r.bundles[id]
		r.mu.Unlock()
		if ok && e.ino == key.ino && e.btime == key.btime {
			return e.path, nil
		}
	}
	st, err := r.State(ctx, id)
	if err != nil {
		r.mu.Lock()
		delete(r.bundles, id)
		r.mu.Unlock()
		return "", err
	}
	if st.Bundle == "" {
		return "", fmt.Errorf("runc state %s: no bundle path", id)
	}
	if keyed {
		key.path = st.Bundle
		r.mu.Lock()
		if r.bundles == nil {
			r.bundles = make(map[string]bundleEntry)
		}
		r.bundles[id] = key
		r.mu.Unlock()
	}
	return st.Bundle, nil
}

func (r *Runner) stateDirIdentity(id string) (bundleEntry, bool) {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return bundleEntry{}, false
	}
	var st unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, filepath.Join(r.root(), id), 0, unix.STATX_INO|unix.STATX_BTIME|unix.STATX_TYPE, &st)
	if err != nil || st.Mask&unix.STATX_BTIME == 0 || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return bundleEntry{}, false
	}
	return bundleEntry{ino: st.Ino, btime: st.Btime}, true
}

// Kill sends sig (a name like "KILL" or a number) to container id's init
// process with `runc kill`. The agent itself never kills containers; this is
// for tests and tools.
func (r *Runner) Kill(ctx context.Context, id, sig string) error {
	if _, err := r.run(ctx, "kill", id, sig); err != nil {
		return fmt.Errorf("runc kill %s %s: %w", id, sig, err)
	}
	return nil
}

// Delete removes container id with `runc delete --force`.
func (r *Runner) Delete(ctx context.Context, id string) error {
	if _, err := r.run(ctx, "delete", "--force", id); err != nil {
		return fmt.Errorf("runc delete %s: %w", id, err)
	}
	return nil
}

// run runs a short runc subcommand and returns its stdout. On failure the
// error carries runc's own message (ErrNotExist when it says so).
func (r *Runner) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.binary(), append(r.globalArgs(), args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg := runcMessage(stderr.Bytes())
		if msg == "" {
			return nil, err
		}
		if isNotExist(msg) {
			return nil, fmt.Errorf("%w (runc: %s)", ErrNotExist, msg)
		}
		return nil, fmt.Errorf("%s (%w)", msg, err)
	}
	return stdout.Bytes(), nil
}

// isNotExist interprets runc's message for a missing container. runc speaks
// to us only through text, so this one function is where its wording is
// matched.
func isNotExist(msg string) bool {
	return strings.Contains(msg, "container does not exist")
}

// runcMessage extracts runc's error messages from its JSON log lines (level
// error or fatal), falling back to the raw text for lines that are not JSON.
func runcMessage(b []byte) string {
	var msgs []string
	for _, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var entry struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if line[0] == '{' && json.Unmarshal(line, &entry) == nil {
			if entry.Level == "error" || entry.Level == "fatal" || entry.Level == "panic" {
				msgs = appendUnique(msgs, entry.Msg)
			}
			continue
		}
		msgs = appendUnique(msgs, string(line))
	}
	return truncate([]byte(strings.Join(msgs, "; ")), 2000)
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}
