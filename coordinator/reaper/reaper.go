package reaper

import (
	"context"
	"log/slog"
	"time"

	"github.com/execq/execq/coordinator/metrics"
	"github.com/execq/execq/coordinator/store"
)

// batch bounds one FailLost transaction so a mass agent loss is handled in
// short transactions.
const batch = 100

// Reaper periodically requeues leases that expired before start and fails
// running commands whose agent stopped heartbeating.
type Reaper struct {
	Store    *store.Store
	Interval time.Duration
	Metrics  *metrics.Metrics
	Log      *slog.Logger
	// TimeoutSlack is how long past its timeout a running command is left
	// to its agent (which enforces the timeout) before the reaper fails it:
	// the stop grace plus the lease TTL.
	TimeoutSlack time.Duration
}

// Run reaps every Interval until ctx ends.
func (r *Reaper) Run(ctx context.Context) error {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.Once(ctx)
		}
	}
}

// Once runs one reaping pass. Errors are logged: the next tick retries.
func (r *Reaper) Once(ctx context.Context) {
	n, err := r.Store.RequeueExpired(ctx)
	if err != nil && ctx.Err() == nil {
		r.Log.Warn("requeue expired leases", "err", err)
	}
	if n > 0 {
		r.Metrics.Requeued.Add(float64(n))
		r.Log.Info("leases expired before start; commands queued again", "count", n)
	}
	r.timeouts(ctx)
	for {
		ids, err := r.Store.FailLost(ctx, batch)
		if err != nil {
			if ctx.Err() == nil {
				r.Log.Warn("fail commands of lost agents", "err", err)
			}
			return
		}
		for _, id := range ids {
			r.Log.Warn("agent lost; command failed", "command_id", id)
		}
		r.Metrics.AgentLost.Add(float64(len(ids)))
		if len(ids) < batch {
			return
		}
	}
}

// timeouts fails queued commands past their queue timeout and, as a
// backstop to the agents, running ones well past their run timeout.
func (r *Reaper) timeouts(ctx context.Context) {
	for _, pass := range []struct {
		what string
		fail func() ([]string, error)
	}{
		{"not picked up within its queue timeout; command failed", func() ([]string, error) { return r.Store.FailNotPickedUp(ctx, batch) }},
		{"timed out and not reported by its agent; command failed", func() ([]string, error) { return r.Store.FailTimedOut(ctx, r.TimeoutSlack, batch) }},
	} {
		for {
			ids, err := pass.fail()
			if err != nil {
				if ctx.Err() == nil {
					r.Log.Warn("reap timed-out commands", "err", err)
				}
				break
			}
			for _, id := range ids {
				r.Log.Warn(pass.what, "command_id", id)
			}
			if len(ids) < batch {
				break
			}
		}
	}
}
