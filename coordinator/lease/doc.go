// Package lease hands queued commands to agents through long-polls.
//
// A parked poll holds no database connection: it waits on a channel. The
// Notifier owns one LISTEN connection per coordinator replica (outside the
// pool) and wakes the polls of the node named in each notification, so an
// enqueue on any replica reaches a poll parked on any other. A notification
// is only a hint — the woken poll re-runs the claim query — and a slow safety
// poll covers notifications lost while the listener reconnects. Others
// keeping state by notification (the API's token caches) subscribe a
// callback with OnNotify, and start over when told notifications were
// missed.
package lease
