package store

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/shared"
)

// TestHeartbeatBatchGivesEachItsOwnResult: one batch of heartbeats with a
// valid lease, a stale one, another node's, an unknown command, a gap, and a
// repeat of the valid one. Each gets its own answer; only the valid one's
// output is stored, once, in order.
func TestHeartbeatBatchGivesEachItsOwnResult(t *testing.T) {
	t.Parallel()
	f := setup(t)
	other := f.newNode("node-b")
	a, stale, gap := f.running(), f.running(), f.running()
	calls := []HeartbeatCall{
		{ID: a.ID, NodeID: f.node.ID, Attempt: a.Attempt, Chunks: []shared.Chunk{chunk("stdout", 0, "he")}},
		{ID: stale.ID, NodeID: f.node.ID, Attempt: stale.Attempt + 1, Chunks: []shared.Chunk{chunk("stdout", 0, "no")}},
		{ID: a.ID, NodeID: other.ID, Attempt: a.Attempt, Chunks: []shared.Chunk{chunk("stdout", 0, "no")}},
		{ID: uuid.NewString(), NodeID: f.node.ID, Attempt: 1},
		{ID: gap.ID, NodeID: f.node.ID, Attempt: gap.Attempt, Chunks: []shared.Chunk{chunk("stdout", 5, "no")}},
		// The agent's retry of the first, with more: only "llo" is new.
		{ID: a.ID, NodeID: f.node.ID, Attempt: a.Attempt, Chunks: []shared.Chunk{chunk("stdout", 0, "hello")}},
	}
	res, err := f.st.heartbeatMany(f.ctx, calls, testTTL, testCap)
	if err != nil {
		t.Fatalf("batch: %v", err)
	}
	for i, want := range []error{nil, ErrLeaseLost, ErrForbidden, ErrNotFound, nil, nil} {
		if got := res[i].Err; i != 4 && ((want == nil) != (got == nil) || !errors.Is(got, want)) {
			t.Errorf("call %d: %v, want %v", i, got, want)
		}
	}
	var gapErr *GapError
	if !errors.As(res[4].Err, &gapErr) {
		t.Errorf("call 4: %v, want a gap", res[4].Err)
	}
	if off := res[5].Offsets; off.Stdout != 5 || res[5].LeaseExpiresAt.IsZero() {
		t.Errorf("repeat: offsets %+v, lease %v; want stdout 5 and a lease", off, res[5].LeaseExpiresAt)
	}
	if got := f.readAll(a.ID, streamStdout).Data; string(got) != "hello" {
		t.Errorf("stored %q, want \"hello\"", got)
	}
	for _, c := range []Command{stale, gap} {
		if got := f.readAll(c.ID, streamStdout).Data; len(got) != 0 {
			t.Errorf("%s: stored %q from a refused heartbeat", c.ID, got)
		}
	}
}

// TestFinishBatchGivesEachItsOwnResult: one batch of finishes — valid, a
// stale lease, a repeat of one finished before, a declared length below
// what was stored, and one declaring bytes not yet received (a gap: what it
// brought is kept).
func TestFinishBatchGivesEachItsOwnResult(t *testing.T) {
	t.Parallel()
	f := setup(t)
	code := 0
	ok, stale, done, short, gap := f.running(), f.running(), f.running(), f.running(), f.running()
	if _, err := f.st.Finish(f.ctx, done.ID, f.node.ID, shared.FinishRequest{Attempt: done.Attempt, ExitCode: &code}, testCap); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Heartbeat(f.ctx, short.ID, f.node.ID, short.Attempt, []shared.Chunk{chunk("stdout", 0, "abc")}, testTTL, testCap); err != nil {
		t.Fatal(err)
	}
	calls := []FinishCall{
		{ok.ID, f.node.ID, shared.FinishRequest{Attempt: ok.Attempt, ExitCode: &code, StdoutLength: 2, StderrLength: 1,
			Chunks: []shared.Chunk{chunk("stdout", 0, "ok"), chunk("stderr", 0, "!")}}},
		{stale.ID, f.node.ID, shared.FinishRequest{Attempt: stale.Attempt + 1, ExitCode: &code}},
		{done.ID, f.node.ID, shared.FinishRequest{Attempt: done.Attempt, ExitCode: &code}},
		{short.ID, f.node.ID, shared.FinishRequest{Attempt: short.Attempt, ExitCode: &code, StdoutLength: 2}},
		{gap.ID, f.node.ID, shared.FinishRequest{Attempt: gap.Attempt, ExitCode: &code, StdoutLength: 9,
			Chunks: []shared.Chunk{chunk("stdout", 0, "half")}}},
	}
	res, err := f.st.finishMany(f.ctx, calls, testCap)
	if err != nil {
		t.Fatalf("batch: %v", err)
	}
	if res[0].Err != nil || res[0].Status != shared.StatusSucceeded || res[0].Repeat {
		t.Errorf("valid finish: %+v", res[0])
	}
	if !errors.Is(res[1].Err, ErrLeaseLost) {
		t.Errorf("stale lease: %v, want lease lost", res[1].Err)
	}
	if res[2].Err != nil || !res[2].Repeat || res[2].Status != shared.StatusSucceeded {
		t.Errorf("repeat: %+v, want the stored status again", res[2])
	}
	if !errors.Is(res[3].Err, ErrLengthMismatch) {
		t.Errorf("short length: %v, want ErrLengthMismatch", res[3].Err)
	}
	var gapErr *GapError
	if !errors.As(res[4].Err, &gapErr) || gapErr.Offsets.Stdout != 4 {
		t.Errorf("gap: %v, want a gap at stdout 4", res[4].Err)
	}
	if got := f.get(ok.ID); string(got.Stdout) != "ok" || string(got.Stderr) != "!" || got.Status != shared.StatusSucceeded {
		t.Errorf("finished record: %s %q %q", got.Status, got.Stdout, got.Stderr)
	}
	for id, want := range map[string]shared.Status{stale.ID: shared.StatusRunning, short.ID: shared.StatusRunning, gap.ID: shared.StatusRunning} {
		if got := f.get(id).Status; got != want {
			t.Errorf("%s: status %s, want %s", id, got, want)
		}
	}
	if got := f.readAll(gap.ID, streamStdout).Data; string(got) != "half" {
		t.Errorf("gap: kept %q, want \"half\"", got)
	}
}

