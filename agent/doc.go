// Package agent is the execq agent: the daemon on each host that reports the
// host's runc containers to the coordinator, long-polls for commands leased
// to its node, acknowledges start before executing (at most once), runs each
// command with `runc exec`, streams its output with the heartbeats, and
// reports the exit.
//
// One concern per package:
//
//   - agent/app         wires the pieces from a Config (in-process entry point)
//   - agent/cmd/...     the thin main: flags, logger, signals
//   - agent/client      the agent protocol over go-retryablehttp
//   - agent/runc        the runc runner: list, state, exec, signal via pid file
//   - agent/inventory   reports the containers under the runc root
//   - agent/worker      lease loop, per-command execution, output streaming
//   - agent/metrics     Prometheus collectors on an injected registry
//   - agent/runc/runctest  real busybox runc containers for tests
//   - agent/e2e         whole-stack tests (coordinator, PostgreSQL, runc)
//
// # Containers
//
// The agent reports only runc containers whose ID is a UUID in canonical form
// (lowercase, hyphenated, 36 characters, as uuid.UUID.String prints it): the
// coordinator addresses containers by UUID, and a lease names the container by
// the exact ID the agent reported, which is then handed to `runc exec`
// verbatim. Containers with any other ID are skipped and logged once at Info.
//
// # Output
//
// Output is buffered per command until the coordinator acknowledges it (the
// offsets in each heartbeat answer), so a coordinator outage shorter than the
// lease TTL loses nothing. The buffer is bounded (MaxBufferBytes per command,
// both streams together); when it is full the agent stops reading the
// command's pipes, which blocks the program in write(2) until the coordinator
// is back — back-pressure, never dropped bytes.
//
// # Shutdown
//
// The first SIGTERM (or SIGINT) stops leasing; running commands keep running
// and heartbeating for the drain grace period and are reported normally. When
// the grace period ends, or on a second signal, the agent sends SIGTERM to
// each command's process group (pid from runc's --pid-file), SIGKILL after
// KillAfter, and reports the command failed with a reason. It never SIGKILLs
// `runc exec` while the program is alive: that would orphan the program inside
// the container.
//
// # After a crash
//
// An agent that dies (SIGKILL, OOM) leaves its programs running; the
// coordinator fails their commands as "agent lost". The next agent on the
// host kills those programs at start (runc.Runner.ReapOrphans): each exec's
// scratch directory records the agent's pid, so a dead agent's leftovers
// are told from a live one's.
package agent
