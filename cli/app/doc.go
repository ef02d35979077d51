// Package app is the execq command line: the cobra commands (exec, attach, logs,
// get, wait, cancel, ls, containers, version), their configuration from
// flags and EXECQ_* variables, and how API errors and command outcomes
// become one-line messages and exit statuses. It talks to the coordinator
// only through package client, the typed client of the public API.
//
// Exit statuses of exec, attach and wait (the table is also in the README and in
// `execq exec --help`), in the manner of timeout(1), ssh and docker:
//
//	0-255  the program exited with this status
//	122    the program's agent was lost while it ran (end_reason agent_lost)
//	123    no agent started it within its queue timeout (not_picked_up)
//	124    it ran past its timeout and was stopped (timed_out)
//	125    execq itself failed: bad usage, an API error, no coordinator
//	126    the program could not be started (exec_error)
//	128+n  the program was killed by signal n that execq did not send
//	130    it was cancelled (Ctrl-C, execq cancel), or execq stopped waiting
//
// Other commands exit 0 on success and 1 on any error; any command
// interrupted while it waits (Ctrl-C) exits 130.
package app