// TestStartBatchGivesEachItsOwnResult: a batch of starts — two valid (one
// asked twice), one stale, one cancelled, one already started by the same
// lease (the same yes again), one of another node.
func TestStartBatchGivesEachItsOwnResult(t *testing.T) {
	t.Parallel()
	f := setup(t)
	other := f.newNode("node-b")
	for range 4 {
		f.enqueue("true")
	}
	cs, err := f.st.Claim(f.ctx, f.node.ID, 4, testTTL)
	if err != nil || len(cs) != 4 {
		t.Fatalf("claim: %d, %v", len(cs), err)
	}
	a, b, stale, cancelled := cs[0], cs[1], cs[2], cs[3]
	if _, _, err := f.st.Cancel(f.ctx, cancelled.ID, f.user, 5); err != nil {
		t.Fatal(err)
	}
	started := f.running()
	calls := []StartCall{
		{a.ID, f.node.ID, a.Attempt},
		{stale.ID, f.node.ID, stale.Attempt + 1},
		{b.ID, f.node.ID, b.Attempt},
		{cancelled.ID, f.node.ID, cancelled.Attempt},
		{started.ID, f.node.ID, started.Attempt},
		{a.ID, f.node.ID, a.Attempt},
		{b.ID, other.ID, b.Attempt},
	}
	res, err := f.st.startMany(f.ctx, calls, testTTL)
	if err != nil {
		t.Fatalf("batch: %v", err)
	}
	for i, want := range []error{nil, ErrLeaseLost, nil, ErrCancelled, nil, nil, ErrForbidden} {
		if got := res[i].Err; (want == nil) != (got == nil) || !errors.Is(got, want) {
			t.Errorf("call %d: %v, want %v", i, got, want)
		}
		if want == nil && res[i].LeaseExpiresAt.IsZero() {
			t.Errorf("call %d: started without a lease expiry", i)
		}
	}
	for id, want := range map[string]shared.Status{a.ID: shared.StatusRunning, b.ID: shared.StatusRunning,
		stale.ID: shared.StatusQueued, cancelled.ID: shared.StatusCancelled} {
		if got := f.get(id).Status; got != want {
			t.Errorf("%s: status %s, want %s", id, got, want)
		}
	}
}

