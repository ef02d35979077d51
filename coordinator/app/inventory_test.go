package app_test

import (
	"net/http"
	"testing"

	"github.com/google/uuid"

	"github.com/execq/execq/shared"
)

// TestInventoryReplacesNodeSet: a report is the node's whole set — new
// containers appear, missing ones go — and it never touches another node's.
func TestInventoryReplacesNodeSet(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fresh := uuid.NewString()
	var resp shared.InventoryResponse
	b.mustJSON(b.URL, http.MethodPut, shared.AgentPathContainers, b.NodeA.Token, shared.InventoryRequest{
		Containers: []shared.ContainerReport{{ID: fresh, Name: "fresh", State: "running"}},
	}, http.StatusOK, &resp)
	if resp.Accepted != 1 || len(resp.Rejected) != 0 {
		t.Fatalf("answer %+v, want 1 accepted, none rejected", resp)
	}
	owners := b.containerOwners()
	if owners[fresh] != b.NodeA.ID || owners[b.NodeA.Container] != "" || owners[b.NodeB.Container] != b.NodeB.ID {
		t.Fatalf("owners %v: want only the fresh container for node A and node B's untouched", owners)
	}
	// The container that left node A can no longer take commands.
	r := b.do(http.MethodPost, submitPath(b.NodeA.Container), b.Alice.Token, shared.SubmitRequest{Program: "true"})
	b.wantError(r, http.StatusNotFound, "unknown_container")
}

// TestInventoryRefusesAnotherNodesContainer: a container ID already reported
// by node B is not taken over by node A (its commands would go to the wrong
// host), while the rest of A's report is recorded.
func TestInventoryRefusesAnotherNodesContainer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fresh := uuid.NewString()
	var resp shared.InventoryResponse
	b.mustJSON(b.URL, http.MethodPut, shared.AgentPathContainers, b.NodeA.Token, shared.InventoryRequest{
		Containers: []shared.ContainerReport{
			{ID: b.NodeA.Container, Name: "a", State: "running"},
			{ID: b.NodeB.Container, Name: "stolen", State: "running"},
			{ID: fresh, Name: "fresh", State: "running"},
		},
	}, http.StatusOK, &resp)
	if resp.Accepted != 2 || len(resp.Rejected) != 1 || resp.Rejected[0] != b.NodeB.Container {
		t.Fatalf("answer %+v, want 2 accepted and node B's container rejected", resp)
	}
	owners := b.containerOwners()
	if owners[b.NodeB.Container] != b.NodeB.ID || owners[fresh] != b.NodeA.ID || owners[b.NodeA.Container] != b.NodeA.ID {
		t.Fatalf("owners %v after the report", owners)
	}
	// Commands for B's container still go to node B.
	rec := b.submit(b.Alice, b.NodeB.Container, "true")
	if got := b.leaseAt(b.URL, b.NodeA, 10, 0); len(got.Commands) != 0 {
		t.Fatalf("node A leased %+v for node B's container", got.Commands)
	}
	if got := b.leaseAt(b.URL, b.NodeB, 10, 0); len(got.Commands) != 1 || got.Commands[0].ID != rec.ID {
		t.Fatalf("node B leased %+v, want %s", got.Commands, rec.ID)
	}
}

// containerOwners maps container ID to node ID as stored.
func (b *bundle) containerOwners() map[string]string {
	b.t.Helper()
	rows, err := b.DB.Query(`SELECT id, node_id FROM containers`)
	if err != nil {
		b.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, node string
		if err := rows.Scan(&id, &node); err != nil {
			b.t.Fatal(err)
		}
		out[id] = node
	}
	return out
}
