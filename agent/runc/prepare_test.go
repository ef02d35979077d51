package runc_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/agent/runc"
	"github.com/execq/execq/agent/runc/runctest"
	"github.com/execq/execq/internal/syncbuf"
)

// TestWaitAnswersBeforeScratchRemoved: Wait has the program's status while
// the exec's scratch directory is still being removed (held here), so the
// agent's finish never waits for the unlinks; Cleaned closes once it is gone.
func TestWaitAnswersBeforeScratchRemoved(t *testing.T) {
	c := runctest.Start(t, runctest.Options{})
	release := make(chan struct{})
	removing := make(chan string, 1)
	runc.SetRemoveDir(c.Runner, func(dir string) error {
		removing <- dir
		<-release
		return os.RemoveAll(dir)
	})
	var out syncbuf.Buffer
	p, err := c.Runner.Exec(context.Background(), runc.ExecConfig{ContainerID: c.ID, Program: "echo", Args: []string{"hi"}, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		res, err := p.Wait()
		if err == nil && res.ExitCode != 0 {
			t.Errorf("exit %d", res.ExitCode)
		}
		waited <- err
	}()
	var dir string
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(release)
		t.Fatal("Wait did not answer while the scratch directory's removal was held")
	}
	if out.String() != "hi\n" {
		t.Fatalf("stdout %q", out.String())
	}
	select {
	case <-p.Cleaned():
		t.Fatal("Cleaned closed before the directory was removed")
	default:
	}
	select {
	case dir = <-removing:
	case <-time.After(30 * time.Second):
		t.Fatal("the scratch directory is never removed")
	}
	close(release)
	select {
	case <-p.Cleaned():
	case <-time.After(30 * time.Second):
		t.Fatal("Cleaned never closed")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("scratch directory %s still there after Cleaned: %v", dir, err)
	}
}

// TestPrepareThenStart: Prepare writes the exec's spec and runs nothing;
// Start runs it; Discard of an exec never started leaves nothing behind,
// and a discarded exec cannot be started.
func TestPrepareThenStart(t *testing.T) {
	c := runctest.Start(t, runctest.Options{})
	scratch := func() []string {
		dirs, _ := filepath.Glob(filepath.Join(c.Runner.TempDir, "execq-exec-*", "process.json"))
		return dirs
	}
	ctx := context.Background()
	var out syncbuf.Buffer
	pr, err := c.Runner.Prepare(ctx, runc.ExecConfig{ContainerID: c.ID, Program: "sh", Args: []string{"-c", "echo ran"}, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if got := scratch(); len(got) != 1 {
		t.Fatalf("prepared specs %v, want one", got)
	}
	if r := execIn(t, c, "ps", "-o", "args"); r.err != nil || strings.Contains(r.stdout, "echo ran") {
		t.Fatalf("a prepared exec runs before Start: %q %v", r.stdout, r.err)
	}
	p, err := pr.Start()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if out.String() != "ran\n" {
		t.Fatalf("stdout %q", out.String())
	}
	<-p.Cleaned()

	pr, err = c.Runner.Prepare(ctx, runc.ExecConfig{ContainerID: c.ID, Program: "true"})
	if err != nil {
		t.Fatal(err)
	}
	pr.Discard()
	if got := scratch(); len(got) != 0 {
		t.Fatalf("a discarded exec left %v", got)
	}
	if _, err := pr.Start(); err == nil {
		t.Fatal("a discarded exec started")
	}

	if _, err := c.Runner.Prepare(ctx, runc.ExecConfig{ContainerID: "no-such-container", Program: "true"}); err == nil {
		t.Fatal("prepared an exec in a container that does not exist")
	}
}