// holdRow locks a command's row in a transaction of its own until the
// returned function is called, so a report on it waits.
func (f *fixture) holdRow(id string) (release func()) {
	f.t.Helper()
	tx, err := f.st.db.BeginTx(f.ctx, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := tx.ExecContext(f.ctx, `SELECT 1 FROM commands WHERE id = $1 FOR UPDATE`, id); err != nil {
		f.t.Fatal(err)
	}
	return func() { _ = tx.Rollback() }
}

// waitQueued waits until n calls wait in g.
func waitQueued[C, R any](t *testing.T, g *group[C, R], n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, q := g.stats(); q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls did not queue", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitBatches waits until g has taken n batches.
func waitBatches[C, R any](t *testing.T, g *group[C, R], n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, _ := g.stats(); b >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d batches were not taken", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHeartbeatsArrivingTogetherCommitTogether: heartbeats that arrive
// while a batch is in flight wait for it and then go in one batch; each
// gets its own answer and its output is stored once.
func TestHeartbeatsArrivingTogetherCommitTogether(t *testing.T) {
	t.Parallel()
	f := setup(t)
	st := f.open(t, f.url, Options{MaxConns: 4, ReportSlots: 1})
	first := f.running()
	release := f.holdRow(first.ID)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := st.Heartbeat(f.ctx, first.ID, f.node.ID, first.Attempt, nil, testTTL, testCap); err != nil {
			t.Errorf("first heartbeat: %v", err)
		}
	}()
	waitBatches(t, st.heartbeats, 1)
	const n = 20
	cs := make([]Command, n)
	for i := range cs {
		cs[i] = f.running()
	}
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := []byte{byte('a' + i)}
			rn, err := st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, []shared.Chunk{{Stream: "stdout", Data: data}}, testTTL, testCap)
			if err != nil || rn.Offsets.Stdout != 1 {
				t.Errorf("heartbeat %d: %+v, %v", i, rn, err)
			}
		}()
	}
	waitQueued(t, st.heartbeats, n)
	release()
	wg.Wait()
	if batches, _ := st.heartbeats.stats(); batches != 2 {
		t.Errorf("%d batches, want 2: the first alone, then the %d that arrived meanwhile", batches, n)
	}
	for i, c := range cs {
		if got := f.readAll(c.ID, streamStdout).Data; !bytes.Equal(got, []byte{byte('a' + i)}) {
			t.Errorf("heartbeat %d stored %q", i, got)
		}
	}
}

// TestFailedBatchAnswersEveryoneWithTheError: a batch that times out (one
// of its rows is locked elsewhere past the query timeout) answers every call
// in it with the timeout and stores nothing of any.
func TestFailedBatchAnswersEveryoneWithTheError(t *testing.T) {
	t.Parallel()
	f := setup(t)
	st := f.open(t, f.url, Options{MaxConns: 4, ReportSlots: 1, QueryTimeout: 2 * time.Second})
	held, a, b := f.running(), f.running(), f.running()
	release := f.holdRow(held.ID)
	defer release()
	// The held row's heartbeat goes first, alone, and waits on the lock;
	// the next batch holds it again with the others.
	go st.Heartbeat(f.ctx, held.ID, f.node.ID, held.Attempt, nil, testTTL, testCap) //nolint:errcheck
	waitBatches(t, st.heartbeats, 1)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i, c := range []Command{held, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, []shared.Chunk{chunk("stdout", 0, "x")}, testTTL, testCap)
		}()
	}
	waitQueued(t, st.heartbeats, 3)
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, ErrTimeout) {
			t.Errorf("call %d: %v, want ErrTimeout", i, err)
		}
	}
	for _, c := range []Command{a, b} {
		if got := f.readAll(c.ID, streamStdout).Data; len(got) != 0 {
			t.Errorf("%s: stored %q although its heartbeat failed", c.ID, got)
		}
	}
}

// TestBatchRefusedForOneCallFailsOnlyThatCall: a value PostgreSQL refuses
// (here text that is not UTF-8) fails the batch statement; the batch is run
// again a call at a time, so the others still succeed.
func TestBatchRefusedForOneCallFailsOnlyThatCall(t *testing.T) {
	t.Parallel()
	f := setup(t)
	st := f.open(t, f.url, Options{MaxConns: 4, ReportSlots: 1})
	held, good1, bad, good2 := f.running(), f.running(), f.running(), f.running()
	release := f.holdRow(held.ID)
	code := 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = st.Finish(context.Background(), held.ID, f.node.ID, shared.FinishRequest{Attempt: held.Attempt, ExitCode: &code}, testCap)
	}()
	waitBatches(t, st.finishes, 1)
	errs := map[string]error{}
	var mu sync.Mutex
	for _, c := range []Command{good1, bad, good2} {
		req := shared.FinishRequest{Attempt: c.Attempt, ExitCode: &code}
		if c.ID == bad.ID {
			req = shared.FinishRequest{Attempt: c.Attempt, Error: "exec failed: \xff\xfe"}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := st.Finish(f.ctx, c.ID, f.node.ID, req, testCap)
			mu.Lock()
			errs[c.ID] = err
			mu.Unlock()
		}()
	}
	waitQueued(t, st.finishes, 3)
	release()
	wg.Wait()
	if errs[bad.ID] == nil {
		t.Errorf("the finish PostgreSQL cannot store succeeded")
	}
	for _, c := range []Command{good1, good2} {
		if errs[c.ID] != nil || f.get(c.ID).Status != shared.StatusSucceeded {
			t.Errorf("%s: %v, status %s; want succeeded", c.ID, errs[c.ID], f.get(c.ID).Status)
		}
	}
}
