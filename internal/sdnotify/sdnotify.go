package sdnotify

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends a daemon's state to systemd. The zero value and a nil
// *Notifier do nothing, so code under test needs none.
type Notifier struct {
	log *slog.Logger
	// interval is half of $WATCHDOG_USEC, the keep-alive period systemd
	// asks for; 0 when no watchdog is set for this process.
	interval time.Duration
	// last is when the last keep-alive went out (UnixNano), so a loop that
	// ticks faster than the period does not flood the socket.
	last      atomic.Int64
	failOnce  sync.Once
	readyOnce sync.Once
	stopOnce  sync.Once
}

// New reads the watchdog period systemd set ($WATCHDOG_USEC, for this
// process if $WATCHDOG_PID names one). A malformed value is logged and the
// watchdog left off: systemd then kills the daemon, which says more than
// a daemon refusing to start over it would.
//
// $NOTIFY_SOCKET is left in the environment: go-systemd reads it on every
// message. Children inherit it, which is harmless: `runc exec` does not use
// it, and with NotifyAccess=main systemd ignores any process but the main one.
func New(log *slog.Logger) *Notifier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{log: log}
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog: ignoring WATCHDOG_USEC", "error", err)
	}
	n.interval = d / 2
	return n
}

// WatchdogInterval is how often Alive must be called to keep systemd's
// watchdog content: half the watchdog timeout, or 0 when there is none.
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.interval
}

// Ready says start-up is complete: systemd starts units ordered after this
// one and `systemctl start` returns. Only the first call sends.
func (n *Notifier) Ready() {
	if n != nil {
		n.readyOnce.Do(func() { n.send(daemon.SdNotifyReady) })
	}
}

// Stopping says a drain has begun, so systemd shows the unit as
// deactivating rather than failed while it finishes. Only the first call
// sends.
func (n *Notifier) Stopping() {
	if n != nil {
		n.stopOnce.Do(func() { n.send(daemon.SdNotifyStopping) })
	}
}

// Alive is a watchdog keep-alive. Call it from a loop whose turns prove the
// daemon works — never from a goroutine of its own, which would keep a
// stuck daemon alive. Calls closer together than a second (or half the
// keep-alive period, if shorter) send nothing: a fast loop costs one
// datagram a second, and the keep-alive after a slow turn of the loop is
// never held back.
func (n *Notifier) Alive() {
	if n == nil || n.interval <= 0 {
		return
	}
	now := time.Now().UnixNano()
	if last := n.last.Load(); last != 0 && time.Duration(now-last) < min(n.interval/2, time.Second) {
		return
	}
	n.last.Store(now)
	n.send(daemon.SdNotifyWatchdog)
}

// send writes one message; a failure is logged once (a socket that went
// away fails every time).
func (n *Notifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.failOnce.Do(func() { n.log.Warn("systemd notify failed", "state", state, "error", err) })
	}
}
