package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// wakeBound is how soon a parked poll must answer after an enqueue. It is a
// behavioural bound, not a performance figure: the poll waits 20s and the
// safety re-scan is a minute away, so only the notification can meet it.
const (
	parkedWait = 20 * time.Second
	wakeBound  = 5 * time.Second
)

// pollResult is the outcome of a long-poll run in the background.
type pollResult struct {
	resp     response
	err      error
	returned time.Time
}

// parkPoll starts a long-poll of node at base in the background.
func (b *bundle) parkPoll(ctx context.Context, base string, node nodeIdentity, wait time.Duration) <-chan pollResult {
	ch := make(chan pollResult, 1)
	go func() {
		r, err := b.request(ctx, base, http.MethodPost, shared.AgentPathLease, node.Token,
			shared.LeaseRequest{Max: 1, WaitMillis: int(wait.Milliseconds())})
		ch <- pollResult{r, err, time.Now()}
	}()
	return ch
}

// waitParked waits until the replica holds n parked polls.
func waitParked(t testing.TB, a *app.App, n int) {
	t.Helper()
	eventually(t, within, func() bool { return a.Poller.Parked() == n }, "%d polls never parked (have %d)", n, a.Poller.Parked())
}

// wantWoken checks a parked poll returned the command soon after enqueued.
func wantWoken(t testing.TB, ch <-chan pollResult, id string, enqueued time.Time) {
	t.Helper()
	select {
	case res := <-ch:
		if res.err != nil {
			t.Fatalf("parked poll: %v", res.err)
		}
		var lr shared.LeaseResponse
		if res.resp.Status != http.StatusOK || json.Unmarshal(res.resp.Body, &lr) != nil {
			t.Fatalf("parked poll answered %s", res.resp)
		}
		if len(lr.Commands) != 1 || lr.Commands[0].ID != id {
			t.Fatalf("parked poll returned %+v, want command %s", lr.Commands, id)
		}
		if d := res.returned.Sub(enqueued); d > wakeBound {
			t.Fatalf("parked poll returned %s after the enqueue, want < %s of a %s wait", d, wakeBound, parkedWait)
		}
	case <-time.After(parkedWait + 10*time.Second):
		t.Fatal("parked poll never returned")
	}
}

func TestLongPollWake(t *testing.T) {
	t.Parallel()
	b := setup(t)
	waitListeners(t, b.DB, 1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := b.parkPoll(ctx, b.URL, b.NodeA, parkedWait)
	waitParked(t, b.App, 1)
	enqueued := time.Now()
	rec := b.submit(b.Alice, b.NodeA.Container, "id")
	wantWoken(t, ch, rec.ID, enqueued)

	// An enqueue for another node leaves a parked poll parked.
	ch = b.parkPoll(ctx, b.URL, b.NodeA, 1500*time.Millisecond)
	waitParked(t, b.App, 1)
	b.submit(b.Alice, b.NodeB.Container, "id")
	res := <-ch
	if res.err != nil || res.resp.Status != http.StatusOK || !strings.Contains(string(res.resp.Body), `"commands":[]`) {
		t.Fatalf("node A's poll after node B's enqueue: %v %s", res.err, res.resp)
	}
}

func TestLongPollEmpty(t *testing.T) {
	t.Parallel()
	b := setup(t)
	start := time.Now()
	r := b.do(http.MethodPost, shared.AgentPathLease, b.NodeA.Token, shared.LeaseRequest{Max: 10, WaitMillis: 200})
	if r.Status != http.StatusOK {
		t.Fatalf("empty poll: %s", r)
	}
	if !strings.Contains(string(r.Body), `"commands":[]`) {
		t.Fatalf(`empty poll must answer "commands":[] (not null): %s`, r.Body)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("a 200ms poll answered after %s: it did not wait", d)
	}
	var lr shared.LeaseResponse
	if err := json.Unmarshal(r.Body, &lr); err != nil || lr.LeaseTTLMillis != int(testLeaseTTL.Milliseconds()) ||
		lr.HeartbeatMillis != int(testHeartbeat.Milliseconds()) {
		t.Fatalf("timing in the answer: %+v (%v)", lr, err)
	}
	// wait_ms 0 answers at once.
	r = b.do(http.MethodPost, shared.AgentPathLease, b.NodeA.Token, shared.LeaseRequest{Max: 1})
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"commands":[]`) {
		t.Fatalf("poll without wait: %s", r)
	}
}

func TestLongPollWaitIsCapped(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.MaxWait = 300 * time.Millisecond }))
	// An agent asking for a day is answered at the server's cap, well
	// before this test's deadline.
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	r, err := b.request(ctx, b.URL, http.MethodPost, shared.AgentPathLease, b.NodeA.Token,
		shared.LeaseRequest{Max: 1, WaitMillis: int((24 * time.Hour).Milliseconds())})
	if err != nil || r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"commands":[]`) {
		t.Fatalf("capped poll: %v %s", err, r)
	}
}

func TestLongPollQueuedFirstInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ids []string
	for i := range 5 {
		ids = append(ids, b.submit(b.Alice, b.NodeA.Container, "echo", fmt.Sprint(i)).ID)
	}
	// Already-queued work answers without waiting, oldest first, at most max.
	start := time.Now()
	first := b.leaseAt(b.URL, b.NodeA, 3, int(parkedWait.Milliseconds()))
	if time.Since(start) > wakeBound {
		t.Fatalf("a poll with queued work waited %s", time.Since(start))
	}
	rest := b.leaseAt(b.URL, b.NodeA, 100, 0)
	var got []string
	for _, c := range append(first.Commands, rest.Commands...) {
		got = append(got, c.ID)
	}
	if len(first.Commands) != 3 || strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Fatalf("leased %v (first batch %d), want %v in submit order", got, len(first.Commands), ids)
	}
}

// TestManyParkedPolls parks far more polls than the pool has connections:
// parked polls must hold none, so the API keeps answering.
func TestManyParkedPolls(t *testing.T) {
	t.Parallel()
	const polls = 200
	const prompt = 2 * time.Second
	b := setup(t, withConfig(func(c *app.Config) { c.DBMaxConns = 5 }))
	waitListeners(t, b.DB, 1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	results := make(chan pollResult, polls)
	var wg sync.WaitGroup
	for range polls {
		wg.Go(func() {
			r, err := b.request(ctx, b.URL, http.MethodPost, shared.AgentPathLease, b.NodeA.Token,
				shared.LeaseRequest{Max: 1, WaitMillis: 30_000})
			results <- pollResult{r, err, time.Now()}
		})
	}
	waitParked(t, b.App, polls)

	timed := func(what string, f func() response, want int) response {
		t.Helper()
		start := time.Now()
		r := f()
		if d := time.Since(start); d > prompt {
			t.Errorf("%s took %s with %d polls parked, want < %s", what, d, polls, prompt)
		}
		if r.Status != want {
			t.Fatalf("%s: %s, want %d", what, r, want)
		}
		return r
	}
	var rec shared.CommandExecutionRecord
	r := timed("submit", func() response {
		return b.do(http.MethodPost, submitPath(b.NodeA.Container), b.Alice.Token, shared.SubmitRequest{Program: "id"})
	}, http.StatusAccepted)
	if err := json.Unmarshal(r.Body, &rec); err != nil {
		t.Fatal(err)
	}
	timed("get", func() response { return b.do(http.MethodGet, commandPath(rec.ID), b.Alice.Token, nil) }, http.StatusOK)
	timed("readyz", func() response { return b.do(http.MethodGet, "/readyz", "", nil) }, http.StatusOK)

	// Exactly one parked poll gets the command; the rest park again.
	var winner pollResult
	select {
	case winner = <-results:
	case <-time.After(within):
		t.Fatal("no parked poll returned the command")
	}
	var lr shared.LeaseResponse
	if winner.err != nil || winner.resp.Status != http.StatusOK || json.Unmarshal(winner.resp.Body, &lr) != nil ||
		len(lr.Commands) != 1 || lr.Commands[0].ID != rec.ID {
		t.Fatalf("first poll to return: %v %s, want command %s", winner.err, winner.resp, rec.ID)
	}
	waitParked(t, b.App, polls-1)
	timed("get while re-parked", func() response { return b.do(http.MethodGet, commandPath(rec.ID), b.Alice.Token, nil) }, http.StatusOK)

	cancel()
	wg.Wait()
	close(results)
	for res := range results {
		if res.err == nil && !strings.Contains(string(res.resp.Body), `"commands":[]`) {
			t.Fatalf("a second poll answered: %s", res.resp)
		}
	}
	eventually(t, within, func() bool { return b.App.Notifier.Parked(store.NotifyChannel) == 0 }, "cancelled polls stayed parked")
}
