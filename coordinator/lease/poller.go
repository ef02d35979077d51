package lease

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/execq/execq/coordinator/store"
)

// Claimer is the store queries a poll runs; an interface so the wait logic
// can be unit tested without a database.
type Claimer interface {
	Claim(ctx context.Context, nodeID string, max int, ttl time.Duration) ([]store.Command, error)
	// NodesWithWork lists the nodes with a claimable command: the safety
	// check, one query for every poll parked on the replica.
	NodesWithWork(ctx context.Context) ([]string, error)
}

// Poller runs long-polls for agents.
//
// A parked poll claims again only when told its node may have work: by a
// notification (the fast path) or by the replica's safety check, which runs
// one grouped query per SafetyInterval for all parked polls together and
// wakes those whose node has a claimable command. So an idle fleet costs one
// query per replica per interval, not one per agent, and a notification
// lost while the listener reconnected delays pickup by one interval at most.
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
	// Log reports failed safety checks; nil discards them.
	Log *slog.Logger

	mu sync.Mutex
	// parked counts the polls in Poll; the safety check runs while it is
	// not zero, so a replica without agents runs no query at all.
	parked    int
	stopCheck context.CancelFunc
	// idle holds, by node, the subscription of a poll that ended empty at
	// its deadline, for the node's next poll (see Poll).
	idle map[string]*idleSub
}

// idleSub is a subscription kept between two polls of an idle node.
type idleSub struct {
	wake   <-chan struct{}
	cancel func()
	expiry *time.Timer
}

// Poll claims up to max commands for the node, waiting up to wait for some
// to be queued. It returns an empty list when the wait ends with nothing.
//
// An idle agent polls again as soon as an empty answer comes back. A poll
// that ends empty at its deadline leaves its subscription for the node's
// next poll (for one SafetyInterval): if no notification, safety-check wake
// or wake-all reached it since the last claim, nothing was queued for the
// node that a claim would find, and the next poll parks without querying.
// So an idle agent costs no query per poll, only its share of the safety
// check; a notification lost in the gap is found by the safety check, as
// for a parked poll.
func (p *Poller) Poll(ctx context.Context, nodeID string, max int, wait time.Duration) ([]store.Command, error) {
	wake, cancel, claim := p.subscribe(nodeID)
	keep := false
	defer func() {
		if keep {
			p.keepIdle(nodeID, wake, cancel)
		} else {
			cancel()
		}
	}()
	defer p.park()()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		if claim {
			cmds, err := p.Store.Claim(ctx, nodeID, max, p.TTL)
			if err != nil || len(cmds) > 0 {
				return cmds, err
			}
		}
		claim = true
		select {
		case <-wake:
		case <-deadline.C:
			keep = true
			return []store.Command{}, nil
		case <-p.Draining:
			return []store.Command{}, nil
		case <-ctx.Done():
			return []store.Command{}, ctx.Err()
		}
	}
}

// subscribe returns the node's wake-up channel: the subscription its last
// poll left, if any, else a new one. claim says whether the poll must claim
// before it parks: always with a new subscription (subscribed before the
// claim reads, so no wake-up is missed between the two), and with a kept
// one only if it was woken since.
func (p *Poller) subscribe(nodeID string) (wake <-chan struct{}, cancel func(), claim bool) {
	p.mu.Lock()
	s := p.idle[nodeID]
	if s != nil && s.expiry.Stop() {
		delete(p.idle, nodeID)
		p.mu.Unlock()
		select {
		case <-s.wake:
			return s.wake, s.cancel, true
		default:
			return s.wake, s.cancel, false
		}
	}
	p.mu.Unlock()
	wake, cancel = p.Notifier.Subscribe(Key(store.NotifyChannel, nodeID))
	return wake, cancel, true
}

// keepIdle keeps a subscription for the node's next poll, for one
// SafetyInterval at most.
func (p *Poller) keepIdle(nodeID string, wake <-chan struct{}, cancel func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle == nil {
		p.idle = map[string]*idleSub{}
	}
	if old := p.idle[nodeID]; old != nil && old.expiry.Stop() {
		old.cancel() // two polls of one node ended: keep one
	}
	s := &idleSub{wake: wake, cancel: cancel}
	s.expiry = time.AfterFunc(p.SafetyInterval, func() {
		p.mu.Lock()
		if p.idle[nodeID] == s {
			delete(p.idle, nodeID)
		}
		p.mu.Unlock()
		cancel()
	})
	p.idle[nodeID] = s
}

// Parked returns how many polls are in Poll now. (The notifier's count of
// subscriptions also holds those kept between the polls of idle nodes.)
func (p *Poller) Parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.parked
}

// park counts a poll in, starting the safety check with the first one, and
// returns the function that counts it out, stopping the check with the last.
func (p *Poller) park() func() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.parked++
	if p.parked == 1 {
		ctx, stop := context.WithCancel(context.Background())
		p.stopCheck = stop
		go p.safetyCheck(ctx)
	}
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.parked--
		if p.parked == 0 {
			p.stopCheck()
			p.stopCheck = nil
		}
	}
}

// safetyCheck wakes, every interval (with jitter, so replicas do not query
// in step), the parked polls of nodes that have claimable work, until ctx
// ends.
func (p *Poller) safetyCheck(ctx context.Context) {
	for {
		// ±10%: replicas started together drift apart.
		d := p.SafetyInterval - p.SafetyInterval/10 + rand.N(p.SafetyInterval/5+1)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		p.check(ctx)
	}
}

// CheckNow runs a safety check at once, in the background: what to do when
// notifications may have been missed (see Notifier.Delegate), rather than
// wake every parked poll to claim.
func (p *Poller) CheckNow() { go p.check(context.Background()) }

// check wakes the polls of the nodes that have claimable work, and the
// subscriptions kept for idle nodes' next polls.
func (p *Poller) check(ctx context.Context) {
	nodes, err := p.Store.NodesWithWork(ctx)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, context.Canceled) && p.Log != nil {
			p.Log.Warn("safety check of parked polls failed", "err", err)
		}
		return
	}
	for _, node := range nodes {
		p.Notifier.Wake(Key(store.NotifyChannel, node))
	}
}
