// Command fleetsim measures one or two coordinator replicas carrying a fleet
// of simulated agents that speak the real protocol, against what the same
// PostgreSQL commits in the same run (pgbench -N). `make bench-fleet` runs it.
//
// It creates a fresh database on the dev cluster, registers N nodes through
// the store, and starts bin/execq-coordinator as separate processes, so the
// coordinator's CPU time and RSS are read from /proc for that process alone
// (an in-process coordinator would share its CPU and heap with the
// simulator). N simulated agents run in this process, each with its own
// agent/client.Client and connection: they report an inventory of a few
// containers, long-poll for leases, and for each command start it, send one
// heartbeat with a line of output, "execute" for -exec (default 0) and
// finish it with exit code 0. Commands are submitted through the public API
// as an admin user, either at -rate per second for -duration, or as a
// burn-down of a -backlog submitted before the agents start polling.
//
// The idle mode (-idle) parks N agents and does no work but for one probe
// agent: it measures the probe's pickup latency before and while the fleet is
// parked, and what the parked fleet costs: coordinator RSS and goroutines,
// PostgreSQL connections and commits per second.
//
// -seed-rows N fills the job table with N finished commands before the
// replicas start (a bulk load, then VACUUM ANALYZE), to measure the same
// fleet against a history of millions of rows: compare with a run without it.
//
// With -tls the replicas serve HTTPS with a certificate made for the run and
// every agent connects over TLS with the agent's own transport, as a real
// fleet does: what the agent negotiates (HTTP/1.1 or HTTP/2) decides how a
// parked poll is held.
//
// Figures are noisy on a shared machine; the ratio to pgbench in the same
// run is what to compare between runs.
package main
