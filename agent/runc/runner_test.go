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
}
