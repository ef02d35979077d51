package shared

import "time"

// Agent protocol. Every route is under /agent/v1 and authenticated with the
// node's token (Authorization: Bearer …); the node is taken from the token,
// never from the body. docs/protocol.md describes the exchange.
const (
	AgentPathContainers = "/agent/v1/containers"
	AgentPathLease      = "/agent/v1/lease"
	// The per-command routes are AgentPathCommands + "{id}/start" and so on.
	AgentPathCommands = "/agent/v1/commands/"
)

// Stream names used in chunks and in the raw output endpoint.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// Error codes an agent acts on. They appear in ErrorDetail.Code.
const (
	CodeLeaseLost = "lease_lost" // the lease expired, was taken over, or the command was reaped
	CodeCancelled = "cancelled"  // the command was cancelled before it started
	CodeOutputGap = "output_gap" // a chunk starts past the stored end: resend from the offsets given
	CodeForbidden = "forbidden"  // another node's command or lease
)

// ContainerReport is one runc container in an inventory report.
type ContainerReport struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	State string `json:"state"`
	// Labels are the bundle's OCI annotations that are valid labels
	// (labels.go), at most MaxReportedLabels, never a reserved key.
	Labels map[string]string `json:"labels,omitempty"`
}

// InventoryRequest is the body of PUT /agent/v1/containers: the node's full
// set of containers. Containers of this node that are missing are removed.
type InventoryRequest struct {
	Containers []ContainerReport `json:"containers"`
}

// InventoryResponse acknowledges an inventory report. Rejected lists the
// container IDs another node already reported: they are not recorded for
// this node (commands for them keep going to the first node), while the
// rest of the report is.
type InventoryResponse struct {
	Accepted int      `json:"accepted"`
	Rejected []string `json:"rejected,omitempty"`
}

// LeaseRequest is the body of POST /agent/v1/lease.
type LeaseRequest struct {
	// Max is how many commands the agent can take now (1..100).
	Max int `json:"max"`
	// WaitMillis is how long to park when nothing is queued; the coordinator
	// caps it. 0 answers at once.
	WaitMillis int `json:"wait_ms"`
}

// LeaseResponse hands commands to the agent. An empty list is normal.
type LeaseResponse struct {
	Commands []LeasedCommand `json:"commands"`
	// LeaseTTLMillis and HeartbeatMillis tell the agent the coordinator's
	// timing so operators configure it in one place.
	LeaseTTLMillis  int `json:"lease_ttl_ms"`
	HeartbeatMillis int `json:"heartbeat_interval_ms"`
	// OutputCapBytes is how many bytes per stream the coordinator keeps; 0
	// means it did not say. OutputTailBytes of them are the stream's end,
	// the rest its head: the agent sends the head as it comes, counts what
	// follows while keeping its last OutputTailBytes, and sends that tail
	// when the program has ended, the first chunk of it marked Skip at its
	// true offset; finish reports the true lengths. (A coordinator that
	// gives no tail keeps the first cap bytes: the agent then sends cap+1,
	// the extra byte marking the stream truncated, and reports those.)
	OutputCapBytes  int64 `json:"output_cap_bytes,omitempty"`
	OutputTailBytes int64 `json:"output_tail_bytes,omitempty"`
}

// LeasedCommand is a command leased to the calling node. Attempt identifies
// this lease: start, heartbeat and finish must quote it, so a stale agent
// holding an older lease of the same command is refused.
type LeasedCommand struct {
	ID             string    `json:"id"`
	ContainerID    string    `json:"container_id"`
	Program        string    `json:"program"`
	Args           []string  `json:"args"`
	Attempt        int       `json:"attempt"`
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
	// TimeoutSeconds (0: none) is how long the program may run from its
	// start; past it the agent stops it, SIGTERM then SIGKILL after
	// GraceSeconds, and finishes with EndReason "timed_out".
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
	GraceSeconds   int `json:"grace_seconds,omitempty"`
}

// StartRequest is the body of POST /agent/v1/commands/{id}/start. A 200
// answer is the coordinator's yes: only then may the agent execute.
type StartRequest struct {
	Attempt int `json:"attempt"`
}

// StartResponse confirms the command is now running.
type StartResponse struct {
	Status         Status    `json:"status"`
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
}

// ReleaseRequest is the body of POST /agent/v1/commands/{id}/release: the
// agent gives back a lease it will not start (it is shutting down), so the
// command is queued again at once instead of after the lease TTL.
type ReleaseRequest struct {
	Attempt int `json:"attempt"`
}

// ReleaseResponse confirms the command is queued again.
type ReleaseResponse struct {
	Status Status `json:"status"`
}

// MaxRequestOutputBytes bounds the output bytes (both streams together) one
// heartbeat or finish may carry. The coordinator's body limit leaves room
// for them in base64 plus the envelope.
const MaxRequestOutputBytes = 8 << 20

