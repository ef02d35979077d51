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
	// detached holds the polls parked without a goroutine (PollOrPark),
	// for the drain; drainWatched says drainDetached runs.
	detached     map[*detachedPoll]struct{}
	drainWatched bool
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
	cmds, _, err := p.PollOrPark(ctx, nodeID, max, wait, nil)
	return cmds, err
}

// Detached is how a poll parked without a goroutine (PollOrPark) learns
// about its client and is answered.
type Detached struct {
	// Gone reports that the client has left: a woken poll then ends
	// without claiming, so no lease is taken for nobody.
	Gone func() bool
	// Answer is called once, on a goroutine of its own, with what the poll
	// claimed — empty when its wait ended or the replica drains — or the
	// claim's error. It must deliver the commands or release them.
	Answer func(cmds []store.Command, err error)
}

// PollOrPark is Poll for a caller that can let go of its goroutine while
// the poll waits. When nothing is claimable at once it calls detach; if
// detach returns ok, the poll is parked on a few hundred bytes (its
// subscription, a timer, the Detached) instead of a goroutine, parked is
// true, and d.Answer is called later exactly as Poll would have returned.
// Otherwise (detach nil or not ok) it waits as Poll does. A parked poll is
// woken exactly as a waiting one — by a lookup of its node's subscription,
// never a scan — and counts in Parked.
func (p *Poller) PollOrPark(ctx context.Context, nodeID string, max int, wait time.Duration, detach func() (Detached, bool)) (cmds []store.Command, parked bool, err error) {
	wait = spread(wait)
	wake, cancel, claim := p.subscribe(nodeID)
	keep := false
	unpark := p.park()
	defer func() {
		if parked {
			return // the parked poll owns the subscription and the count
		}
		unpark()
		if keep {
			p.keepIdle(nodeID, wake, cancel)
		} else {
			cancel()
		}
	}()
	var deadline *time.Timer
	for {
		if claim {
			cmds, err := p.Store.Claim(ctx, nodeID, max, p.TTL)
			if err != nil || len(cmds) > 0 {
				return cmds, false, err
			}
		}
		claim = true
		if detach != nil {
			if d, ok := detach(); ok {
				p.detach(&detachedPoll{p: p, node: nodeID, max: max, d: d, wake: wake, cancel: cancel, unpark: unpark}, wait)
				return nil, true, nil
			}
			detach = nil
		}
		if deadline == nil {
			deadline = time.NewTimer(wait)
			defer deadline.Stop()
		}
		select {
		case <-wake:
		case <-deadline.C:
			keep = true
			return []store.Command{}, false, nil
		case <-p.Draining:
			return []store.Command{}, false, nil
		case <-ctx.Done():
			return []store.Command{}, false, ctx.Err()
		}
	}
}

// spread shortens a long wait by up to a quarter, at random. An idle agent
// polls again as soon as its empty answer comes, so the polls of a fleet
// that parked together (a replica starting, a network blip) would otherwise
// end and come back together every wait — each a request through HTTP and
// authentication, thousands at once, with the memory of each in flight.
// Spread, they drift apart and stay apart. A short wait is kept as asked.
func spread(wait time.Duration) time.Duration {
	if wait < 10*time.Second {
		return wait
	}
	return wait - rand.N(wait/4)
}

// detachedPoll is a poll parked without a goroutine: a wake-up or its
// timer starts one (run) for as long as a claim and the answer take.
type detachedPoll struct {
	p      *Poller
	node   string
	max    int
	d      Detached
	wake   <-chan struct{}
	cancel func()
	unpark func()
	timer  *time.Timer

	mu sync.Mutex
	// busy: a goroutine runs the poll; a signal meanwhile is seen by it
	// (through wake), so no second one starts.
	busy bool
	// expired: the wait ended, or the replica drains; answer empty unless
	// a claim in flight finds something.
	expired bool
	done    bool
}

