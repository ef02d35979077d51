package shared

import (
	"errors"
	"fmt"
)

// Bounds on POST /api/v1/commands (a batch submit).
const (
	// MaxBatchCommands caps the commands of one batch submit.
	MaxBatchCommands = 1000
	// MaxSubmitBatchBodyBytes caps its body; larger bodies get 413.
	MaxSubmitBatchBodyBytes = 8 << 20
)

// SubmitBatch is the body of POST /api/v1/commands: several commands, each
// in its own container, queued together — all or none.
type SubmitBatch struct {
	Commands []SubmitBatchItem `json:"commands"`
}

// SubmitBatchItem is one command of a batch: its container and what a
// single submit's body says.
type SubmitBatchItem struct {
	ContainerID         string   `json:"container_id"`
	Program             string   `json:"program"`
	Args                []string `json:"args"`
	TimeoutSeconds      Seconds  `json:"timeout_seconds,omitzero"`
	QueueTimeoutSeconds Seconds  `json:"queue_timeout_seconds,omitzero"`
}

// Submit is the item as a single submit's body.
func (it SubmitBatchItem) Submit() SubmitRequest {
	return SubmitRequest{Program: it.Program, Args: it.Args, TimeoutSeconds: it.TimeoutSeconds, QueueTimeoutSeconds: it.QueueTimeoutSeconds}
}

// SubmitBatchResult answers a batch submit: the queued records, in the
// request's order.
type SubmitBatchResult struct {
	Commands []CommandExecutionRecord `json:"commands"`
}

// Validate checks every item as a single submit is checked (the error
// names the item: "commands[3].program") and the batch's size. Each
// item's missing args list becomes an empty one.
func (b *SubmitBatch) Validate() error {
	if len(b.Commands) == 0 || len(b.Commands) > MaxBatchCommands {
		return &ValidationError{"commands", fmt.Sprintf("must hold 1 to %d commands, got %d", MaxBatchCommands, len(b.Commands))}
	}
	for i := range b.Commands {
		it := &b.Commands[i]
		req := it.Submit()
		if err := req.Validate(); err != nil {
			var verr *ValidationError
			if errors.As(err, &verr) {
				return &ValidationError{fmt.Sprintf("commands[%d].%s", i, verr.Field), verr.Message}
			}
			return err
		}
		it.Args = req.Args
	}
	return nil
}
