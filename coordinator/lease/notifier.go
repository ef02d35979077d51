package lease

import (
	"context"
	"log/slog"
	"net"
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
	waiters map[string]map[<-chan struct{}]*waiter
	// handlers are called with the payload of each notification on their
	// channel; resyncs after anything may have been missed (see OnNotify).
	handlers map[string][]func(payload string)
	resyncs  []func()
	// delegated channels' waiters are not all woken after a reconnect:
	// their resync wakes those that have something (see Delegate).
	delegated map[string]bool
}

// NewNotifier prepares a notifier for channels on the database at url.
func NewNotifier(url string, channels []string, log *slog.Logger) *Notifier {
	return &Notifier{url: url, channels: channels, log: log, waiters: map[string]map[<-chan struct{}]*waiter{}}
}

// waiter is one subscription: its coalescing channel and, for a waiter
// without a goroutine of its own (see OnWake), the function each signal
// calls.
type waiter struct {
	ch chan struct{}
	fn func()
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
		set = map[<-chan struct{}]*waiter{}
		n.waiters[key] = set
	}
	set[ch] = &waiter{ch: ch}
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

// OnWake makes every later signal of the subscription ch (of key) also
// call fn, so a waiter parked without a goroutine of its own learns of it.
// fn is called with the notifier's lock held, on the signalling goroutine:
// it must be quick and must not call the notifier (start a goroutine for
// anything more). A cancelled subscription is left alone.
func (n *Notifier) OnWake(key string, ch <-chan struct{}, fn func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if w := n.waiters[key][ch]; w != nil {
		w.fn = fn
	}
}

// OnNotify calls fn, on the listener's goroutine, with the payload of every
// notification on channel (which must be among the notifier's channels),
// and resync whenever notifications may have been missed: once LISTEN first
// takes effect and after each reconnect. It suits state kept in memory and
// invalidated by notification, such as caches; fn and resync must be quick.
func (n *Notifier) OnNotify(channel string, fn func(payload string), resync func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.handlers == nil {
		n.handlers = map[string][]func(string){}
	}
	n.handlers[channel] = append(n.handlers[channel], fn)
	n.resyncs = append(n.resyncs, resync)
}

// Delegate hands the waiters of channel, whenever notifications may have
// been missed, to resync instead of waking them all: with thousands of agent
// long-polls parked, waking each to re-run its claim sends thousands of
// queries at the pool at once, where one query can tell which have work.
// resync runs on the listener's goroutine and must be quick.
func (n *Notifier) Delegate(channel string, resync func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.delegated == nil {
		n.delegated = map[string]bool{}
	}
	n.delegated[channel] = true
	n.resyncs = append(n.resyncs, resync)
}

// dispatch calls the handlers of a notification, or every resync for nil.
func (n *Notifier) dispatch(note *pq.Notification) {
	n.mu.Lock()
	var fns []func(string)
	var resyncs []func()
	if note != nil {
		fns = n.handlers[note.Channel]
	} else {
		resyncs = n.resyncs
	}
	n.mu.Unlock()
	for _, fn := range fns {
		fn(note.Extra)
	}
	for _, fn := range resyncs {
		fn()
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

func signal(set map[<-chan struct{}]*waiter) {
	for _, w := range set {
		select {
		case w.ch <- struct{}{}:
		default: // already signalled; the waiter will re-read anyway
		}
		if w.fn != nil {
			w.fn()
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

// Run listens until ctx ends, and returns soon after it does whatever the
// database does. lib/pq's Listener reconnects by itself; after a reconnect
// it delivers a nil notification, and since anything may have been missed
// meanwhile every poll is woken to re-scan.
//
// The Listener alone cannot be stopped in time: Listen blocks until a
// connection is up, and Close waits for a connection attempt in progress,
// which has no deadline (PostgreSQL at max_connections, or a host that
// accepts TCP and never answers). So Listen runs off the main loop, and the
// Listener dials through a dialer that closes its connections when ctx ends,
// which fails any attempt in progress and frees Close.
func (n *Notifier) Run(ctx context.Context) error {
	dialer := newClosingDialer(ctx)
	l := pq.NewDialListener(dialer, n.url, 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		if ctx.Err() != nil {
			return // stopping: failures are ours
		}
		switch ev {
		case pq.ListenerEventConnectionAttemptFailed, pq.ListenerEventDisconnected:
			n.log.Warn("notification listener lost its connection", "err", err)
		case pq.ListenerEventReconnected:
			n.log.Info("notification listener reconnected")
		}
	})
	defer func() {
		dialer.closeAll() // ctx has ended, but do not rely on AfterFunc's goroutine having run
		_ = l.Close()
		// The Listener's goroutine may be blocked handing over a
		// notification; drain until it closes Notify on its way out.
		go func() {
			for range l.Notify {
			}
		}()
	}()
	go func() {
		for _, ch := range n.channels {
			// Listen blocks until the first connection is up and fails only
			// once the Listener is closed; the Listener re-listens on every
			// reconnect, and safety polls cover the gap meanwhile.
			if err := l.Listen(ch); err != nil {
				return
			}
		}
		// Anything notified before LISTEN took effect was missed: wake every
		// waiter to re-read, as after a reconnect, rather than leave it to
		// the slow safety poll.
		n.resynced()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case note := <-l.Notify:
			if note == nil {
				n.resynced()
				continue
			}
			n.dispatch(note)
			n.Wake(Key(note.Channel, note.Extra))
		}
	}
}

// resynced tells everyone that notifications may have been missed: every
// resync is called and every waiter of a channel not delegated is woken.
func (n *Notifier) resynced() {
	n.dispatch(nil)
	n.mu.Lock()
	defer n.mu.Unlock()
	for key, set := range n.waiters {
		if channel, _, _ := strings.Cut(key, "/"); !n.delegated[channel] {
			signal(set)
		}
	}
}

// closingDialer dials for a Listener and, once its context ends, closes
// every connection it made and refuses new ones.
type closingDialer struct {
	d     net.Dialer
	ctx   context.Context
	mu    sync.Mutex
	done  bool
	conns map[net.Conn]struct{}
}

func newClosingDialer(ctx context.Context) *closingDialer {
	d := &closingDialer{ctx: ctx, conns: map[net.Conn]struct{}{}}
	context.AfterFunc(ctx, d.closeAll)
	return d
}

func (d *closingDialer) closeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.done = true
	for c := range d.conns {
		_ = c.Close()
	}
	clear(d.conns)
}

// DialContext is what lib/pq calls (it prefers pq.DialerContext); ctx may
// carry connect_timeout.
func (d *closingDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(d.ctx, cancel)
	defer stop()
	c, err := d.d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		c.Close()
		return nil, net.ErrClosed
	}
	d.conns[c] = struct{}{}
	return &trackedConn{Conn: c, d: d}, nil
}

func (d *closingDialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

func (d *closingDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

// trackedConn forgets itself in its dialer when closed.
type trackedConn struct {
	net.Conn
	d *closingDialer
}

func (c *trackedConn) Close() error {
	c.d.mu.Lock()
	delete(c.d.conns, c.Conn)
	c.d.mu.Unlock()
	return c.Conn.Close()
}
