package store

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/coordinator/testpg"
	"github.com/execq/execq/shared"
)

// Lease figures the store tests hand to Claim, Start and Heartbeat. The TTL
// is long: a test that wants a lease expired moves lease_expires_at in the
// database rather than waiting for it.
const (
	testTTL = time.Minute
	testCap = int64(1 << 20)
)

// fixture is a store on a fresh migrated database with what most queries
// need: a user granted a node, and one container the node reported.
type fixture struct {
	t         testing.TB
	ctx       context.Context
	st        *Store
	url       string
	user      User
	node      Node
	container string
}

// setup opens a store on a new database, migrates it and creates the
// fixture's identities and container.
func setup(t testing.TB) *fixture {
	t.Helper()
	ctx := context.Background()
	url := testpg.New(t)
	st, err := Open(ctx, url, Options{MaxConns: 8})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	f := &fixture{t: t, ctx: ctx, st: st, url: url}
	if f.user, _, err = st.CreateUser(ctx, "alice", false); err != nil {
		t.Fatalf("create user: %v", err)
	}
	f.node = f.newNode("node-a")
	f.grantNode(f.user, f.node)
	f.container = uuid.NewString()
	if rej, err := st.ReplaceInventory(ctx, f.node.ID, []Container{{ID: f.container, Name: "c1", State: "running"}}); err != nil || len(rej) > 0 {
		t.Fatalf("report container: rejected %v, err %v", rej, err)
	}
	return f
}

// grantNode lets user use every container of node.
func (f *fixture) grantNode(user User, node Node) {
	f.t.Helper()
	if _, _, err := f.st.CreateGrant(f.ctx, user.Name, shared.Selector{shared.LabelNode: node.Name}); err != nil {
		f.t.Fatalf("grant node %s to %s: %v", node.Name, user.Name, err)
	}
}

// newNode creates a node.
func (f *fixture) newNode(name string) Node {
	f.t.Helper()
	n, _, err := f.st.CreateNode(f.ctx, name)
	if err != nil {
		f.t.Fatalf("create node %s: %v", name, err)
	}
	return n
}

// enqueue submits a command to the fixture's container.
func (f *fixture) enqueue(program string, args ...string) CommandWithOutput {
	f.t.Helper()
	if args == nil {
		args = []string{}
	}
	c, err := f.st.Enqueue(f.ctx, f.container, f.user.ID, shared.SubmitRequest{Program: program, Args: args})
	if err != nil {
		f.t.Fatalf("enqueue: %v", err)
	}
	return c
}

// claimOne leases the next command of the fixture's node and fails the test
// unless exactly one comes back.
func (f *fixture) claimOne() Command {
	f.t.Helper()
	cs, err := f.st.Claim(f.ctx, f.node.ID, 1, testTTL)
	if err != nil {
		f.t.Fatalf("claim: %v", err)
	}
	if len(cs) != 1 {
		f.t.Fatalf("claim returned %d commands, want 1", len(cs))
	}
	return cs[0]
}

// running enqueues a command, leases and starts it.
func (f *fixture) running() Command {
	f.t.Helper()
	f.enqueue("true")
	c := f.claimOne()
	if _, err := f.st.Start(f.ctx, c.ID, f.node.ID, c.Attempt, testTTL); err != nil {
		f.t.Fatalf("start: %v", err)
	}
	return c
}

// exec runs a statement directly, for set-up the store's API cannot do
// (moving a lease into the past, bulk rows).
func (f *fixture) exec(query string, args ...any) {
	f.t.Helper()
	// Test set-up, not a call under test: free of the statement timeout
	// Open sets (a large seed may take longer on a loaded machine).
	conn, err := f.st.db.Connx(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(f.ctx, `SET statement_timeout = 0`); err != nil {
		f.t.Fatal(err)
	}
	defer conn.ExecContext(f.ctx, `RESET statement_timeout`) //nolint:errcheck
	if _, err := conn.ExecContext(f.ctx, query, args...); err != nil {
		f.t.Fatalf("%s: %v", query, err)
	}
}

// expireLease moves a command's lease into the past.
func (f *fixture) expireLease(id string) {
	f.t.Helper()
	f.exec(`UPDATE commands SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, id)
}

// get reads a command back.
func (f *fixture) get(id string) CommandWithOutput {
	f.t.Helper()
	c, err := f.st.Get(f.ctx, id)
	if err != nil {
		f.t.Fatalf("get %s: %v", id, err)
	}
	return c
}
