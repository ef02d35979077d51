package lease

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/store"
)

// fakeClaimer is an in-memory queue: enough to test the wait logic alone.
// The real claim query is proven against PostgreSQL in the app tests.
type fakeClaimer struct {
	mu     sync.Mutex
	queues map[string][]store.Command
	calls  int
}

func (f *fakeClaimer) Claim(_ context.Context, node string, max int, _ time.Duration) ([]store.Command, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	q := f.queues[node]
	n := min(max, len(q))
	if n == 0 {
		return nil, nil
	}
	f.queues[node] = q[n:]
	return q[:n], nil
}

func (f *fakeClaimer) NodesWithWork(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var nodes []string
	for node, q := range f.queues {
		if len(q) > 0 {
			nodes = append(nodes, node)
		}
	}
	return nodes, nil
}

func (f *fakeClaimer) push(node, id string) {
	f.mu.Lock()
	if f.queues == nil {
		f.queues = map[string][]store.Command{}
	}
	f.queues[node] = append(f.queues[node], store.Command{ID: id})
	f.mu.Unlock()
}

func newPoller(c Claimer, safety time.Duration) (*Poller, *Notifier, chan struct{}) {
	n := NewNotifier("", nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	draining := make(chan struct{})
	return &Poller{Store: c, Notifier: n, TTL: time.Second, SafetyInterval: safety, Draining: draining}, n, draining
}

type pollResult struct {
	cmds []store.Command
	err  error
}

func poll(p *Poller, node string, wait time.Duration) chan pollResult {
	ch := make(chan pollResult, 1)
	go func() {
		cmds, err := p.Poll(context.Background(), node, 5, wait)
		ch <- pollResult{cmds, err}
	}()
	return ch
}

// waitParked blocks until n polls are subscribed.
func waitParked(t *testing.T, n *Notifier, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n.Parked(store.NotifyChannel) != want {
		if time.Now().After(deadline) {
			t.Fatalf("parked = %d, want %d", n.Parked(store.NotifyChannel), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPollWakesOnlyItsNode(t *testing.T) {
	c := &fakeClaimer{}
	p, n, _ := newPoller(c, time.Hour)
	res := poll(p, "node-a", time.Hour)
	waitParked(t, n, 1)
	// Subscribed is not yet parked: wait for the first (empty) claim, or it
	// could find the command pushed below without any wake-up.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		calls := c.calls
		c.mu.Unlock()
		if calls > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the poll never ran its first claim")
		}
	}

	c.push("node-a", "cmd-1")
	n.Wake(Key(store.NotifyChannel, "node-b")) // another node's enqueue must not wake this poll
	select {
	case r := <-res:
		t.Fatalf("poll returned on another node's wake-up: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	n.Wake(Key(store.NotifyChannel, "node-a"))
	var r pollResult
	select {
	case r = <-res:
	case <-time.After(5 * time.Second):
		t.Fatal("poll not woken by its node's notification")
	}
	if r.err != nil || len(r.cmds) != 1 || r.cmds[0].ID != "cmd-1" {
		t.Fatalf("got %+v, want cmd-1", r)
	}
	if n.Parked(store.NotifyChannel) != 0 {
		t.Fatalf("poll still subscribed after returning")
	}
}

func TestPollEndsEmptyAtDeadline(t *testing.T) {
	p, _, _ := newPoller(&fakeClaimer{}, time.Hour)
	r := <-poll(p, "node-a", 20*time.Millisecond)
	if r.err != nil || len(r.cmds) != 0 {
		t.Fatalf("got %+v, want empty answer", r)
	}
}

func TestSafetyPollFindsWorkWithoutNotification(t *testing.T) {
	c := &fakeClaimer{}
	p, n, _ := newPoller(c, 10*time.Millisecond)
	res := poll(p, "node-a", time.Hour)
	waitParked(t, n, 1)
	c.push("node-a", "cmd-lost-notify")
	r := <-res
	if len(r.cmds) != 1 {
		t.Fatalf("got %+v, want the command found by the safety re-scan", r)
	}
}

func TestDrainingAnswersParkedPollsEmpty(t *testing.T) {
	p, n, draining := newPoller(&fakeClaimer{}, time.Hour)
	res := poll(p, "node-a", time.Hour)
	waitParked(t, n, 1)
	close(draining)
	r := <-res
	if r.err != nil || len(r.cmds) != 0 {
		t.Fatalf("got %+v, want empty answer on drain", r)
	}
}

func TestWakeAllAfterReconnect(t *testing.T) {
	c := &fakeClaimer{}
	p, n, _ := newPoller(c, time.Hour)
	a, b := poll(p, "node-a", time.Hour), poll(p, "node-b", time.Hour)
	waitParked(t, n, 2)
	c.push("node-a", "x")
	c.push("node-b", "y")
	n.Wake("") // what a listener reconnect does
	for _, res := range []chan pollResult{a, b} {
		select {
		case r := <-res:
			if len(r.cmds) != 1 {
				t.Fatalf("got %+v, want one command", r)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a poll was not woken by wake-all")
		}
	}
}

func TestParkedCountsOneChannel(t *testing.T) {
	n := NewNotifier("", nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	_, a := n.Subscribe(Key("enqueued", "node-a"))
	_, b := n.Subscribe(Key("enqueued", "node-b"))
	_, c := n.Subscribe(Key("finished", "cmd-1"))
	if got := n.Parked("enqueued"); got != 2 {
		t.Fatalf("Parked(enqueued) = %d, want 2", got)
	}
	if got := n.Parked("finished"); got != 1 {
		t.Fatalf("Parked(finished) = %d, want 1", got)
	}
	a()
	b()
	c()
	if got := n.Parked("enqueued") + n.Parked("finished"); got != 0 {
		t.Fatalf("%d waiters left after cancel", got)
	}
}

// TestRepollOfIdleNodeRunsNoClaim: an agent re-polls as soon as an empty
// answer comes back, so an idle fleet's re-polls were a claim each (with
// 10,000 agents and 30s waits, 333 queries a second). The node's
// subscription outlives the poll for a while: if nothing was notified since
// the last claim, the next poll parks without claiming; anything notified in
// between, or a wake-all after a listener reconnect, makes it claim first.
func TestRepollOfIdleNodeRunsNoClaim(t *testing.T) {
	c := &fakeClaimer{}
	p, n, _ := newPoller(c, time.Hour)
	calls := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.calls
	}
	if r := <-poll(p, "node-a", 10*time.Millisecond); len(r.cmds) != 0 {
		t.Fatalf("got %+v, want an empty answer", r)
	}
	if got := calls(); got != 1 {
		t.Fatalf("%d claims for the first poll, want 1", got)
	}
	for range 3 {
		if r := <-poll(p, "node-a", 10*time.Millisecond); len(r.cmds) != 0 {
			t.Fatalf("got %+v, want an empty answer", r)
		}
	}
	if got := calls(); got != 1 {
		t.Fatalf("%d claims after three idle re-polls, want still 1", got)
	}

	// Work notified between two polls is claimed by the next one at once.
	c.push("node-a", "between-polls")
	n.Wake(Key(store.NotifyChannel, "node-a"))
	if r := <-poll(p, "node-a", time.Hour); len(r.cmds) != 1 {
		t.Fatalf("got %+v, want the command notified between polls", r)
	}
	// A poll that handed out work is followed by a claim: there may be more.
	before := calls()
	<-poll(p, "node-a", 10*time.Millisecond)
	if got := calls() - before; got != 1 {
		t.Fatalf("%d claims for the poll after one with work, want 1", got)
	}

	// A reconnect (wake-all) between polls: notifications may have been lost.
	c.push("node-a", "lost-notify")
	n.Wake("")
	if r := <-poll(p, "node-a", time.Hour); len(r.cmds) != 1 {
		t.Fatalf("got %+v, want the command after a wake-all", r)
	}
	// Another node's first poll claims as always.
	before = calls()
	<-poll(p, "node-b", 10*time.Millisecond)
	if got := calls() - before; got != 1 {
		t.Fatalf("%d claims for another node's first poll, want 1", got)
	}
}

// TestReconnectWakesOnlyNodesWithWork: after the listener reconnects,
// notifications may have been lost, but waking every parked poll sent
// thousands of claims at the pool at once. The poller checks instead, with
// one query, which nodes have work, and wakes their polls only.
func TestReconnectWakesOnlyNodesWithWork(t *testing.T) {
	c := &fakeClaimer{}
	p, n, _ := newPoller(c, time.Hour)
	n.Delegate(store.NotifyChannel, p.CheckNow)
	const polls = 20
	results := make([]chan pollResult, polls)
	for i := range results {
		results[i] = poll(p, fmt.Sprintf("node-%d", i), time.Hour)
	}
	waitParked(t, n, polls)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		calls := c.calls
		c.mu.Unlock()
		if calls == polls {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the polls never ran their first claim")
		}
	}
	c.push("node-7", "lost-notify")
	n.resynced() // what a listener reconnect does
	select {
	case r := <-results[7]:
		if len(r.cmds) != 1 {
			t.Fatalf("got %+v, want the command", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the poll of the node with work was not woken after the reconnect")
	}
	c.mu.Lock()
	calls := c.calls
	c.mu.Unlock()
	if calls != polls+1 {
		t.Fatalf("%d claims after the reconnect, want 1 (the node with work), not one per parked poll", calls-polls)
	}
}

// TestSpreadLongWaits: a long wait ends somewhere in its last quarter, so
// polls parked together do not all come back together; a short one is kept.
func TestSpreadLongWaits(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := spread(30 * time.Second)
		if d <= 22500*time.Millisecond || d > 30*time.Second {
			t.Fatalf("spread(30s) = %s, want in (22.5s, 30s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Fatalf("spread(30s) took %d values in 1000 tries: not spread", len(seen))
	}
	if d := spread(5 * time.Second); d != 5*time.Second {
		t.Fatalf("spread(5s) = %s, want 5s as asked", d)
	}
}

// parkDetached runs PollOrPark with a detach that parks the poll off its
// goroutine; its answer arrives on the returned channel.
func parkDetached(t *testing.T, p *Poller, node string, wait time.Duration, gone func() bool) chan pollResult {
	t.Helper()
	ch := make(chan pollResult, 1)
	cmds, parked, err := p.PollOrPark(context.Background(), node, 5, wait, func() (Detached, bool) {
		return Detached{Gone: gone, Answer: func(cmds []store.Command, err error) { ch <- pollResult{cmds, err} }}, true
	})
	if !parked {
		ch <- pollResult{cmds, err}
	}
	return ch
}

func answered(t *testing.T, ch chan pollResult) pollResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("a detached poll was not answered")
		return pollResult{}
	}
}

// TestDetachedPollWokenByItsNode: a poll parked off its goroutine is woken
// by its own node's signal only, claims, and is answered with what it
// claimed; it counts as parked meanwhile.
func TestDetachedPollWokenByItsNode(t *testing.T) {
	c := &fakeClaimer{}
	p, n, _ := newPoller(c, time.Hour)
	a := parkDetached(t, p, "node-a", time.Hour, nil)
	b := parkDetached(t, p, "node-b", time.Hour, nil)
	if got := p.Parked(); got != 2 {
		t.Fatalf("Parked() = %d, want 2", got)
	}
	c.push("node-a", "x")
	n.Wake(Key(store.NotifyChannel, "node-b"))
	n.Wake(Key(store.NotifyChannel, "node-a"))
	if r := answered(t, a); r.err != nil || len(r.cmds) != 1 || r.cmds[0].ID != "x" {
		t.Fatalf("node A's poll: %+v, want command x", r)
	}
	select {
	case r := <-b:
		t.Fatalf("node B's poll answered %+v after a wake with nothing to claim", r)
	case <-time.After(100 * time.Millisecond):
	}
	if got := p.Parked(); got != 1 {
		t.Fatalf("Parked() = %d, want node B's 1", got)
	}
}

// TestDetachedPollEndsEmptyAndKeepsItsSubscription: at its deadline a
// detached poll answers empty and leaves its subscription to the node's
// next poll, which then parks without claiming.
func TestDetachedPollEndsEmptyAndKeepsItsSubscription(t *testing.T) {
	c := &fakeClaimer{}
	p, _, _ := newPoller(c, time.Hour)
	r := answered(t, parkDetached(t, p, "node-a", 50*time.Millisecond, nil))
	if r.err != nil || len(r.cmds) != 0 {
		t.Fatalf("got %+v, want an empty answer", r)
	}
	calls := c.calls
	res := parkDetached(t, p, "node-a", time.Hour, nil)
	if c.calls != calls {
		t.Fatalf("the next poll claimed (%d claims, want %d): the kept subscription says nothing was queued", c.calls, calls)
	}
	p.Notifier.Wake(Key(store.NotifyChannel, "node-a"))
	c.push("node-a", "y") // after the wake: the poll's claim may miss it; the next wake finds it
	p.Notifier.Wake(Key(store.NotifyChannel, "node-a"))
	if r := answered(t, res); len(r.cmds) != 1 {
		t.Fatalf("got %+v, want command y", r)
	}
}

// TestDetachedPollDrainsAndForgetsGoneClients: a draining replica answers
// detached polls empty; a poll whose client left is not claimed for.
func TestDetachedPollDrainsAndForgetsGoneClients(t *testing.T) {
	c := &fakeClaimer{}
	p, n, draining := newPoller(c, time.Hour)
	gone := parkDetached(t, p, "node-a", time.Hour, func() bool { return true })
	c.push("node-a", "x")
	n.Wake(Key(store.NotifyChannel, "node-a"))
	if r := answered(t, gone); len(r.cmds) != 0 {
		t.Fatalf("a gone client's poll claimed %+v", r.cmds)
	}
	if got := len(c.queues["node-a"]); got != 1 {
		t.Fatalf("%d commands left queued, want 1", got)
	}
	kept := parkDetached(t, p, "node-b", time.Hour, nil)
	close(draining)
	if r := answered(t, kept); r.err != nil || len(r.cmds) != 0 {
		t.Fatalf("got %+v, want an empty answer on drain", r)
	}
	if r := answered(t, parkDetached(t, p, "node-b", time.Hour, nil)); len(r.cmds) != 0 {
		t.Fatalf("a poll parked while draining got %+v", r)
	}
	if got := p.Parked(); got != 0 {
		t.Fatalf("Parked() = %d after the drain, want 0", got)
	}
}
