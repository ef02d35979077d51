// Package worker is the agent's execution engine: a lease loop that
// long-polls the coordinator for as many commands as it has free slots, and
// one session per leased command that starts, runs, streams and reports it.
//
// # At most once
//
// A leased command is executed only after its start was answered yes (200
// from POST …/start, or "running" for its item of POST /agent/v1/reports:
// the agent's client sends the starts and finishes of its commands
// together, see client.Batching). Any other answer — 409 lease_lost or
// cancelled, 403, or a network failure that outlasted the client's
// retries — drops the command unexecuted.
// (If the start did commit but its answer was lost, the coordinator later
// marks the command lost; it is never run twice.) The exec is prepared —
// its spec written, nothing run — while the start is on its way
// (runc.Runner.Prepare), and discarded when the answer is not yes.
//
// # Leasing
//
// The lease loop keeps one long-poll parked asking for every free slot.
// When a command finishes while that poll is parked, a second poll asks for
// the freed slots at once, so a free slot never waits out a parked poll; it
// is not cancelled-and-restarted because a cancelled poll can lose commands
// the coordinator leased at that instant. An empty answer is normal; errors
// back off exponentially with jitter (1s … 30s).
//
// # Output
//
// Each session captures stdout and stderr into a bounded buffer (see
// output), sends whatever is buffered at least every FlushInterval (250ms,
// so a follower of the output sees it live; or the heartbeat interval if
// shorter) in chunks of at most ChunkBytes at
// byte offsets, back to back while there is a backlog. A separate keeper
// sends an empty heartbeat whenever none was accepted for a heartbeat
// interval, so the lease is renewed on schedule while the command is silent
// or a large chunk is uploading. The start and the keeper's heartbeats are
// bounded by a third of the lease TTL the coordinator announced in the lease
// answer (and never outlive the lease itself), so a call the network
// swallowed is abandoned and repeated while the lease still holds. Output
// heartbeats and the finish get longer (their work grows with the output);
// the keeper renews the lease meanwhile. Every answer carries the
// coordinator's
// stored offsets; bytes are dropped only when acknowledged, and a 409
// output_gap rewinds to the offsets given. When the program ends, the rest
// goes out (in heartbeats if it is more than one chunk) and then finish,
// with the total lengths and the exit code or error; finish is repeated
// until the coordinator takes it.
//
// # Losing the lease
//
// A 4xx on heartbeat or finish other than output_gap (lease_lost: the
// command was reaped or re-leased; forbidden) means the command is no longer
// ours: the program is stopped (SIGTERM, then SIGKILL after KillAfter), its
// output is dropped and nothing more is reported.
//
// # Coordinator outages
//
// Running commands go on; their output is buffered up to MaxBufferBytes per
// command and then the program is blocked on its pipe (back-pressure; no
// byte is dropped). If the outage outlasts the lease TTL the coordinator
// reaps the command as lost, so the agent fences itself: a running command
// whose lease it has not renewed for the TTL is stopped (SIGTERM, then
// SIGKILL after KillAfter, as at shutdown) and not reported, without
// waiting for the coordinator to say lease_lost.
//
// # Memory
//
// Output is held in 64 KiB blocks that are reused once acknowledged, plus
// one chunk of scratch to build a request in: per running command at most
// MaxBufferBytes + 4 blocks + ChunkBytes, however much the program writes.
// Bytes past the coordinator's output cap (told in the lease answer) are
// counted and dropped, never buffered or sent: only a stream's first cap+1
// bytes go out (the extra byte marks it truncated), and finish reports the
// lengths sent.
//
// # Shutdown
//
// When Run's context is done the worker stops leasing (commands leased at
// that instant are released unstarted back to the queue; if that fails,
// they return when their lease expires) and lets running commands finish,
// heartbeating, for Grace. Then,
// or on Abort, it stops them and reports them failed with an Error such as
// "the agent stopped the command during shutdown after the grace period of
// 30s" (the coordinator writes it to stderr as an "execq: …" line). Reports
// still pending 2*KillAfter+ReportTimeout later are given up.
package worker
