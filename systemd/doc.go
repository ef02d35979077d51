// Package systemd holds the daemons' unit files (execq-coordinator.service,
// execq-agent.service) and a test that checks them with systemd-analyze:
// `verify` must find nothing to say, and `security` must score each unit's
// exposure at most the level the README reports. It has no Go code of its
// own; the package exists for the test.
package systemd
