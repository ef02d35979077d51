// Package metrics defines the coordinator's Prometheus metrics on an injected
// registry: HTTP traffic by route template, long-polls parked, dispatch and
// execution latency, queue depth and age (read from PostgreSQL at scrape
// time), and the database pool.
package metrics
