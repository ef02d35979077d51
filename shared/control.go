package shared

import (
	"encoding/json"
	"time"
)

// Seconds is an optional whole number of seconds in a request body. Absent
// leaves Set false. It is a struct, not a pointer, so the coordinator's
// decoder refuses an explicit null instead of reading it as absent.
type Seconds struct {
	Value int
	Set   bool
}

// Secs returns n seconds, set.
func Secs(n int) Seconds { return Seconds{Value: n, Set: true} }

// MarshalJSON writes the number; use omitzero to leave an unset one out.
func (s Seconds) MarshalJSON() ([]byte, error) { return json.Marshal(s.Value) }

// UnmarshalJSON reads a JSON number.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // refused by the coordinator's null check
	}
	if err := json.Unmarshal(b, &s.Value); err != nil {
		return err
	}
	s.Set = true
	return nil
}

// EndReason says, for machines, why a command ended. It is null in the
// record while the command is queued or running.
type EndReason string

const (
	// EndExited: the program ran and exited; exit_code is set.
	EndExited EndReason = "exited"
	// EndExecError: the program could not be started (not found, not
	// executable, container gone), or the agent lost track of its outcome.
	EndExecError EndReason = "exec_error"
	// EndCancelled: an operator cancelled it. Status "cancelled" if it had
	// not started, else "failed" with the signal that ended it.
	EndCancelled EndReason = "cancelled"
	// EndTimedOut: it ran past timeout_seconds and was stopped.
	EndTimedOut EndReason = "timed_out"
	// EndNotPickedUp: no agent started it within queue_timeout_seconds.
	EndNotPickedUp EndReason = "not_picked_up"
	// EndAgentLost: its agent went away while it ran (stopped heartbeating,
	// or shut down and stopped it past its drain grace).
	EndAgentLost EndReason = "agent_lost"
	// EndKilled: the program was ended by a signal execq did not send;
	// signal names it.
	EndKilled EndReason = "killed"
)

// ControlFields are the record's operator-control fields.
type ControlFields struct {
	// TimeoutSeconds and QueueTimeoutSeconds are the limits in force
	// (null: none).
	TimeoutSeconds      *int `json:"timeout_seconds"`
	QueueTimeoutSeconds *int `json:"queue_timeout_seconds"`
	// EndReason is null while live, then one of the End* values.
	EndReason *EndReason `json:"end_reason"`
	// Signal names the signal that ended the program ("SIGKILL"), if one did.
	Signal *string `json:"signal"`
	// CancelRequestedAt/By record a cancel request, also when the command
	// ended some other way first.
	CancelRequestedAt *time.Time `json:"cancel_requested_at"`
	CancelRequestedBy *string    `json:"cancel_requested_by"`
}

// CancelRequest is the optional body of POST /api/v1/commands/{id}/cancel.
type CancelRequest struct {
	// GraceSeconds is the time between SIGTERM and SIGKILL for a running
	// command; absent: the coordinator's default.
	GraceSeconds Seconds `json:"grace_seconds,omitzero"`
}

// AgentPathControl is the agent's control long-poll: POST a ControlRequest,
// get the cancel orders for the node's running commands it does not already
// know of. It parks (holding no database connection) until there is one.
const AgentPathControl = "/agent/v1/control"

// ControlRequest is the body of POST /agent/v1/control.
type ControlRequest struct {
	// WaitMillis is how long to park when there is nothing new; capped by
	// the coordinator.
	WaitMillis int `json:"wait_ms"`
	// Known lists the command IDs whose cancel the agent already acts on,
	// so they are not answered again (at most MaxControlKnown).
	Known []string `json:"known"`
}

// MaxControlKnown bounds ControlRequest.Known.
const MaxControlKnown = 1000

// ControlResponse carries cancel orders. An empty list is normal.
type ControlResponse struct {
	Cancels []CancelOrder `json:"cancels"`
}

// CancelOrder tells an agent to stop a running command: SIGTERM, then
// SIGKILL after GraceSeconds.
type CancelOrder struct {
	CommandID    string `json:"command_id"`
	Attempt      int    `json:"attempt"`
	GraceSeconds int    `json:"grace_seconds"`
}
