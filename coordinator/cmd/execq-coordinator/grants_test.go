package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/execq/execq/coordinator/testpg"
	"github.com/execq/execq/shared"
)

// TestGrantsCLI: grants add prints the grant with its grant_id (the same
// grant again when repeated), list shows it, revoke deletes it; bad input
// exits 1 with a message naming the flag and writes nothing.
func TestGrantsCLI(t *testing.T) {
	t.Parallel()
	env := map[string]string{"EXECQ_DATABASE_URL": testpg.New(t)}
	cli := func(want int, args ...string) (string, string) {
		t.Helper()
		code, stdout, stderr := runMain(t, env, args...)
		if code != want {
			t.Fatalf("%v: exit %d, want %d (stdout %q, stderr %q)", args, code, want, stdout, stderr)
		}
		return stdout, stderr
	}
	list := func() []shared.Grant {
		t.Helper()
		out, _ := cli(0, "grants", "list")
		var l shared.GrantList
		if err := json.Unmarshal([]byte(out), &l); err != nil || l.Grants == nil {
			t.Fatalf("grants list printed %q: %v", out, err)
		}
		return l.Grants
	}
	out, _ := cli(0, "users", "create", "--name", "dana")
	var user struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal([]byte(out), &user); err != nil {
		t.Fatal(err)
	}
	if gs := list(); len(gs) != 0 {
		t.Fatalf("a new user has grants: %+v", gs)
	}

	out, _ = cli(0, "grants", "add", "--user", "dana", "--selector", "team=db, node=host-1")
	var g shared.Grant
	if err := json.Unmarshal([]byte(out), &g); err != nil || g.ID == "" {
		t.Fatalf("grants add printed %q: %v", out, err)
	}
	if g.UserID != user.UserID || g.User != "dana" || g.Selector != "node=host-1,team=db" {
		t.Fatalf("grant %+v", g)
	}
	out, _ = cli(0, "grants", "add", "--user", "dana", "--selector", "node=host-1,team=db")
	var again shared.Grant
	if err := json.Unmarshal([]byte(out), &again); err != nil || again.ID != g.ID {
		t.Fatalf("repeated grants add printed %q (%v), want grant %s", out, err, g.ID)
	}
	if gs := list(); len(gs) != 1 || gs[0].ID != g.ID || gs[0].Selector != g.Selector {
		t.Fatalf("grants list %+v, want [%+v]", gs, g)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"grants", "add", "--user", "dana", "--selector", "team!=db"}, "--selector"},
		{[]string{"grants", "add", "--user", "dana", "--selector", ""}, "must not be empty"},
		{[]string{"grants", "add", "--user", "dana"}, "must not be empty"},
		{[]string{"grants", "add", "--selector", "team=db"}, "--user is required"},
		{[]string{"grants", "add", "--user", "nobody", "--selector", "team=db"}, `no user named "nobody"`},
		{[]string{"grants", "revoke", "--id", "nope"}, "not a grant ID"},
		{[]string{"grants", "revoke", "--id", "0f8fad5b-d9cb-469f-a165-70867728950e"}, "no grant 0f8fad5b"},
		{[]string{"grants", "frobnicate"}, "want add, list or revoke"},
		{[]string{"grants"}, "add, list or revoke"},
		{[]string{"grants", "list", "extra"}, "unexpected arguments"},
	} {
		_, stderr := cli(1, tc.args...)
		if !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: stderr %q does not say %q", tc.args, stderr, tc.want)
		}
	}
	if gs := list(); len(gs) != 1 {
		t.Fatalf("refused commands changed the grants: %+v", gs)
	}

	out, _ = cli(0, "grants", "revoke", "--id", g.ID)
	var revoked shared.Grant
	if err := json.Unmarshal([]byte(out), &revoked); err != nil || revoked.ID != g.ID {
		t.Fatalf("grants revoke printed %q: %v", out, err)
	}
	if gs := list(); len(gs) != 0 {
		t.Fatalf("after revoke: %+v", gs)
	}
	cli(1, "grants", "revoke", "--id", g.ID)
}
