package reaper

import (
	"context"
	"log/slog"
	"time"

	"github.com/execq/execq/coordinator/metrics"
	"github.com/execq/execq/coordinator/store"
)

// PruneBatch bounds one prune statement, so deleting a long history takes
// many short statements that each hold few row locks, never one long one.
const PruneBatch = 500

// Pruner deletes terminal commands that finished more than Retention ago.
// Every replica runs one; SKIP LOCKED keeps them off each other's rows.
type Pruner struct {
	Store     *store.Store
	Retention time.Duration
	Interval  time.Duration
	Metrics   *metrics.Metrics
	Log       *slog.Logger
}

// Run prunes every Interval until ctx ends. A zero Retention keeps every
// command: it returns at once.
func (p *Pruner) Run(ctx context.Context) error {
	if p.Retention <= 0 {
		return nil
	}
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			p.Once(ctx)
		}
	}
}

// Once deletes batches until one deletes fewer than PruneBatch, and returns
// how many commands it deleted. Each batch starts where the one before
// ended (store.Prune), not at the oldest row again, so the dead index
// entries the earlier batches left are not read again; each pass starts at
// the oldest. Errors are logged: the next tick retries. A zero Retention
// deletes nothing.
func (p *Pruner) Once(ctx context.Context) int64 {
	var total int64
	if p.Retention <= 0 {
		return 0
	}
	var from time.Time
	for ctx.Err() == nil {
		n, next, err := p.Store.Prune(ctx, p.Retention, from, PruneBatch)
		if err != nil {
			if ctx.Err() == nil {
				p.Log.Warn("prune commands past the retention", "err", err)
			}
			break
		}
		total += n
		from = next
		p.Metrics.Pruned.Add(float64(n))
		if n < PruneBatch {
			break
		}
	}
	if total > 0 {
		p.Log.Info("commands past the retention deleted", "count", total, "retention", p.Retention.String())
	}
	return total
}
