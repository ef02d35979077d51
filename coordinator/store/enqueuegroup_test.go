package store

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/execq/execq/shared"
)

// TestSubmitsArrivingTogetherCommitTogether: single submits that arrive
// while one is in flight are queued in one grouped statement. Each gets
// its own answer: its row as a lone submit would write it, or ErrNotFound
// for a container unknown or not its user's — and that refusal queues
// nothing for it and changes nothing for the others. Each node with new
// work is notified.
func TestSubmitsArrivingTogetherCommitTogether(t *testing.T) {
	t.Parallel()
	f := setup(t)
	st := f.open(t, f.url, Options{MaxConns: 4, ReportSlots: 1})
	nodes, _ := f.claimNodes(1, 0)
	var other string
	if err := f.st.db.GetContext(f.ctx, &other, `SELECT id::text FROM containers WHERE node_id = $1`, nodes[0].ID); err != nil {
		t.Fatal(err)
	}
	bob, _, err := f.st.CreateUser(f.ctx, "bob", false) // no grant: alice's containers are not his
	if err != nil {
		t.Fatal(err)
	}
	l := pq.NewListener(f.url, 10*time.Millisecond, time.Second, nil)
	t.Cleanup(func() { l.Close() })
	if err := l.Listen(NotifyChannel); err != nil {
		t.Fatal(err)
	}

	// The first submit goes alone and waits on the table's lock, so the
	// others arrive while it is in flight.
	release := f.lockCommands()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := st.Enqueue(f.ctx, f.container, f.user.ID, shared.SubmitRequest{Program: "first", Args: []string{}}); err != nil {
			t.Errorf("first submit: %v", err)
		}
	}()
	waitBatches(t, st.enqueues, 1)

	type submit struct {
		container, user string
		req             shared.SubmitRequest
		refused         bool
	}
	subs := []submit{
		{f.container, f.user.ID, shared.SubmitRequest{Program: "echo", Args: []string{"a", "", "ü \"q\""}}, false},
		{other, f.user.ID, shared.SubmitRequest{Program: "true", TimeoutSeconds: shared.Secs(7), QueueTimeoutSeconds: shared.Secs(9)}, false},
		{f.container, bob.ID, shared.SubmitRequest{Program: "not-bobs"}, true},
		{uuid.NewString(), f.user.ID, shared.SubmitRequest{Program: "nowhere"}, true},
		{f.container, f.user.ID, shared.SubmitRequest{Program: "x"}, false},
	}
	got := make([]CommandWithOutput, len(subs))
	errs := make([]error, len(subs))
	for i, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = st.Enqueue(f.ctx, s.container, s.user, s.req)
		}()
	}
	waitQueued(t, st.enqueues, len(subs))
	release()
	wg.Wait()
	if batches, _ := st.enqueues.stats(); batches != 2 {
		t.Errorf("%d submit batches, want 2: the first alone, then the %d submits that arrived meanwhile", batches, len(subs))
	}
	queued := 1
	for i, s := range subs {
		if s.refused {
			if !errors.Is(errs[i], ErrNotFound) {
				t.Errorf("submit %d (%s): %v, want ErrNotFound", i, s.req.Program, errs[i])
			}
			continue
		}
		queued++
		if errs[i] != nil {
			t.Fatalf("submit %d: %v", i, errs[i])
		}
		stored := f.get(got[i].ID)
		want := s.req.Args
		if want == nil {
			want = []string{}
		}
		if stored.ContainerID != s.container || stored.Program != s.req.Program || !slices.Equal(stored.Args, want) ||
			stored.Status != shared.StatusQueued || stored.RequestedBy != s.user || got[i].Program != s.req.Program {
			t.Errorf("submit %d stored as %+v, answered %+v", i, stored.Command, got[i].Command)
		}
	}
	if !got[1].TimeoutSeconds.Valid || got[1].TimeoutSeconds.Int32 != 7 || got[1].QueueTimeoutSeconds.Int32 != 9 || got[0].TimeoutSeconds.Valid {
		t.Errorf("timeouts %+v / %+v", got[0].Control, got[1].Control)
	}
	var deadlines []bool
	if err := f.st.db.SelectContext(f.ctx, &deadlines, `SELECT queue_deadline IS NOT NULL FROM commands WHERE id = ANY($1::uuid[]) ORDER BY program`,
		pq.Array([]string{got[0].ID, got[1].ID})); err != nil || !slices.Equal(deadlines, []bool{false, true}) {
		t.Errorf("queue deadlines set %v (%v); want only the one with a queue timeout", deadlines, err)
	}
	if got[1].NodeID != nodes[0].ID || got[0].NodeID != f.node.ID {
		t.Errorf("nodes %s, %s; want each container's", got[0].NodeID, got[1].NodeID)
	}
	var n int
	if err := f.st.db.GetContext(f.ctx, &n, `SELECT count(*) FROM commands`); err != nil || n != queued {
		t.Errorf("%d commands stored (%v), want %d: a refused submit queues nothing", n, err, queued)
	}
	woken := map[string]bool{}
	for len(woken) < 2 {
		select {
		case m := <-l.Notify:
			if m != nil {
				woken[m.Extra] = true
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("nodes notified %v; want %s and %s", woken, f.node.ID, nodes[0].ID)
		}
	}
	if !woken[f.node.ID] || !woken[nodes[0].ID] {
		t.Errorf("nodes notified %v; want %s and %s", woken, f.node.ID, nodes[0].ID)
	}
}

