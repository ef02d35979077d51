// Package runtest proves `make run`, the README's first command, end to end:
// the whole dev stack (scripts/run.sh) is brought up the way a person or CI
// brings it up, a demo command goes through it, and the stack is stopped the
// way a terminal, a supervisor or the script itself stops it. After each run
// nothing may be left: no listener on the coordinator's port, no coordinator
// or agent process, no container.
//
// Each run gets its own state directory (EXECQ_RUN_DIR: logs, pid files,
// runc root), its own listen port and its own database on the dev PostgreSQL
// cluster that `make test` started, so it neither sees nor stops a
// developer's own `make run` in the same checkout. `make db-psql`
// (scripts/devdb.sh psql), the way into that database, is tested here too.
// The package holds tests only.
package runtest
