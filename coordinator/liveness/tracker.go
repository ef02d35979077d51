package liveness

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Toucher stamps nodes as seen; *store.Store is one.
type Toucher interface {
	TouchNodes(ctx context.Context, nodes []string, fresh time.Duration) (int, error)
}

// Tracker notes which nodes' agents are in contact with this replica and
// writes it to the database every Interval.
//
// A node counts as in contact at a flush if one of its requests arrived
// since the last flush or is still open then: an idle agent's long-poll is
// open for most of its life, and it is as good a sign of life as a new
// request (a stopped agent's connection closes, ending the poll). So a live
// agent is stamped at least every 1.5 Interval (a flush skips rows stamped
// in the last half interval), and a stopped one is last stamped at most one
// Interval after its last request ended.
type Tracker struct {
	Store    Toucher
	Interval time.Duration
	// Log reports failed flushes; nil discards them.
	Log *slog.Logger

	mu sync.Mutex
	// open counts each node's requests in flight; a node is present from
	// its first request until the flush after its last one ended.
	open map[string]int
}

// Contact notes a request of the node's agent; call done when it ends.
// Memory only: it never touches the database.
func (t *Tracker) Contact(node string) (done func()) {
	t.mu.Lock()
	if t.open == nil {
		t.open = map[string]int{}
	}
	t.open[node]++
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		t.open[node]--
		t.mu.Unlock()
	}
}

// Run flushes every Interval until ctx ends.
func (t *Tracker) Run(ctx context.Context) error {
	tick := time.NewTicker(t.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := t.Flush(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) && t.Log != nil {
				t.Log.Warn("node contacts not recorded; retried at the next flush", "err", err)
			}
		}
	}
}

// Flush stamps the nodes in contact since the last flush. Nodes whose
// requests all ended are forgotten once stamped; on an error they are kept
// for the next flush.
func (t *Tracker) Flush(ctx context.Context) error {
	t.mu.Lock()
	nodes := make([]string, 0, len(t.open))
	for n := range t.open {
		nodes = append(nodes, n)
	}
	t.mu.Unlock()
	if len(nodes) == 0 {
		return nil
	}
	if _, err := t.Store.TouchNodes(ctx, nodes, t.Interval/2); err != nil {
		return err
	}
	t.mu.Lock()
	for _, n := range nodes {
		if t.open[n] == 0 {
			delete(t.open, n)
		}
	}
	t.mu.Unlock()
	return nil
}