// TestSubmitBatchRefusedForOneFailsOnlyThatSubmit: a submit PostgreSQL
// refuses (a NUL byte in text) fails its grouped statement; the batch is
// then run a submit at a time, so only that submit fails.
func TestSubmitBatchRefusedForOneFailsOnlyThatSubmit(t *testing.T) {
	t.Parallel()
	f := setup(t)
	st := f.open(t, f.url, Options{MaxConns: 4, ReportSlots: 1})
	release := f.lockCommands()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = st.Enqueue(context.Background(), f.container, f.user.ID, shared.SubmitRequest{Program: "first"})
	}()
	waitBatches(t, st.enqueues, 1)
	progs := []string{"good1", "bad\x00", "good2"}
	errs := make([]error, len(progs))
	for i, p := range progs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = st.Enqueue(f.ctx, f.container, f.user.ID, shared.SubmitRequest{Program: p})
		}()
	}
	waitQueued(t, st.enqueues, len(progs))
	release()
	wg.Wait()
	if errs[1] == nil {
		t.Errorf("the submit PostgreSQL cannot store succeeded")
	}
	if errs[0] != nil || errs[2] != nil {
		t.Errorf("good submits: %v, %v", errs[0], errs[2])
	}
	var stored []string
	if err := f.st.db.SelectContext(f.ctx, &stored, `SELECT program FROM commands ORDER BY program`); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(stored, []string{"first", "good1", "good2"}) {
		t.Errorf("stored %q", stored)
	}
}

// TestQueuedSubmitsCountTowardsBusy: submits waiting in the group for a
// batch are waiting for the database as much as calls waiting for
// admission, so Busy counts them and the API refuses early; a submit
// whose deadline passes in the queue fails with ErrTimeout, having queued
// nothing.
func TestQueuedSubmitsCountTowardsBusy(t *testing.T) {
	t.Parallel()
	f := setup(t)
	st := f.open(t, f.url, Options{MaxConns: 4, ReservedConns: 1, MaxWaiting: 3, ReportSlots: 1, QueryTimeout: 2 * time.Second})
	release := f.lockCommands()
	defer release()
	ctx := WithShedding(f.ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = st.Enqueue(ctx, f.container, f.user.ID, shared.SubmitRequest{Program: "first"})
	}()
	waitBatches(t, st.enqueues, 1)
	if st.Busy() {
		t.Fatal("busy with one submit in flight and none waiting")
	}
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = st.Enqueue(ctx, f.container, f.user.ID, shared.SubmitRequest{Program: "queued"})
		}()
	}
	waitQueued(t, st.enqueues, 3)
	if !st.Busy() {
		t.Error("not busy with MaxWaiting submits waiting for a batch")
	}
	wg.Wait() // the lock outlives every deadline
	if st.Busy() {
		t.Error("still busy once the waiting submits gave up")
	}
	for i, err := range errs {
		if !errors.Is(err, ErrTimeout) {
			t.Errorf("submit %d: %v, want ErrTimeout", i, err)
		}
	}
	release()
	var n int
	if err := f.st.db.GetContext(f.ctx, &n, `SELECT count(*) FROM commands WHERE program = 'queued'`); err != nil || n != 0 {
		t.Errorf("%d timed-out submits stored (%v)", n, err)
	}
}
