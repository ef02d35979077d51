package lease

import (
	"context"
	"time"

	"github.com/execq/execq/coordinator/store"
)

// Claimer is the store query a poll runs; an interface so the wait logic can
// be unit tested without a database.
type Claimer interface {
	Claim(ctx context.Context, nodeID string, max int, ttl time.Duration) ([]store.Command, error)
}

// Poller runs long-polls for agents.
type Poller struct {
	Store    Claimer
	Notifier *Notifier
	// TTL is the lease length handed out with each claim.
	TTL time.Duration
	// SafetyInterval bounds how long a lost notification can delay pickup.
	SafetyInterval time.Duration
	// Draining, once closed, ends every parked poll with an empty answer so
	// a stopping replica hands its agents back quickly instead of cutting them off.
	Draining <-chan struct{}
}

// Poll claims up to max commands for the node, waiting up to wait for some
// to be queued. It returns an empty list when the wait ends with nothing.
func (p *Poller) Poll(ctx context.Context, nodeID string, max int, wait time.Duration) ([]store.Command, error) {
	wake, cancel := p.Notifier.Subscribe(Key(store.NotifyChannel, nodeID))
	defer cancel()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	safety := time.NewTicker(p.SafetyInterval)
	defer safety.Stop()
	for {
		cmds, err := p.Store.Claim(ctx, nodeID, max, p.TTL)
		if err != nil || len(cmds) > 0 {
			return cmds, err
		}
		select {
		case <-wake:
		case <-safety.C:
		case <-deadline.C:
			return cmds, nil
		case <-p.Draining:
			return cmds, nil
		case <-ctx.Done():
			return cmds, ctx.Err()
		}
	}
}
