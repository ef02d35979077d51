package runc_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/execq/execq/agent/runc"
	"github.com/execq/execq/agent/runc/runctest"
	"github.com/execq/execq/internal/syncbuf"
)

// TestReapOrphans: a program whose agent died is killed, with its process
// group, by the next agent; one whose agent lives is left alone.
func TestReapOrphans(t *testing.T) {
	c := runctest.Start(t, runctest.Options{})
	c.Runner.TempDir = t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var out syncbuf.Buffer
	p, err := c.Runner.Exec(context.Background(), runc.ExecConfig{ContainerID: c.ID, Program: "sh",
		Args: []string{"-c", "sleep 3600 & echo started; wait"}, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return out.String() == "started\n" })
	dirs, _ := filepath.Glob(filepath.Join(c.Runner.TempDir, "execq-exec-*"))
	if len(dirs) != 1 {
		t.Fatalf("exec dirs %v, want one", dirs)
	}
	owner := filepath.Join(dirs[0], "agent.pid")

	// Owned by a live process (this test's parent): not an orphan.
	if err := os.WriteFile(owner, []byte(strconv.Itoa(os.Getppid())), 0o600); err != nil {
		t.Fatal(err)
	}
	if n := c.Runner.ReapOrphans(log); n != 0 {
		t.Fatalf("reaped %d programs of a live agent", n)
	}
	select {
	case <-exited(p):
		t.Fatal("a live agent's program was ended")
	case <-time.After(200 * time.Millisecond):
	}

	// Owned by a process that is gone: the program is an orphan.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(owner, []byte(strconv.Itoa(dead.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	if n := c.Runner.ReapOrphans(log); n != 1 {
		t.Fatalf("reaped %d programs, want the orphan", n)
	}
	select {
	case <-exited(p):
	case <-time.After(20 * time.Second):
		t.Fatal("the orphan is still running")
	}
	assertOnlyInit(t, c)
	if _, err := os.Stat(dirs[0]); !os.IsNotExist(err) {
		t.Fatalf("the orphan's scratch directory is still there: %v", err)
	}
}

func exited(p *runc.Process) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		p.Wait() //nolint:errcheck // only the end matters here
		close(ch)
	}()
	return ch
}
