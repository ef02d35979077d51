package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/coordinator/testpg"
)

// cli runs the binary against one database and decodes its JSON stdout.
type cli struct {
	t   *testing.T
	env map[string]string
}

// ok runs args, wants exit 0 and decodes stdout into out (unless nil).
func (c cli) ok(out any, args ...string) {
	c.t.Helper()
	code, stdout, stderr := runMain(c.t, c.env, args...)
	if code != 0 {
		c.t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(stdout), out); err != nil {
			c.t.Fatalf("%v: stdout is not JSON: %v (%q)", args, err, stdout)
		}
	}
}

// fails runs args and wants exit 1, nothing on stdout, and stderr holding want.
func (c cli) fails(want string, args ...string) {
	c.t.Helper()
	code, stdout, stderr := runMain(c.t, c.env, args...)
	if code != 1 || stdout != "" || !strings.Contains(stderr, want) {
		c.t.Fatalf("%v: exit %d, stdout %q, stderr %q; want 1 with %q", args, code, stdout, stderr, want)
	}
}

// TestUsersLifecycleCLI: list, disable, enable and rotate-token by name and
// by ID, checked against what the store authenticates.
func TestUsersLifecycleCLI(t *testing.T) {
	t.Parallel()
	dbURL := testpg.New(t)
	c := cli{t, map[string]string{"EXECQ_DATABASE_URL": dbURL}}
	st := testStore(t, dbURL)
	ctx := context.Background()

	var created map[string]string
	c.ok(&created, "users", "create", "--name", "alice")
	c.ok(nil, "users", "create", "--name", "bob", "--admin")
	if _, err := st.UserByToken(ctx, created["token"]); err != nil {
		t.Fatalf("fresh token: %v", err)
	}

	var list []store.UserInfo
	c.ok(&list, "users", "list")
	if len(list) != 2 || list[0].Name != "alice" || list[0].Status != "enabled" || list[0].ID != created["user_id"] ||
		list[0].CreatedAt.IsZero() || list[0].LastSeenAt == nil || list[1].Name != "bob" || !list[1].IsAdmin {
		t.Fatalf("users list: %+v", list)
	}

	var u store.UserInfo
	c.ok(&u, "users", "disable", "--name", "alice")
	if u.Status != "disabled" || u.DisabledAt == nil || u.ID != created["user_id"] {
		t.Fatalf("disable: %+v", u)
	}
	if _, err := st.UserByToken(ctx, created["token"]); err == nil {
		t.Fatal("a disabled user's token still authenticates")
	}
	c.ok(&list, "users", "list")
	if list[0].Status != "disabled" {
		t.Fatalf("list after disable: %+v", list[0])
	}
	c.ok(&u, "users", "disable", "--id", created["user_id"]) // again: harmless
	u = store.UserInfo{}
	c.ok(&u, "users", "enable", "--id", strings.ToUpper(created["user_id"]))
	if u.Status != "enabled" || u.DisabledAt != nil {
		t.Fatalf("enable: %+v", u)
	}
	if _, err := st.UserByToken(ctx, created["token"]); err != nil {
		t.Fatalf("enabled again, the token must work: %v", err)
	}

	var rotated map[string]string
	c.ok(&rotated, "users", "rotate-token", "--name", "alice")
	if rotated["user_id"] != created["user_id"] || !strings.HasPrefix(rotated["token"], "execq_u_") || rotated["token"] == created["token"] {
		t.Fatalf("rotate-token: %v", rotated)
	}
	if _, err := st.UserByToken(ctx, created["token"]); err == nil {
		t.Fatal("the old token works after rotate-token")
	}
	if got, err := st.UserByToken(ctx, rotated["token"]); err != nil || got.ID != created["user_id"] {
		t.Fatalf("the new token: %+v %v", got, err)
	}

	c.fails("not found", "users", "disable", "--name", "nobody")
	c.fails("not found", "users", "rotate-token", "--id", "00000000-0000-0000-0000-000000000000")
	c.fails("exactly one of --name and --id", "users", "disable")
	c.fails("exactly one of --name and --id", "users", "enable", "--name", "alice", "--id", created["user_id"])
	c.fails("is not a UUID", "users", "enable", "--id", "alice")
	c.fails("unknown command", "users", "revoke", "--name", "alice")
	c.fails("unexpected arguments", "users", "list", "extra")
}

// TestNodesLifecycleCLI: list, revoke and rotate-token; revoke fails the
// node's unstarted commands and keeps its history.
func TestNodesLifecycleCLI(t *testing.T) {
	t.Parallel()
	dbURL := testpg.New(t)
	c := cli{t, map[string]string{"EXECQ_DATABASE_URL": dbURL}}
	st := testStore(t, dbURL)
	ctx := context.Background()

	var created map[string]string
	c.ok(&created, "nodes", "create", "--name", "host-1")
	var list []store.NodeInfo
	c.ok(&list, "nodes", "list")
	if len(list) != 1 || list[0].Name != "host-1" || list[0].Status != "enabled" || list[0].LastSeenAt != nil || list[0].CreatedAt.IsZero() {
		t.Fatalf("nodes list: %+v", list)
	}

	var revoked struct {
		store.NodeInfo
		CommandsFailed *int `json:"commands_failed"`
	}
	c.ok(&revoked, "nodes", "revoke", "--name", "host-1")
	if revoked.Status != "revoked" || revoked.RevokedAt == nil || revoked.CommandsFailed == nil || *revoked.CommandsFailed != 0 {
		t.Fatalf("revoke: %+v", revoked)
	}
	if _, err := st.NodeByToken(ctx, created["token"]); err == nil {
		t.Fatal("a revoked node's token still authenticates")
	}
	c.ok(&list, "nodes", "list")
	if list[0].Status != "revoked" {
		t.Fatalf("list after revoke: %+v", list[0])
	}

	var rotated map[string]string
	c.ok(&rotated, "nodes", "rotate-token", "--id", created["node_id"])
	if rotated["node_id"] != created["node_id"] || !strings.HasPrefix(rotated["token"], "execq_n_") {
		t.Fatalf("rotate-token: %v", rotated)
	}
	if _, err := st.NodeByToken(ctx, created["token"]); err == nil {
		t.Fatal("the old node token works after rotate-token")
	}
	if n, err := st.NodeByToken(ctx, rotated["token"]); err != nil || n.ID != created["node_id"] {
		t.Fatalf("rotate-token re-admits the node with the new token: %+v %v", n, err)
	}

	c.fails("not found", "nodes", "revoke", "--name", "nowhere")
	c.fails("exactly one of --name and --id", "nodes", "rotate-token")
	c.fails("unknown command", "nodes", "disable", "--name", "host-1")
}

// testStore opens the store on dbURL to check what the CLI wrote, until the
// test ends.
func testStore(t *testing.T, dbURL string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), dbURL, store.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
