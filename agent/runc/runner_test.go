package runc_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/execq/execq/agent/runc"
	"github.com/execq/execq/agent/runc/runctest"
)

func TestListAndState(t *testing.T) {
	root := runctest.NewRoot(t)
	a := runctest.Start(t, runctest.Options{Root: root})
	b := runctest.Start(t, runctest.Options{Root: root, ID: "web-1"})
	ctx := context.Background()

	cs, err := a.Runner.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
		if c.Status != "running" || c.Bundle == "" || c.Pid <= 0 {
			t.Errorf("container %+v", c)
		}
	}
	slices.Sort(ids)
	want := []string{a.ID, b.ID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("List ids %v, want %v", ids, want)
	}

	st, err := a.Runner.State(ctx, a.ID)
	if err != nil || st.Bundle != a.Bundle {
		t.Fatalf("State = %+v, %v; want bundle %s", st, err, a.Bundle)
	}
	if _, err := a.Runner.State(ctx, "nope"); !errors.Is(err, runc.ErrNotExist) {
		t.Fatalf("State(nope) = %v, want ErrNotExist", err)
	}
}

func TestListEmptyRoot(t *testing.T) {
	r := &runc.Runner{Binary: runctest.RuncBinary(t), Root: runctest.NewRoot(t)}
	cs, err := r.List(context.Background())
	if err != nil || len(cs) != 0 {
		t.Fatalf("List = %v, %v; want empty", cs, err)
	}
}

func TestProcessSpecKeepsContainerProcess(t *testing.T) {
	c := runctest.Start(t, runctest.Options{Env: []string{"A=b"}, Cwd: "/tmp"})
	p, err := c.Runner.ProcessSpec(context.Background(), c.ID, []string{"-x", "--y"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Args, []string{"-x", "--y"}) || p.Terminal || p.Cwd != "/tmp" || !slices.Contains(p.Env, "A=b") {
		t.Fatalf("spec %+v", p)
	}
	if p.Capabilities == nil || !p.NoNewPrivileges {
		t.Fatalf("the container's confinement was not kept: %+v", p)
	}
	// The bundle is remembered: no second `runc state` for the same
	// container (a runc that cannot run proves it).
	bin := c.Runner.Binary
	c.Runner.Binary = "/no/such/runc"
	defer func() { c.Runner.Binary = bin }()
	if _, err := c.Runner.ProcessSpec(context.Background(), c.ID, []string{"true"}); err != nil {
		t.Fatalf("second ProcessSpec ran runc: %v", err)
	}
}

func TestProcessSpecFollowsARecreatedContainer(t *testing.T) {
	root := runctest.NewRoot(t)
	first := runctest.Start(t, runctest.Options{Root: root, Env: []string{"GEN=1"}})
	ctx := context.Background()
	p, err := first.Runner.ProcessSpec(ctx, first.ID, []string{"true"})
	if err != nil || !slices.Contains(p.Env, "GEN=1") {
		t.Fatalf("first: %v %v", p, err)
	}
	// Same ID, new bundle: the remembered bundle must not be used.
	first.Remove(t)
	if _, err := first.Runner.ProcessSpec(ctx, first.ID, []string{"true"}); !errors.Is(err, runc.ErrNotExist) {
		t.Fatalf("removed container: %v", err)
	}
	second := runctest.Start(t, runctest.Options{Root: root, ID: first.ID, Env: []string{"GEN=2"}})
	p, err = first.Runner.ProcessSpec(ctx, second.ID, []string{"true"})
	if err != nil || !slices.Contains(p.Env, "GEN=2") || slices.Contains(p.Env, "GEN=1") {
		t.Fatalf("recreated: %v %v", p, err)
	}
}
