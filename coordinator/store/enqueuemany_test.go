package store

import (
	"errors"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/execq/execq/shared"
)

// TestEnqueueManyQueuesAllInOrder: a batch across two nodes is queued in one
// statement, each row as a single submit would write it (its own node, the
// args exactly, the timeouts), returned in the items' order.
func TestEnqueueManyQueuesAllInOrder(t *testing.T) {
	t.Parallel()
	f := setup(t)
	nodes, _ := f.claimNodes(1, 0)
	var other string
	if err := f.st.db.GetContext(f.ctx, &other, `SELECT id::text FROM containers WHERE node_id = $1`, nodes[0].ID); err != nil {
		t.Fatal(err)
	}
	items := []BatchItem{
		{ContainerID: f.container, Req: shared.SubmitRequest{Program: "echo", Args: []string{"a", "", "ü \"q\""}}},
		{ContainerID: other, Req: shared.SubmitRequest{Program: "true", TimeoutSeconds: shared.Secs(7), QueueTimeoutSeconds: shared.Secs(9)}},
		{ContainerID: f.container, Req: shared.SubmitRequest{Program: "x", Args: []string{}}},
	}
	cs, err := f.st.EnqueueMany(f.ctx, f.user.ID, items)
	if err != nil || len(cs) != 3 {
		t.Fatalf("enqueue many: %d, %v", len(cs), err)
	}
	for i, c := range cs {
		got := f.get(c.ID)
		want := items[i].Req.Args
		if want == nil {
			want = []string{}
		}
		if got.ContainerID != items[i].ContainerID || got.Program != items[i].Req.Program || !slices.Equal(got.Args, want) ||
			got.Status != shared.StatusQueued || got.RequestedBy != f.user.ID {
			t.Errorf("item %d stored as %+v", i, got.Command)
		}
	}
	if !cs[0].CreatedAt.Before(cs[2].CreatedAt) {
		t.Errorf("created_at %v, %v: a node's commands of one batch must be claimed in the batch's order", cs[0].CreatedAt, cs[2].CreatedAt)
	}
	if cs[1].NodeID != nodes[0].ID || cs[0].NodeID != f.node.ID {
		t.Errorf("nodes %s, %s; want each container's", cs[0].NodeID, cs[1].NodeID)
	}
	if !cs[1].TimeoutSeconds.Valid || cs[1].TimeoutSeconds.Int32 != 7 || cs[1].QueueTimeoutSeconds.Int32 != 9 || cs[0].TimeoutSeconds.Valid {
		t.Errorf("timeouts %+v / %+v", cs[0].Control, cs[1].Control)
	}
}

// TestEnqueueManyIsAllOrNothing: a batch with one container the user may
// not use (or unknown) queues nothing and names that container.
func TestEnqueueManyIsAllOrNothing(t *testing.T) {
	t.Parallel()
	f := setup(t)
	stranger := f.newNode("stranger")
	ungranted := uuid.NewString()
	if rej, err := f.st.ReplaceInventory(f.ctx, stranger.ID, []Container{{ID: ungranted, Name: "c", State: "running"}}); err != nil || len(rej) > 0 {
		t.Fatal(rej, err)
	}
	ok := BatchItem{ContainerID: f.container, Req: shared.SubmitRequest{Program: "true"}}
	for _, bad := range []string{ungranted, uuid.NewString()} {
		_, err := f.st.EnqueueMany(f.ctx, f.user.ID, []BatchItem{ok, {ContainerID: bad, Req: shared.SubmitRequest{Program: "true"}}, ok})
		var missing *ContainerNotFoundError
		if !errors.As(err, &missing) || missing.ContainerID != bad || !errors.Is(err, ErrNotFound) {
			t.Errorf("batch naming %s: %v, want it not found", bad, err)
		}
	}
	var n int
	if err := f.st.db.GetContext(f.ctx, &n, `SELECT count(*) FROM commands`); err != nil || n != 0 {
		t.Errorf("%d commands queued by refused batches (%v)", n, err)
	}
}
