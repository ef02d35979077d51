package store

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/shared"
)

// claimNodes makes n nodes with a container each, granted to the fixture's
// user, and queues per commands on each; it returns the nodes and, by node
// ID, the commands queued there.
func (f *fixture) claimNodes(n, per int) ([]Node, map[string][]string) {
	f.t.Helper()
	nodes := make([]Node, n)
	queued := map[string][]string{}
	for i := range nodes {
		nodes[i] = f.newNode(fmt.Sprintf("claim-%d", i))
		f.grantNode(f.user, nodes[i])
		ctr := uuid.NewString()
		if rej, err := f.st.ReplaceInventory(f.ctx, nodes[i].ID, []Container{{ID: ctr, Name: "c", State: "running"}}); err != nil || len(rej) > 0 {
			f.t.Fatalf("report container: %v %v", rej, err)
		}
		for range per {
			c, err := f.st.Enqueue(f.ctx, ctr, f.user.ID, shared.SubmitRequest{Program: "true", Args: []string{}})
			if err != nil {
				f.t.Fatal(err)
			}
			queued[nodes[i].ID] = append(queued[nodes[i].ID], c.ID)
		}
	}
	return nodes, queued
}

// lockCommands holds a lock on the commands table that every claim waits
// for (not a row lock: SKIP LOCKED passes those) until release is called.
func (f *fixture) lockCommands() (release func()) {
	f.t.Helper()
	tx, err := f.st.db.BeginTx(f.ctx, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := tx.ExecContext(f.ctx, `LOCK TABLE commands IN EXCLUSIVE MODE`); err != nil {
		f.t.Fatal(err)
	}
	return func() { _ = tx.Rollback() }
}

// TestClaimsArrivingTogetherClaimTogether: polls woken together while a
// claim is in flight go in one grouped claim. Each poll gets only its own
// node's commands, in submit order and at most its max — two polls of one
// node share that node's commands without overlap — no command is given
// twice, and every command leased is given to a poll.
func TestClaimsArrivingTogetherClaimTogether(t *testing.T) {
	t.Parallel()
	f := setup(t)
	st := f.open(t, f.url, Options{MaxConns: 4, ReportSlots: 1})
	nodes, queued := f.claimNodes(6, 5)
	// The first claim goes alone and waits on the table's lock, so the
	// others arrive while it is in flight.
	release := f.lockCommands()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := st.Claim(f.ctx, f.node.ID, 1, testTTL); err != nil {
			t.Errorf("first claim: %v", err)
		}
	}()
	waitBatches(t, st.claims, 1)

	// Every node polled once with max 2, and nodes[0] a second time with
	// max 2: its 5 commands go 2, 2, and one stays queued.
	type poll struct {
		node string
		max  int
	}
	polls := []poll{}
	for _, n := range nodes {
		polls = append(polls, poll{n.ID, 2})
	}
	polls = append(polls, poll{nodes[0].ID, 2})
	got := make([][]Command, len(polls))
	for i, p := range polls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cs, err := st.Claim(f.ctx, p.node, p.max, testTTL)
			if err != nil {
				t.Errorf("poll %d: %v", i, err)
			}
			got[i] = cs
		}()
	}
	waitQueued(t, st.claims, len(polls))
	release()
	wg.Wait()
	if batches, _ := st.claims.stats(); batches != 2 {
		t.Errorf("%d claim batches, want 2: the first alone, then the %d polls that arrived meanwhile", batches, len(polls))
	}

	seen := map[string]bool{}
	perNode := map[string][]string{}
	for i, cs := range got {
		if len(cs) != polls[i].max {
			t.Errorf("poll %d got %d commands, want %d", i, len(cs), polls[i].max)
		}
		if !slices.IsSortedFunc(cs, func(a, b Command) int { return a.CreatedAt.Compare(b.CreatedAt) }) {
			t.Errorf("poll %d: commands not in submit order", i)
		}
		for _, c := range cs {
			if c.NodeID != polls[i].node || c.LeasedBy.String != polls[i].node {
				t.Errorf("poll %d of node %s got command %s of node %s leased by %s", i, polls[i].node, c.ID, c.NodeID, c.LeasedBy.String)
			}
			if seen[c.ID] {
				t.Errorf("command %s given twice", c.ID)
			}
			seen[c.ID] = true
			perNode[c.NodeID] = append(perNode[c.NodeID], c.ID)
		}
	}
	for _, n := range nodes {
		want := 2
		if n.ID == nodes[0].ID {
			want = 4
		}
		// The node's first commands in submit order, whichever of its
		// polls took which.
		ids := queued[n.ID]
		claimed := slices.Clone(perNode[n.ID])
		slices.SortFunc(claimed, func(a, b string) int { return slices.Index(ids, a) - slices.Index(ids, b) })
		if !slices.Equal(claimed, ids[:want]) {
			t.Errorf("node %s: claimed %v, want the first %d of %v", n.Name, claimed, want, ids)
		}
		// Leased exactly what was handed out; the rest stays claimable.
		var leased int
		if err := f.st.db.GetContext(f.ctx, &leased, `SELECT count(*) FROM commands WHERE node_id = $1 AND leased_by IS NOT NULL`, n.ID); err != nil {
			t.Fatal(err)
		}
		if leased != want {
			t.Errorf("node %s: %d commands leased, %d handed out", n.Name, leased, want)
		}
	}
	rest, err := st.Claim(f.ctx, nodes[0].ID, 10, testTTL)
	if err != nil || len(rest) != 1 || rest[0].ID != queued[nodes[0].ID][4] {
		t.Errorf("claim of the rest: %v %v, want the fifth command", rest, err)
	}
}

// TestFailedClaimBatchLeasesNothing: a grouped claim that fails (it waits on
// a row locked elsewhere past the query timeout) answers every poll in it
// with the error, and nothing stays leased: every command is claimable at
// once.
func TestFailedClaimBatchLeasesNothing(t *testing.T) {
	t.Parallel()
	f := setup(t)
	st := f.open(t, f.url, Options{MaxConns: 4, ReportSlots: 1, QueryTimeout: 2 * time.Second})
	nodes, _ := f.claimNodes(3, 2)
	release := f.lockCommands()
	go st.Claim(f.ctx, f.node.ID, 1, testTTL) //nolint:errcheck
	waitBatches(t, st.claims, 1)
	errs := make([]error, len(nodes))
	got := make([][]Command, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = st.Claim(f.ctx, n.ID, 2, testTTL)
		}()
	}
	waitQueued(t, st.claims, len(nodes))
	wg.Wait()
	release()
	if batches, _ := st.claims.stats(); batches != 2 {
		t.Errorf("%d claim batches, want 2", batches)
	}
	for i := range nodes {
		if !errors.Is(errs[i], ErrTimeout) || len(got[i]) != 0 {
			t.Errorf("poll %d: %d commands, %v; want none and ErrTimeout", i, len(got[i]), errs[i])
		}
	}
	var leased int
	if err := f.st.db.GetContext(f.ctx, &leased, `SELECT count(*) FROM commands WHERE leased_by IS NOT NULL OR attempt > 0`); err != nil {
		t.Fatal(err)
	}
	if leased != 0 {
		t.Errorf("%d commands leased after a failed claim", leased)
	}
	for i, n := range nodes {
		if cs, err := st.Claim(f.ctx, n.ID, 10, testTTL); err != nil || len(cs) != 2 {
			t.Errorf("node %d after the failure: %d commands, %v; want its 2", i, len(cs), err)
		}
	}
}
