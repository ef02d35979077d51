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
	// LostGrace is how long past its expiry a running command's lease is
	// left before the command is failed as agent lost: long enough for a
	// heartbeat that reached a coordinator before the expiry, but waited
	// for the database, to land (store.FailLost).
	LostGrace time.Duration
	// Tick, if set, is called on every tick before the pass: systemd's
	// watchdog is fed from here, so it starves when this loop stops
	// turning, and a pass slowed by the database (each statement bounded
	// by the query timeout) only delays it.
	Tick func()
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
			if r.Tick != nil {
				r.Tick()
			}
			r.Once(ctx)
		}
	}
}

// Once runs one reaping pass. Errors are logged: the next tick retries.
func (r *Reaper) Once(ctx context.Context) {
	// Lease upkeep: it skips admission (one call at a time per replica), so
	// expired leases are requeued and lost agents failed while new work
	// fills the pool, and it never counts toward the 429 bound.
	ctx = store.WithPriority(ctx)
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
		ids, err := r.Store.FailLost(ctx, r.LostGrace, batch)
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
