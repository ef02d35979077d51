package lease

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/lib/pq"
)

// Notifier fans PostgreSQL notifications out to parked waiters by key: the
// channel and the payload (a node ID for enqueues, a command ID for
// completions), see Key.
type Notifier struct {
	url      string
	channels []string
	log      *slog.Logger

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
}

// NewNotifier prepares a notifier for channels on the database at url.
func NewNotifier(url string, channels []string, log *slog.Logger) *Notifier {
	return &Notifier{url: url, channels: channels, log: log, waiters: map[string]map[chan struct{}]struct{}{}}
}

// Key names what a waiter waits for: a notification on channel with payload.
func Key(channel, payload string) string { return channel + "/" + payload }

// Subscribe registers interest in a key. The returned channel gets a value
// (coalesced) whenever a matching notification arrives. Call cancel when
// done; subscribe before reading the state waited on, so no wake-up is missed
// between the two.
func (n *Notifier) Subscribe(key string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	set := n.waiters[key]
	if set == nil {
		set = map[chan struct{}]struct{}{}
		n.waiters[key] = set
	}
	set[ch] = struct{}{}
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		delete(set, ch)
		if len(set) == 0 {
			delete(n.waiters, key)
		}
		n.mu.Unlock()
	}
}

// Wake signals the waiters of one key, or every waiter if key is "".
func (n *Notifier) Wake(key string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if key != "" {
		signal(n.waiters[key])
		return
	}
	for _, set := range n.waiters {
		signal(set)
	}
}

func signal(set map[chan struct{}]struct{}) {
	for ch := range set {
		select {
		case ch <- struct{}{}:
		default: // already signalled; the waiter will re-read anyway
		}
	}
}

// Parked returns how many waiters wait on channel (agent long-polls on the
// enqueue channel, GET ?wait= callers on the completion channel).
func (n *Notifier) Parked(channel string) int {
	prefix := Key(channel, "")
	n.mu.Lock()
	defer n.mu.Unlock()
	total := 0
	for key, set := range n.waiters {
		if strings.HasPrefix(key, prefix) {
			total += len(set)
		}
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
	for _, ch := range n.channels {
		if err := l.Listen(ch); err != nil {
			// Listen fails only if the first connection fails; the listener
			// keeps retrying and re-listens on reconnect, so carry on.
			n.log.Warn("notification listener not yet connected; safety polls cover the gap", "channel", ch, "err", err)
		}
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
			n.Wake(Key(note.Channel, note.Extra))
		}
	}
}
