// Package sdnotify tells systemd how a daemon is doing, over the notify
// protocol of units with Type=notify: READY=1 once it does its job,
// STOPPING=1 when a drain begins, and WATCHDOG=1 keep-alives from a loop
// whose progress shows the daemon is not stuck. It wraps go-systemd's
// daemon package; outside systemd ($NOTIFY_SOCKET unset) every call does
// nothing.
package sdnotify
