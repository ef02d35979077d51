// Package runc drives the runc binary for the agent: it lists the containers
// under a runc root, reads a container's state and process spec, and runs a
// program inside a container with `runc exec`.
//
// # How a program is run
//
// Exec writes an OCI process spec (specs.Process) and runs
//
//	runc --root R --log L --log-format json exec --process spec.json --pid-file P <container>
//
// The spec is the container's own process from its bundle's config.json
// (user, env, cwd, capabilities, rlimits, no_new_privileges, AppArmor and
// SELinux labels), with Args replaced by [program, args...] and Terminal off.
// Passing argv in a file means a program or argument beginning with "-" is
// never parsed as a runc flag. Prepare does everything up to starting runc
// (the spec and the exec's scratch directory), for a caller that has
// something else to wait for first; Exec is Prepare and Start in one.
//
// # Telling "runc could not start it" from "it ran and failed"
//
// runc exec exits with the program's status, so a program that exits 255
// looks like runc's own failure exit (255) by the status alone. What runc
// 1.1 does, observed on 1.1.5:
//
//   - program not found, not executable (no x bit, a directory), empty
//     program, container missing or stopped: runc fails before the program is
//     started. It exits 255, never writes the pid file, prints "exec failed:
//     …" on its own stderr (which is also the program's stderr) and logs the
//     same message at level "error" in the --log file.
//   - the execve itself fails after runc handed over (exec format error,
//     a "#!" interpreter that does not exist): the pid file IS written, runc
//     init prints "exec /path: <errno text>" on the program's stderr and runc
//     exits 1.
//   - the program ran: the pid file is written and runc exits with the
//     program's status (128+n when it was killed by signal n).
//
// So the pid file is the proof that the program started. Exec does not pass
// any output on until the pid file exists; if runc exits without writing it,
// Wait returns an *ExecError carrying runc's own message from the log file and
// the captured output is dropped (it is only runc's message). The execve
// failure case is recognised by its exact shape (status 1, no stdout, stderr
// exactly "exec <path>: <errno text>\n" with <path> naming the program) and
// is also an *ExecError; that stderr line has already been passed on.
//
// # Stopping a program
//
// The pid in the pid file is the program itself, in the host's pid
// namespace, and runc makes it a session and process-group leader. Signal
// sends to that process group, so a shell's children go too. SIGKILL to
// `runc exec` itself would orphan the program inside the container; Stop does
// it only as a last resort, after the program's process group was already
// SIGKILLed and runc still has not exited (a descendant that left the group
// holds the output pipe open).
//
// # Output pipes
//
// runc exec copies the program's output through pipes of its own and exits
// only when every writer has closed them, so a background child that keeps
// stdout open keeps the command "running" until it exits. That is the same
// rule as a shell pipeline and is deliberate: output is not cut short.
package runc
