package lease

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/lib/pq"
)

// Notifier fans PostgreSQL notifications out to parked long-polls by node.
type Notifier struct {
	url     string
	channel string
	log     *slog.Logger

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
}

// NewNotifier prepares a notifier for channel on the database at url.
func NewNotifier(url, channel string, log *slog.Logger) *Notifier {
	return &Notifier{url: url, channel: channel, log: log, waiters: map[string]map[chan struct{}]struct{}{}}
}

// Subscribe registers interest in a node's queue. The returned channel gets a
// value (coalesced) whenever that node may have new work. Call cancel when
// done; subscribe before the claim query so no wake-up is missed between the
// two.
func (n *Notifier) Subscribe(nodeID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	set := n.waiters[nodeID]
	if set == nil {
		set = map[chan struct{}]struct{}{}
		n.waiters[nodeID] = set
	}
	set[ch] = struct{}{}
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		// The node's (empty) set is kept: nodes are few and long-lived.
		delete(set, ch)
		n.mu.Unlock()
	}
}

// Wake signals the waiters of one node, or of every node if nodeID is "".
func (n *Notifier) Wake(nodeID string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, set := range n.waiters {
		if nodeID != "" && id != nodeID {
			continue
		}
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default: // already signalled; the poll will re-scan anyway
			}
		}
	}
}

// Parked returns how many polls are waiting, for metrics.
func (n *Notifier) Parked() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	total := 0
	for _, set := range n.waiters {
		total += len(set)
	}
	return total
}

// Run listens until ctx ends. lib/pq's Listener reconnects by itself; after a
// reconnect it delivers a nil notification, and since anything may have been
// missed meanwhile every poll is woken to re-scan.
func (n *Notifier) Run(ctx context.Context) error {
	l := pq.NewListener(n.url, 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		switch ev {
		case pq.ListenerEventConnectionAttemptFailed, pq.ListenerEventDisconnected:
			n.log.Warn("notification listener lost its connection", "err", err)
		case pq.ListenerEventReconnected:
			n.log.Info("notification listener reconnected")
		}
	})
	defer l.Close()
	if err := l.Listen(n.channel); err != nil {
		// Listen fails only if the first connection fails; the listener keeps
		// retrying and re-listens on reconnect, so carry on and rely on it.
		n.log.Warn("notification listener not yet connected; safety polls cover the gap", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case note := <-l.Notify:
			if note == nil {
				n.Wake("")
				continue
			}
			n.Wake(note.Extra)
		}
	}
}
