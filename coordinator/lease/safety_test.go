package lease_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/coordinator/lease"
	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/coordinator/testpg"
	"github.com/execq/execq/shared"
)

// countingStore is the real store with its claim queries counted.
type countingStore struct {
	*store.Store
	claims atomic.Int64
}

func (s *countingStore) Claim(ctx context.Context, nodeID string, max int, ttl time.Duration) ([]store.Command, error) {
	s.claims.Add(1)
	return s.Store.Claim(ctx, nodeID, max, ttl)
}

// TestIdleFleetSafetyCheckIsPerReplica parks the polls of many nodes with no
// work and no notifications: the safety check must cost a few queries per
// interval for the whole replica, not a claim per parked poll (thousands of
// idle agents were thousands of claims per interval). A command whose
// notification is lost (nobody listens here) is still found by it.
func TestIdleFleetSafetyCheckIsPerReplica(t *testing.T) {
	ctx := context.Background()
	url := testpg.New(t)
	st, err := store.Open(ctx, url, store.Options{MaxConns: 4})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	user, _, err := st.CreateUser(ctx, "alice", true) // an admin may use every container
	if err != nil {
		t.Fatalf("create user: %v", err)
	}
	const parked = 40
	nodes := make([]string, parked)
	for i := range nodes {
		n, _, err := st.CreateNode(ctx, fmt.Sprintf("node-%d", i))
		if err != nil {
			t.Fatalf("create node: %v", err)
		}
		nodes[i] = n.ID
	}
	container := uuid.NewString()
	if rej, err := st.ReplaceInventory(ctx, nodes[0], []store.Container{{ID: container, Name: "c1", State: "running"}}); err != nil || len(rej) > 0 {
		t.Fatalf("report container: rejected %v, err %v", rej, err)
	}

	// The notifier never runs: every notification is lost, as while a
	// listener reconnects, so only the safety check can find work.
	const interval = 20 * time.Millisecond
	cs := &countingStore{Store: st}
	notifier := lease.NewNotifier(url, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	p := &lease.Poller{Store: cs, Notifier: notifier, TTL: time.Minute, SafetyInterval: interval}
	pctx, cancel := context.WithCancel(ctx)
	results := make([]chan []store.Command, parked)
	for i, node := range nodes {
		results[i] = make(chan []store.Command, 1)
		go func() {
			cmds, _ := p.Poll(pctx, node, 5, time.Hour)
			results[i] <- cmds
		}()
	}
	t.Cleanup(func() {
		cancel()
		for _, r := range results {
			<-r
		}
	})
	// Every poll has run its first claim and parked.
	for deadline := time.Now().Add(20 * time.Second); cs.claims.Load() < parked || notifier.Parked(store.NotifyChannel) < parked; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("polls never parked: %d claims, %d parked", cs.claims.Load(), notifier.Parked(store.NotifyChannel))
		}
	}

	// Twenty safety intervals with nothing queued.
	before := cs.claims.Load()
	time.Sleep(20 * interval)
	if extra := cs.claims.Load() - before; extra > 2 {
		t.Fatalf("%d idle parked polls ran %d claims in 20 safety intervals; want a check per replica, not a claim per parked poll", parked, extra)
	}

	if _, err := st.Enqueue(ctx, container, user.ID, shared.SubmitRequest{Program: "true", Args: []string{}}); err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	select {
	case cmds := <-results[0]:
		if len(cmds) != 1 {
			t.Fatalf("poll of the node with work answered %d commands, want 1", len(cmds))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a command whose notification was lost was never picked up by the safety check")
	}
	results[0] <- nil // for the cleanup
}
