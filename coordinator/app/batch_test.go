package app_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/execq/execq/shared"
)

// TestSubmitBatchQueuesAllInOrder: a batch across both nodes' containers is
// queued whole, answered 202 with the records in the request's order, and
// each node's agent leases exactly its own commands.
func TestSubmitBatchQueuesAllInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	items := []shared.SubmitBatchItem{
		{ContainerID: b.NodeA.Container, Program: "echo", Args: []string{"a1"}},
		{ContainerID: b.NodeB.Container, Program: "echo", Args: []string{"b1"}, TimeoutSeconds: shared.Secs(30)},
		{ContainerID: b.NodeA.Container, Program: "echo"},
	}
	var res shared.SubmitBatchResult
	b.mustJSON(b.URL, http.MethodPost, "/api/v1/commands", b.Alice.Token, shared.SubmitBatch{Commands: items}, http.StatusAccepted, &res)
	if len(res.Commands) != len(items) {
		t.Fatalf("%d records, want %d", len(res.Commands), len(items))
	}
	for i, rec := range res.Commands {
		if rec.ContainerID != items[i].ContainerID || rec.RequestedBy != b.Alice.ID || rec.Status != shared.StatusQueued || rec.Args == nil {
			t.Errorf("record %d: %+v", i, rec)
		}
	}
	if got := res.Commands[1].TimeoutSeconds; got == nil || *got != 30 {
		t.Errorf("record 1 timeout %v, want 30", got)
	}
	a := b.leaseAt(b.URL, b.NodeA, 10, 0)
	bl := b.leaseAt(b.URL, b.NodeB, 10, 0)
	if len(a.Commands) != 2 || a.Commands[0].ID != res.Commands[0].ID || a.Commands[1].ID != res.Commands[2].ID {
		t.Errorf("node A leased %+v, want commands 0 and 2", a.Commands)
	}
	if len(bl.Commands) != 1 || bl.Commands[0].ID != res.Commands[1].ID || bl.Commands[0].Args[0] != "b1" {
		t.Errorf("node B leased %+v, want command 1", bl.Commands)
	}
}

// TestSubmitBatchRefusedWholeQueuesNothing: a batch with one item a single
// submit would refuse — a container the caller may not use, an unknown
// one, a bad field, too many items — is refused with that answer and
// nothing of it is queued.
func TestSubmitBatchRefusedWholeQueuesNothing(t *testing.T) {
	t.Parallel()
	w := newAuthzWorld(t)
	ok := shared.SubmitBatchItem{ContainerID: w.Blue, Program: "true"}
	tooMany := make([]shared.SubmitBatchItem, shared.MaxBatchCommands+1)
	for i := range tooMany {
		tooMany[i] = ok
	}
	for _, tc := range []struct {
		name   string
		items  []shared.SubmitBatchItem
		status int
		code   string
		msg    string
	}{
		{"ungranted container", []shared.SubmitBatchItem{ok, {ContainerID: w.Red, Program: "true"}}, http.StatusNotFound, "unknown_container", w.Red},
		{"unknown container", []shared.SubmitBatchItem{ok, {ContainerID: "4b9f7a40-3a1e-4c63-9d55-3c1b8f6f2a11", Program: "true"}}, http.StatusNotFound, "unknown_container", "4b9f7a40"},
		{"blank program", []shared.SubmitBatchItem{ok, {ContainerID: w.Blue, Program: " "}}, http.StatusBadRequest, "invalid_field", "commands[1].program"},
		{"bad container id", []shared.SubmitBatchItem{{ContainerID: "nope", Program: "true"}}, http.StatusBadRequest, "invalid_field", "commands[0].container_id"},
		{"timeout out of range", []shared.SubmitBatchItem{ok, {ContainerID: w.Blue, Program: "true", TimeoutSeconds: shared.Secs(1 << 30)}}, http.StatusBadRequest, "invalid_field", "commands[1].timeout_seconds"},
		{"empty", []shared.SubmitBatchItem{}, http.StatusBadRequest, "invalid_field", "commands"},
		{"too many", tooMany, http.StatusBadRequest, "invalid_field", "commands"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := w.count(`SELECT count(*) FROM commands`)
			r := w.do(http.MethodPost, "/api/v1/commands", w.Gina.Token, shared.SubmitBatch{Commands: tc.items})
			w.wantError(r, tc.status, tc.code)
			if !strings.Contains(string(r.Body), tc.msg) {
				t.Errorf("answer %s does not name %q", r.Body, tc.msg)
			}
			if after := w.count(`SELECT count(*) FROM commands`); after != before {
				t.Errorf("%d commands queued by a refused batch", after-before)
			}
		})
	}
	// An Idempotency-Key would promise a safe retry the batch cannot keep.
	before := w.count(`SELECT count(*) FROM commands`)
	r := w.submitKeyed(w.URL, "/api/v1/commands", w.Gina.Token, shared.SubmitBatch{Commands: []shared.SubmitBatchItem{ok}}, "k1")
	w.wantError(r, http.StatusBadRequest, "invalid_header")
	if after := w.count(`SELECT count(*) FROM commands`); after != before {
		t.Errorf("%d commands queued by a batch refused for its Idempotency-Key", after-before)
	}
	// The same batch by the admin, who may use every container, is queued.
	var res shared.SubmitBatchResult
	w.mustJSON(w.URL, http.MethodPost, "/api/v1/commands", w.Root.Token,
		shared.SubmitBatch{Commands: []shared.SubmitBatchItem{ok, {ContainerID: w.Red, Program: "true"}}}, http.StatusAccepted, &res)
	if len(res.Commands) != 2 {
		t.Fatalf("admin's batch: %d records", len(res.Commands))
	}
}
