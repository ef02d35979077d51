// Package reaper expires leases and deletes commands past the retention
// (Pruner). It runs on every coordinator replica; the queries lock with SKIP
// LOCKED, so replicas reaping at once never handle the same command twice
// and never block a live heartbeat.
package reaper
