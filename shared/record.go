package shared

import (
	"fmt"
	"time"
)

// Status is the public state of a command. The five values and their meaning
// are fixed by the CommandExecutionRecord contract.
type Status string

const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
)

// Terminal reports whether no further transition can happen.
func (s Status) Terminal() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCancelled
}

// CommandExecutionRecord is the public record returned by the submit and poll
// endpoints. The first nine fields are the contract and never change meaning;
// the rest are additions an operator can rely on but older clients may ignore.
type CommandExecutionRecord struct {
	ID          string    `json:"id"`
	ContainerID string    `json:"container_id"`
	RequestedBy string    `json:"requested_by"`
	Program     string    `json:"program"`
	Args        []string  `json:"args"`
	Status      Status    `json:"status"`
	Stdout      string    `json:"stdout"`
	Stderr      string    `json:"stderr"`
	CreatedAt   time.Time `json:"created_at"`

	// ExitCode is the program's exit status; null until it finished, and null
	// when it never ran (execution error, agent lost, cancelled).
	ExitCode   *int       `json:"exit_code"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	// StdoutTruncated / StderrTruncated say the stream passed the output cap:
	// its head and tail were kept and the middle dropped, with one line
	// "[execq: N bytes omitted]" where it was (the raw output endpoint has
	// the bytes on either side exactly, without the line).
	StdoutTruncated bool `json:"stdout_truncated"`
	StderrTruncated bool `json:"stderr_truncated"`
	// StdoutBytes / StderrBytes count every byte the command wrote to the
	// stream (so far, while it runs), including any dropped past the cap.
	StdoutBytes int64 `json:"stdout_bytes"`
	StderrBytes int64 `json:"stderr_bytes"`

	// Control fields (see control.go): the limits the command runs under,
	// why it ended, and a cancel request if one was made.
	ControlFields
}

// OmittedMarker is the line the record shows where n bytes were dropped
// from the middle of a stream past the output cap.
func OmittedMarker(n int64) string { return fmt.Sprintf("\n[execq: %d bytes omitted]\n", n) }

// SubmitRequest is the body of POST /api/v1/containers/{id}/commands.
type SubmitRequest struct {
	Program string   `json:"program"`
	Args    []string `json:"args"`
	// TimeoutSeconds bounds the run from its start; QueueTimeoutSeconds
	// bounds the wait for an agent to start it. Absent: the coordinator's
	// defaults.
	TimeoutSeconds      Seconds `json:"timeout_seconds,omitzero"`
	QueueTimeoutSeconds Seconds `json:"queue_timeout_seconds,omitzero"`
}

// ContainerInfo is one container as reported by an agent and listed by
// GET /api/v1/containers.
type ContainerInfo struct {
	ID       string    `json:"id"`
	NodeID   string    `json:"node_id"`
	Name     string    `json:"name"`
	State    string    `json:"state"`
	LastSeen time.Time `json:"last_seen"`
	// Labels are what grants select on: the reported annotations plus
	// "node" and "container" (labels.go). Always an object.
	Labels map[string]string `json:"labels"`
}

// ContainerList is the body of GET /api/v1/containers.
type ContainerList struct {
	Containers []ContainerInfo `json:"containers"`
}

// ErrorBody is the JSON envelope of every error response:
// {"error":{"code":"…","message":"…"}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail carries a stable machine code and a sentence for a person.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
