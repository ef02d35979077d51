package runctest

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/agent/runc"
)

// Busybox is the statically linked busybox copied into every bundle.
var Busybox = "/bin/busybox"

// Options tune a container. The zero value is a fresh root with one running
// container whose init sleeps.
type Options struct {
	// Root is the runc root to create the container under; empty makes a
	// new one (see NewRoot). Several containers may share a root.
	Root string
	// ID is the container ID; empty makes a random canonical UUID.
	ID string
	// Args is the container's init process; empty means sleep 3600.
	Args []string
	// Env is appended to the container's environment.
	Env []string
	// Cwd is the container's working directory; empty means "/".
	Cwd string
	// Annotations are written into config.json (the agent reports the
	// valid ones as labels).
	Annotations map[string]string
}

// Container is a running test container.
type Container struct {
	ID     string
	Root   string // runc root
	Bundle string // bundle directory (holds config.json)
	Rootfs string // Bundle/rootfs
	// Runner runs runc against Root.
	Runner *runc.Runner
}

// RuncBinary returns the runc to use, failing the test when there is none.
func RuncBinary(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("runc")
	if err != nil {
		t.Fatalf("runctest: runc not found in PATH (install runc): %v", err)
	}
	return p
}

// NewRoot returns a fresh, empty runc root in t.TempDir().
func NewRoot(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "runc-root")
}

// Start builds a busybox bundle and starts a container from it. The
// container is killed and deleted when the test ends.
func Start(t testing.TB, opts Options) *Container {
	t.Helper()
	bin := RuncBinary(t)
	if os.Geteuid() != 0 {
		t.Fatalf("runctest: runc containers need root (euid %d)", os.Geteuid())
	}
	if opts.Root == "" {
		opts.Root = NewRoot(t)
	}
	if opts.ID == "" {
		opts.ID = uuid.NewString()
	}
	if len(opts.Args) == 0 {
		opts.Args = []string{"sleep", "3600"}
	}
	c := &Container{
		ID:     opts.ID,
		Root:   opts.Root,
		Bundle: t.TempDir(),
		Runner: &runc.Runner{Binary: bin, Root: opts.Root, TempDir: t.TempDir()},
	}
	c.Rootfs = filepath.Join(c.Bundle, "rootfs")
	buildRootfs(t, c.Rootfs)
	writeConfig(t, bin, c.Bundle, opts)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--root", c.Root, "run", "-d", "--bundle", c.Bundle, c.ID)
	// Detached: the container's init inherits runc's stdio, so a pipe
	// here would never close and Run would never return. runc's own
	// complaints go to a file instead.
	errFile, err := os.Create(filepath.Join(c.Bundle, "runc-run.err"))
	if err != nil {
		t.Fatalf("runctest: %v", err)
	}
	defer errFile.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, errFile
	t.Cleanup(func() { c.Remove(t) })
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(errFile.Name())
		t.Fatalf("runctest: runc run %s: %v: %s", c.ID, err, msg)
	}
	return c
}

// Remove kills and deletes the container now (for "container gone" tests).
// It is idempotent.
func (c *Container) Remove(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Runner.State(ctx, c.ID); err != nil {
		return
	}
	if err := c.Runner.Delete(ctx, c.ID); err != nil {
		t.Errorf("runctest: %v", err)
	}
}

// WriteFile writes a file into the container's root filesystem; name is a
// path inside the container.
func (c *Container) WriteFile(t testing.TB, name string, data []byte, perm os.FileMode) {
	t.Helper()
	p := filepath.Join(c.Rootfs, filepath.Clean("/"+name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatalf("runctest: %v", err)
	}
	if err := os.WriteFile(p, data, perm); err != nil {
		t.Fatalf("runctest: %v", err)
	}
	// WriteFile's perm is filtered by the umask; tests want it exact.
	if err := os.Chmod(p, perm); err != nil {
		t.Fatalf("runctest: %v", err)
	}
}

// buildRootfs makes rootfs/bin/busybox and a symlink per applet.
func buildRootfs(t testing.TB, rootfs string) {
	t.Helper()
	if _, err := os.Stat(Busybox); err != nil {
		t.Fatalf("runctest: busybox not found at %s (install busybox-static): %v", Busybox, err)
	}
	for _, d := range []string{"bin", "tmp", "proc", "dev", "sys", "etc", "root"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatalf("runctest: %v", err)
		}
	}
	if err := os.Chmod(filepath.Join(rootfs, "tmp"), 0o1777); err != nil {
		t.Fatalf("runctest: %v", err)
	}
	data, err := os.ReadFile(Busybox)
	if err != nil {
		t.Fatalf("runctest: %v", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatalf("runctest: %v", err)
	}
	out, err := exec.Command(Busybox, "--list").Output()
	if err != nil {
		t.Fatalf("runctest: busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil && !os.IsExist(err) {
			t.Fatalf("runctest: %v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"), 0o644); err != nil {
		t.Fatalf("runctest: %v", err)
	}
}

// writeConfig generates config.json with `runc spec` and edits it as a
// generic document, so fields this package does not know are kept.
func writeConfig(t testing.TB, bin, bundle string, opts Options) {
	t.Helper()
	if out, err := exec.Command(bin, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		t.Fatalf("runctest: runc spec: %v: %s", err, out)
	}
	path := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("runctest: %v", err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("runctest: decode config.json: %v", err)
	}
	proc := cfg["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = opts.Args
	if len(opts.Env) > 0 {
		env, _ := proc["env"].([]any)
		for _, e := range opts.Env {
			env = append(env, e)
		}
		proc["env"] = env
	}
	if opts.Cwd != "" {
		proc["cwd"] = opts.Cwd
	}
	if len(opts.Annotations) > 0 {
		cfg["annotations"] = opts.Annotations
	}
	root := cfg["root"].(map[string]any)
	root["readonly"] = false
	cfg["hostname"] = "execq-test"
	raw, err = json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatalf("runctest: %v", err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatalf("runctest: %v", err)
	}
}
