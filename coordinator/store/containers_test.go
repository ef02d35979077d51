package store

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/google/uuid"
)

// report builds an inventory of the given IDs, each named after the node
// reporting it so a row shows whose report wrote it.
func report(node string, ids []string) []Container {
	cs := make([]Container, len(ids))
	for i, id := range ids {
		cs[i] = Container{ID: id, Name: node + "-" + id[:8], State: "running"}
	}
	return cs
}

func newIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	slices.Sort(ids)
	return ids
}

// owners maps container ID to the owning node and the name last written.
func (f *fixture) owners() map[string][2]string {
	f.t.Helper()
	cs, err := f.st.ListContainers(f.ctx)
	if err != nil {
		f.t.Fatalf("list containers: %v", err)
	}
	m := map[string][2]string{}
	for _, c := range cs {
		m[c.ID] = [2]string{c.NodeID, c.Name}
	}
	return m
}

func TestReplaceInventory(t *testing.T) {
	t.Parallel()
	f := setup(t)
	other := f.newNode("node-b")
	ids := newIDs(3)
	if rej, err := f.st.ReplaceInventory(f.ctx, other.ID, report("node-b", ids[2:])); err != nil || len(rej) != 0 {
		t.Fatalf("node-b report: rejected %v, err %v", rej, err)
	}

	// node-a's set becomes ids[0:3]: its first container is dropped, the
	// one node-b owns is refused, the rest upserted.
	cs := report("node-a", ids)
	cs[0].State = "stopped"
	rej, err := f.st.ReplaceInventory(f.ctx, f.node.ID, cs)
	if err != nil {
		t.Fatalf("replace: %v", err)
	}
	if !slices.Equal(rej, ids[2:]) {
		t.Errorf("rejected %v, want %v (owned by node-b)", rej, ids[2:])
	}
	got := f.owners()
	want := map[string][2]string{
		ids[0]: {f.node.ID, "node-a-" + ids[0][:8]},
		ids[1]: {f.node.ID, "node-a-" + ids[1][:8]},
		ids[2]: {other.ID, "node-b-" + ids[2][:8]},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("inventory %v, want %v (the fixture's container removed)", got, want)
	}
	all, _ := f.st.ListContainers(f.ctx)
	for _, c := range all {
		if c.ID == ids[0] && c.State != "stopped" {
			t.Errorf("state of %s = %q, want the reported \"stopped\"", c.ID, c.State)
		}
	}

	// An empty report empties the node's inventory and only the node's.
	if rej, err := f.st.ReplaceInventory(f.ctx, f.node.ID, nil); err != nil || len(rej) != 0 {
		t.Fatalf("empty report: rejected %v, err %v", rej, err)
	}
	if got := f.owners(); len(got) != 1 || got[ids[2]][0] != other.ID {
		t.Errorf("after node-a's empty report: %v, want only node-b's container", got)
	}
}

// TestReplaceInventoryRaceKeepsFirstOwner: two nodes reporting the same
// new containers at the same moment. Whichever writes a row first keeps it;
// the other's report must list it as rejected and must not overwrite it.
func TestReplaceInventoryRaceKeepsFirstOwner(t *testing.T) {
	t.Parallel()
	f := setup(t)
	nodes := []Node{f.node, f.newNode("node-b")}
	for round := range 20 {
		ids := newIDs(50)
		var (
			wg       sync.WaitGroup
			start    = make(chan struct{})
			rejected [2][]string
			errs     [2]error
		)
		for i, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				rejected[i], errs[i] = f.st.ReplaceInventory(f.ctx, n.ID, report(n.Name, ids))
			}()
		}
		close(start)
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("round %d: %v / %v", round, errs[0], errs[1])
		}
		got := f.owners()
		for _, id := range ids {
			owner := got[id]
			var ownerIdx int
			switch owner[0] {
			case nodes[0].ID:
				ownerIdx = 0
			case nodes[1].ID:
				ownerIdx = 1
			default:
				t.Fatalf("round %d: container %s has no owner", round, id)
			}
			if want := nodes[ownerIdx].Name + "-" + id[:8]; owner[1] != want {
				t.Errorf("round %d: container %s owned by %s but named %q: the other node's report overwrote it",
					round, id, nodes[ownerIdx].Name, owner[1])
			}
			loser := 1 - ownerIdx
			if !slices.Contains(rejected[loser], id) {
				t.Errorf("round %d: container %s owned by %s was accepted from %s too", round, id, nodes[ownerIdx].Name, nodes[loser].Name)
			}
			if slices.Contains(rejected[ownerIdx], id) {
				t.Errorf("round %d: container %s rejected from its owner %s", round, id, nodes[ownerIdx].Name)
			}
		}
		if t.Failed() {
			return
		}
	}
}

// TestReplaceInventoryLarge: a large report is stored whole, with exactly
// the other node's containers refused, in one statement (agents send it at
// every keepalive).
func TestReplaceInventoryLarge(t *testing.T) {
	t.Parallel()
	f := setup(t)
	other := f.newNode("node-b")
	ids := newIDs(5000)
	taken := []string{ids[7], ids[1234], ids[4999]}
	if rej, err := f.st.ReplaceInventory(f.ctx, other.ID, report("node-b", taken)); err != nil || len(rej) != 0 {
		t.Fatalf("node-b report: rejected %v, err %v", rej, err)
	}
	st, counter := f.counted(t)
	var err error
	var rej []string
	if n := counter.statements(func() { rej, err = st.ReplaceInventory(f.ctx, f.node.ID, report("node-a", ids)) }); n != 1 {
		t.Errorf("a report of %d containers took %d statements, want 1", len(ids), n)
	}
	if err != nil {
		t.Fatalf("replace: %v", err)
	}
	if !slices.Equal(rej, taken) {
		t.Errorf("rejected %v, want %v", rej, taken)
	}
	var mine int
	if err := f.st.db.GetContext(f.ctx, &mine, `SELECT count(*) FROM containers WHERE node_id = $1`, f.node.ID); err != nil {
		t.Fatal(err)
	}
	if mine != len(ids)-len(taken) {
		t.Errorf("node-a owns %d containers, want %d", mine, len(ids)-len(taken))
	}
}
