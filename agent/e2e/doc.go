// Package e2e holds the whole-stack tests: the real execq-coordinator and
// execq-agent binaries, built once per run, against a private PostgreSQL
// database (coordinator/testpg) and real runc busybox containers
// (agent/runc/runctest). Processes are killed, restarted and signalled the
// way an operator's hosts would see it.
package e2e
