package app_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// TestWaitReturnsOnFinish: GET ?wait= parked on a running command answers
// with the terminal record soon after the agent finishes it, long before the
// wait would end (a behavioural bound, not a performance figure).
func TestWaitReturnsOnFinish(t *testing.T) {
	t.Parallel()
	b := setup(t)
	lc := b.run("echo", "hi")
	got := make(chan response, 1)
	began := time.Now()
	go func() { got <- b.do(http.MethodGet, commandPath(lc.ID)+"?wait=25s", b.Alice.Token, nil) }()
	eventually(t, within, func() bool { return b.App.Notifier.Parked(store.FinishedChannel) == 1 }, "the wait never parked")
	if r := b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, Chunks: []shared.Chunk{stdout(0, "hi\n")},
		StdoutLength: 3, ExitCode: exitCode(0)}, lc.ID); r.Status != http.StatusOK {
		t.Fatalf("finish: %s", r)
	}
	select {
	case r := <-got:
		if r.Status != http.StatusOK {
			t.Fatalf("wait: %s", r)
		}
		rec := decodeRecord(t, r)
		if rec.Status != shared.StatusSucceeded || rec.Stdout != "hi\n" {
			t.Fatalf("wait answered %+v, want the succeeded record", rec)
		}
		if waited := time.Since(began); waited > 15*time.Second {
			t.Fatalf("wait answered after %s: not woken by the finish", waited)
		}
	case <-time.After(within):
		t.Fatal("wait never answered")
	}
}

// TestWaitEndsWithCurrentState: when the wait runs out, the answer is 200
// with the record as it is (still queued).
func TestWaitEndsWithCurrentState(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec := b.submit(b.Alice, b.NodeA.Container, "true")
	r := b.do(http.MethodGet, commandPath(rec.ID)+"?wait=300ms", b.Alice.Token, nil)
	if r.Status != http.StatusOK || decodeRecord(t, r).Status != shared.StatusQueued {
		t.Fatalf("got %s, want 200 with the queued record", r)
	}
}

// TestWaitDoesNotLeak: waiting on someone else's command is the same 404 as
// an unknown one, at once.
func TestWaitDoesNotLeak(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec := b.submit(b.Alice, b.NodeA.Container, "true")
	r := b.do(http.MethodGet, commandPath(rec.ID)+"?wait=20s", b.Bob.Token, nil)
	b.wantError(r, http.StatusNotFound, "not_found")
}

func decodeRecord(t *testing.T, r response) shared.CommandExecutionRecord {
	t.Helper()
	var rec shared.CommandExecutionRecord
	if err := json.Unmarshal(r.Body, &rec); err != nil {
		t.Fatalf("decode record %s: %v", r, err)
	}
	return rec
}

// TestSubmitAndWait: POST ?wait= answers with the finished record in one
// call when the command ends within the wait: 200 (the record is final, not
// accepted for later), with Location.
func TestSubmitAndWait(t *testing.T) {
	t.Parallel()
	b := setup(t)
	got := make(chan response, 1)
	go func() {
		got <- b.do(http.MethodPost, submitPath(b.NodeA.Container)+"?wait=25s", b.Alice.Token,
			shared.SubmitRequest{Program: "echo", Args: []string{"hi"}})
	}()
	// Play the agent: lease whatever arrives, run it, finish it.
	var lc shared.LeasedCommand
	eventually(t, within, func() bool {
		resp := b.leaseAt(b.URL, b.NodeA, 1, 1000)
		if len(resp.Commands) == 1 {
			lc = resp.Commands[0]
		}
		return lc.ID != ""
	}, "the submitted command was never leased")
	b.start(b.NodeA, lc)
	if r := b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, Chunks: []shared.Chunk{stdout(0, "hi\n")},
		StdoutLength: 3, ExitCode: exitCode(0)}, lc.ID); r.Status != http.StatusOK {
		t.Fatalf("finish: %s", r)
	}
	select {
	case r := <-got:
		rec := decodeRecord(t, r)
		if r.Status != http.StatusOK || rec.ID != lc.ID || rec.Status != shared.StatusSucceeded || rec.Stdout != "hi\n" {
			t.Fatalf("submit-and-wait answered %s, want 200 with the succeeded record", r)
		}
		if loc := r.Header.Get("Location"); loc != commandPath(lc.ID) {
			t.Fatalf("Location %q", loc)
		}
	case <-time.After(within):
		t.Fatal("submit-and-wait never answered")
	}
}

// TestSubmitWaitEndsQueued: when the wait runs out before the command is
// terminal, POST ?wait= answers 202 with the record as it is.
func TestSubmitWaitEndsQueued(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do(http.MethodPost, submitPath(b.NodeA.Container)+"?wait=200ms", b.Alice.Token, shared.SubmitRequest{Program: "true"})
	rec := decodeRecord(t, r)
	if r.Status != http.StatusAccepted || rec.Status != shared.StatusQueued {
		t.Fatalf("got %s, want 202 with the queued record", r)
	}
	if loc := r.Header.Get("Location"); loc != commandPath(rec.ID) {
		t.Fatalf("Location %q", loc)
	}
}

// TestSubmitWaitLostBeforeDiskIs503: a waited submit whose row is gone when
// its wait ends still queued — as a database crash would lose an enqueue
// not yet on disk — is not answered 202 for a command that will never run.
// It shows the answer goes through FlushCommand, whose wait for the disk
// TestEnqueueUnflushedThenFlush (store) proves: checked here, the WAL
// position would be flushed by PostgreSQL's WAL writer within the wait
// anyway, so such a check could not fail.
func TestSubmitWaitLostBeforeDiskIs503(t *testing.T) {
	t.Parallel()
	b := setup(t)
	got := make(chan response, 1)
	go func() {
		got <- b.do(http.MethodPost, submitPath(b.NodeA.Container)+"?wait=1s", b.Alice.Token, shared.SubmitRequest{Program: "true"})
	}()
	eventually(t, within, func() bool { return b.count(`SELECT count(*) FROM commands`) == 1 }, "the command was never queued")
	if _, err := b.DB.Exec(`DELETE FROM commands`); err != nil {
		t.Fatal(err)
	}
	b.wantError(<-got, http.StatusServiceUnavailable, "unavailable")
}

// TestSubmitBadWaitWritesNothing: an invalid wait is refused before
// anything is queued.
func TestSubmitBadWaitWritesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do(http.MethodPost, submitPath(b.NodeA.Container)+"?wait=soon", b.Alice.Token, shared.SubmitRequest{Program: "true"})
	b.wantError(r, http.StatusBadRequest, "invalid_wait")
	if n := b.count(`SELECT count(*) FROM commands`); n != 0 {
		t.Fatalf("%d commands written by a refused submit", n)
	}
}