// Bounds on the numbers an agent sends. The coordinator refuses a request
// outside them (400 invalid_field) before it touches the database; the
// agent checks its own requests against them before sending.
const (
	// MaxRequestChunks bounds the chunks of one heartbeat or finish. The
	// agent sends at most one per stream; the bound keeps what one request
	// costs the coordinator (one INSERT of its chunks, under the command's
	// row lock) small, however the bytes are cut up.
	MaxRequestChunks = 1024
	// MaxStreamBytes bounds a stream's offsets and lengths. 2^53 is exact
	// in every JSON parser and far past any output cap (bytes past the cap
	// are counted, so offsets may pass it), and offset plus length cannot
	// overflow.
	MaxStreamBytes int64 = 1 << 53
	// MaxExitCode is the largest exit status: runc exec reports the
	// program's status, 0..255 (128+n when signal n killed it).
	MaxExitCode = 255
	// MaxAttempt is the largest lease attempt: the coordinator stores it as
	// a PostgreSQL integer.
	MaxAttempt = 1<<31 - 1
	// MaxWaitMillis bounds wait_ms of the lease and control long-polls
	// (about 24.8 days, the largest 32-bit number). The coordinator shortens
	// any wait to its own maximum, so asking for a day is fine; the bound
	// only keeps the number meaningful (a larger one overflowed the wait
	// into a negative duration).
	MaxWaitMillis = 1<<31 - 1
)

// Chunk is a run of output bytes at a byte offset of one stream. Data is
// base64 in JSON. A chunk wholly below the stored end is acknowledged and
// ignored; one that overlaps it is trimmed; one past it is a gap.
type Chunk struct {
	Stream string `json:"stream"`
	Offset int64  `json:"offset"`
	Data   []byte `json:"data"`
	// Skip says the bytes between the stored end and Offset were left out
	// on purpose: the middle of a stream past the output cap, whose tail
	// this chunk starts. It is accepted once per stream; a chunk past the
	// stored end without it is a gap.
	Skip bool `json:"skip,omitempty"`
}

// HeartbeatRequest is the body of POST /agent/v1/commands/{id}/heartbeat. It
// renews the lease and appends output.
type HeartbeatRequest struct {
	Attempt int     `json:"attempt"`
	Chunks  []Chunk `json:"chunks"`
}

// Offsets are the stored end of each stream: the next byte the coordinator
// expects. They come back with every heartbeat and with an output_gap error.
type Offsets struct {
	Stdout int64 `json:"stdout_offset"`
	Stderr int64 `json:"stderr_offset"`
}

// HeartbeatResponse acknowledges a heartbeat.
type HeartbeatResponse struct {
	Offsets
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
	// Cancel asks the agent to stop the command: an operator cancelled it.
	// SIGTERM, then SIGKILL after CancelGraceSeconds. The control long-poll
	// (AgentPathControl) usually tells the agent first; this is the backstop.
	Cancel             bool `json:"cancel"`
	CancelGraceSeconds int  `json:"cancel_grace_seconds,omitempty"`
}

// FinishRequest is the body of POST /agent/v1/commands/{id}/finish. It may
// carry the last chunks. StdoutLength/StderrLength are the totals the agent
// captured; the coordinator refuses to finish (output_gap) until it holds
// them all, so nothing is lost to a dropped heartbeat.
type FinishRequest struct {
	Attempt      int     `json:"attempt"`
	Chunks       []Chunk `json:"chunks"`
	StdoutLength int64   `json:"stdout_length"`
	StderrLength int64   `json:"stderr_length"`
	// ExitCode is set when the program ran and exited.
	ExitCode *int `json:"exit_code,omitempty"`
	// Error is set instead when the program could not be run or was ended
	// by the agent; it is appended to stderr as an execq line.
	Error string `json:"error,omitempty"`
	// EndReason is set when the agent ended the program on the
	// coordinator's behalf: EndCancelled or EndTimedOut. The coordinator
	// then writes the execq line itself. Signal names the signal execq sent
	// that ended the program ("SIGTERM", "SIGKILL"; empty when it never
	// ran or exited on its own first).
	EndReason EndReason `json:"end_reason,omitempty"`
	Signal    string    `json:"signal,omitempty"`
}

// MaxFinishErrorBytes bounds FinishRequest.Error; the coordinator refuses
// longer ones, so the agent shortens its messages to fit (a program name
// alone may be 4 KiB).
const MaxFinishErrorBytes = 4096

// FinishResponse reports the terminal status stored.
type FinishResponse struct {
	Status Status `json:"status"`
}

// GapBody is the 409 body for CodeOutputGap: the envelope plus the offsets
// to resend from.
type GapBody struct {
	Error ErrorDetail `json:"error"`
	Offsets
}