// detach parks dp until its node is signalled or wait passes.
func (p *Poller) detach(dp *detachedPoll, wait time.Duration) {
	// busy while being set up: a signal or the drain meanwhile only
	// marks the poll, and is acted on below.
	dp.busy = true
	p.Notifier.OnWake(Key(store.NotifyChannel, dp.node), dp.wake, dp.kick)
	p.mu.Lock()
	if p.detached == nil {
		p.detached = map[*detachedPoll]struct{}{}
	}
	p.detached[dp] = struct{}{}
	if !p.drainWatched && p.Draining != nil {
		p.drainWatched = true
		go p.drainDetached()
	}
	p.mu.Unlock()
	dp.timer = time.AfterFunc(wait, dp.expire)
	dp.mu.Lock()
	select {
	case <-p.Draining:
		dp.expired = true
	default:
	}
	// A signal that came since the last claim is in wake.
	dp.busy = dp.expired || len(dp.wake) > 0
	start := dp.busy
	dp.mu.Unlock()
	if start {
		go dp.run()
	}
}

// drainDetached ends every parked poll with an empty answer once the
// replica drains, as Poll does for a waiting one. (The only walk over all
// parked polls: a wake-up is a lookup by node.)
func (p *Poller) drainDetached() {
	<-p.Draining
	p.mu.Lock()
	all := make([]*detachedPoll, 0, len(p.detached))
	for dp := range p.detached {
		all = append(all, dp)
	}
	p.mu.Unlock()
	for _, dp := range all {
		dp.expire()
	}
}

// kick runs the poll after a signal, unless it runs already. It is called
// with the notifier's lock held: it only starts a goroutine.
func (dp *detachedPoll) kick() {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if dp.done || dp.busy {
		return
	}
	dp.busy = true
	go dp.run()
}

// expire ends the wait: the poll answers empty, or with what a claim in
// flight finds.
func (dp *detachedPoll) expire() {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if dp.done {
		return
	}
	dp.expired = true
	if !dp.busy {
		dp.busy = true
		go dp.run()
	}
}

// run claims while the node is signalled, and answers once something is
// claimed, the claim fails, or the wait is over; otherwise it parks again.
func (dp *detachedPoll) run() {
	ctx := context.Background() // the request's context ended with its handler
	for {
		select {
		case <-dp.wake:
			if dp.d.Gone != nil && dp.d.Gone() {
				dp.end(nil, nil, false)
				return
			}
			cmds, err := dp.p.Store.Claim(ctx, dp.node, dp.max, dp.p.TTL)
			if err != nil || len(cmds) > 0 {
				dp.end(cmds, err, false)
				return
			}
			continue
		default:
		}
		dp.mu.Lock()
		if dp.expired {
			dp.mu.Unlock()
			draining := false
			select {
			case <-dp.p.Draining:
				draining = true
			default:
			}
			dp.end([]store.Command{}, nil, !draining)
			return
		}
		dp.busy = false
		// A signal sent while busy found nothing to start: look again.
		if len(dp.wake) == 0 {
			dp.mu.Unlock()
			return
		}
		dp.busy = true
		dp.mu.Unlock()
	}
}

// end answers the poll and lets go of it; keep leaves its subscription for
// the node's next poll, as Poll does at its deadline.
func (dp *detachedPoll) end(cmds []store.Command, err error, keep bool) {
	dp.mu.Lock()
	dp.done = true
	dp.mu.Unlock()
	dp.timer.Stop()
	p := dp.p
	p.mu.Lock()
	delete(p.detached, dp)
	p.mu.Unlock()
	p.Notifier.OnWake(Key(store.NotifyChannel, dp.node), dp.wake, nil)
	dp.unpark()
	if keep {
		p.keepIdle(dp.node, dp.wake, dp.cancel)
	} else {
		dp.cancel()
	}
	dp.d.Answer(cmds, err)
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
