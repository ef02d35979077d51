// Package metrics defines the coordinator's Prometheus metrics on an injected
// registry: HTTP traffic by route template, long-polls parked, dispatch and
// execution latency, commands ended by status and reason, output bytes and
// heartbeats accepted, queue depth and age in total and per node, and each
// node's last contact and liveness (read from PostgreSQL at scrape time, in
// one grouped statement), and the database pool.
package metrics
