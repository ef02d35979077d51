package store

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/execq/execq/shared"
)

func TestCreateGrant(t *testing.T) {
	t.Parallel()
	f := setup(t)
	bob, _, err := f.st.CreateUser(f.ctx, "bob", false)
	if err != nil {
		t.Fatal(err)
	}
	g, created, err := f.st.CreateGrant(f.ctx, "bob", shared.Selector{"team": "db", "node": "node-a"})
	if err != nil || !created || g.UserID != bob.ID || g.UserName != "bob" || g.Selector["team"] != "db" || len(g.Selector) != 2 {
		t.Fatalf("create: %+v created %v, %v", g, created, err)
	}
	// The same selector again is the same grant; another is another.
	again, created, err := f.st.CreateGrant(f.ctx, "bob", shared.Selector{"node": "node-a", "team": "db"})
	if err != nil || created || again.ID != g.ID || !again.CreatedAt.Equal(g.CreatedAt) {
		t.Fatalf("repeat: %+v created %v, %v; want grant %s", again, created, err, g.ID)
	}
	other, created, err := f.st.CreateGrant(f.ctx, "bob", shared.Selector{"team": "db"})
	if err != nil || !created || other.ID == g.ID {
		t.Fatalf("narrower selector: %+v created %v, %v", other, created, err)
	}
	if _, _, err := f.st.CreateGrant(f.ctx, "nobody", shared.Selector{"team": "db"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown user: %v, want ErrNotFound", err)
	}
	gs, err := f.st.ListGrants(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	// alice's from the fixture, then bob's two.
	if len(gs) != 3 || gs[0].UserName != "alice" || gs[1].ID != g.ID || gs[2].ID != other.ID {
		t.Fatalf("list: %+v", gs)
	}
	if _, err := f.st.RevokeGrant(f.ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.RevokeGrant(f.ctx, g.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second revoke: %v, want ErrNotFound", err)
	}
	// Deleting a user takes their grants with them.
	f.exec(`DELETE FROM users WHERE id = $1`, bob.ID)
	if gs, _ := f.st.ListGrants(f.ctx); len(gs) != 1 {
		t.Fatalf("grants of a deleted user remain: %+v", gs)
	}
}

// TestInventoryLabelsReserved: the coordinator sets node and container
// itself, over anything reported under those keys.
func TestInventoryLabelsReserved(t *testing.T) {
	t.Parallel()
	f := setup(t)
	if _, err := f.st.ReplaceInventory(f.ctx, f.node.ID, []Container{{ID: f.container, Name: "c1", State: "running",
		Labels: Labels{"node": "forged", "container": "forged", "team": "db"}}}); err != nil {
		t.Fatal(err)
	}
	cs, err := f.st.ListContainers(f.ctx)
	if err != nil || len(cs) != 1 {
		t.Fatalf("list: %v %v", cs, err)
	}
	want := Labels{"node": "node-a", "container": f.container, "team": "db"}
	if got := cs[0].Labels; len(got) != len(want) || got["node"] != want["node"] || got["container"] != want["container"] || got["team"] != "db" {
		t.Fatalf("labels %v, want %v", got, want)
	}
}

// TestEnqueueNeedsGrant: the enqueue statement itself refuses a user no
// grant covers, as if the container were unknown; an admin needs none.
func TestEnqueueNeedsGrant(t *testing.T) {
	t.Parallel()
	f := setup(t)
	req := shared.SubmitRequest{Program: "true", Args: []string{}}
	ursula, _, err := f.st.CreateUser(f.ctx, "ursula", false)
	if err != nil {
		t.Fatal(err)
	}
	root, _, err := f.st.CreateUser(f.ctx, "root", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Enqueue(f.ctx, f.container, ursula.ID, req); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ungranted enqueue: %v, want ErrNotFound", err)
	}
	if _, _, err := f.st.EnqueueOnce(f.ctx, f.container, ursula.ID, req, "k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ungranted enqueue with a key: %v, want ErrNotFound", err)
	}
	if _, err := f.st.Enqueue(f.ctx, f.container, root.ID, req); err != nil {
		t.Fatalf("admin enqueue: %v", err)
	}
	g, _, err := f.st.CreateGrant(f.ctx, "ursula", shared.Selector{"container": f.container})
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.st.Enqueue(f.ctx, f.container, ursula.ID, req)
	if err != nil {
		t.Fatalf("granted enqueue: %v", err)
	}
	keyed, _, err := f.st.EnqueueOnce(f.ctx, f.container, ursula.ID, req, "k")
	if err != nil {
		t.Fatalf("granted enqueue with a key: %v", err)
	}
	if _, err := f.st.RevokeGrant(f.ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Enqueue(f.ctx, f.container, ursula.ID, req); !errors.Is(err, ErrNotFound) {
		t.Fatalf("enqueue after revoke: %v, want ErrNotFound", err)
	}
	// A retry of a submit made under the grant still answers its command:
	// it queues nothing new.
	if again, created, err := f.st.EnqueueOnce(f.ctx, f.container, ursula.ID, req, "k"); err != nil || created || again.ID != keyed.ID {
		t.Fatalf("keyed retry after revoke: %v created %v, %v", again.ID, created, err)
	}
	if got := f.get(c.ID); got.RequestedBy != ursula.ID {
		t.Fatalf("command %+v", got.Command)
	}
}

func TestVisibleContainers(t *testing.T) {
	t.Parallel()
	f := setup(t)
	nodeB := f.newNode("node-b")
	blue, red, onB := uuid.NewString(), uuid.NewString(), uuid.NewString()
	if _, err := f.st.ReplaceInventory(f.ctx, f.node.ID, []Container{
		{ID: blue, Name: "blue", State: "running", Labels: Labels{"team": "blue"}},
		{ID: red, Name: "red", State: "running", Labels: Labels{"team": "red"}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.ReplaceInventory(f.ctx, nodeB.ID, []Container{{ID: onB, Name: "b", State: "running", Labels: Labels{"team": "blue"}}}); err != nil {
		t.Fatal(err)
	}
	root, _, _ := f.st.CreateUser(f.ctx, "root", true)
	ursula, _, _ := f.st.CreateUser(f.ctx, "ursula", false)
	gina, _, _ := f.st.CreateUser(f.ctx, "gina", false)
	for _, sel := range []shared.Selector{{"team": "blue", "node": "node-a"}, {"container": red}, {"team": "blue"}} {
		if _, _, err := f.st.CreateGrant(f.ctx, "gina", sel); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(userID string) []string {
		t.Helper()
		cs, err := f.st.VisibleContainers(f.ctx, userID)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range cs {
			out = append(out, c.ID)
		}
		slices.Sort(out)
		return out
	}
	sorted := func(s ...string) []string { slices.Sort(s); return s }
	for name, tc := range map[string]struct {
		user string
		want []string
	}{
		"admin":        {root.ID, sorted(blue, red, onB)},
		"no grants":    {ursula.ID, nil},
		"unknown user": {uuid.NewString(), nil},
		// Overlapping grants list a container once.
		"granted":   {gina.ID, sorted(blue, red, onB)},
		"node only": {f.user.ID, sorted(blue, red)},
	} {
		if got := ids(tc.user); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}

// TestGrantQueriesUseIndexes: on a fleet of 20,000 containers and 500
// users, the submit check and a user's container listing read only the
// user's grants and what they select, never a whole table.
func TestGrantQueriesUseIndexes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec(`INSERT INTO users (id, name, token_hash) SELECT gen_random_uuid(), 'u' || i, sha256(('u' || i)::bytea) FROM generate_series(1, 500) i`)
	f.exec(`INSERT INTO containers (id, node_id, name, state, labels)
		SELECT gen_random_uuid(), $1, 'c' || i, 'running', jsonb_build_object('team', 't' || (i % 50), 'node', 'node-a', 'container', 'x' || i)
		FROM generate_series(1, 20000) i`, f.node.ID)
	f.exec(`INSERT INTO grants (id, user_id, selector)
		SELECT gen_random_uuid(), u.id, jsonb_build_object('team', 't' || k) FROM users u, generate_series(1, 2) k WHERE u.name LIKE 'u%'`)
	f.exec(`ANALYZE users; ANALYZE containers; ANALYZE grants`)
	var user, container string
	if err := f.st.db.QueryRowContext(f.ctx, `SELECT id FROM users WHERE name = 'u7'`).Scan(&user); err != nil {
		t.Fatal(err)
	}
	if err := f.st.db.QueryRowContext(f.ctx, `SELECT id FROM containers WHERE name = 'c77'`).Scan(&container); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		name  string
		query string
		args  []any
		rows  int
	}{
		{"submit check", `SELECT node_id FROM containers c WHERE id = $2 AND ` + mayUse("c", "$1"), []any{user, container}, 0},
		{"visible containers", visibleContainersSQL, []any{user}, 800},
	} {
		t.Run(q.name, func(t *testing.T) {
			var raw []byte
			if err := f.st.db.QueryRowContext(f.ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+q.query, q.args...).Scan(&raw); err != nil {
				t.Fatalf("explain: %v", err)
			}
			var plans []struct {
				Plan analyzedNode `json:"Plan"`
			}
			if err := json.Unmarshal(raw, &plans); err != nil || len(plans) != 1 {
				t.Fatalf("explain output %s: %v", raw, err)
			}
			if seq := plans[0].Plan.executedSeqScans(); len(seq) > 0 {
				t.Errorf("plan reads whole tables (%s):\n%s", strings.Join(seq, "; "), raw)
			}
			if got := plans[0].Plan.Rows; got != q.rows {
				t.Errorf("%d rows, want %d", got, q.rows)
			}
		})
	}
}

// analyzedNode is a node of EXPLAIN (ANALYZE, FORMAT JSON): a branch a
// one-time filter cut shows zero loops.
type analyzedNode struct {
	NodeType string         `json:"Node Type"`
	Relation string         `json:"Relation Name"`
	Loops    int            `json:"Actual Loops"`
	Rows     int            `json:"Actual Rows"`
	Plans    []analyzedNode `json:"Plans"`
}

func (n analyzedNode) executedSeqScans() []string {
	var found []string
	if n.NodeType == "Seq Scan" && n.Loops > 0 {
		found = append(found, "Seq Scan on "+n.Relation)
	}
	for _, c := range n.Plans {
		found = append(found, c.executedSeqScans()...)
	}
	return found
}
