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
	// IdempotencyKey makes the item safe to send again, as the single
	// submit's Idempotency-Key header does: the same key, container and
	// body by the same user within 24 hours answer with the first command
	// (Replayed) instead of queuing another.
	IdempotencyKey IdempotencyKey `json:"idempotency_key,omitzero"`
}

// Submit is the item as a single submit's body.
func (it SubmitBatchItem) Submit() SubmitRequest {
	return SubmitRequest{Program: it.Program, Args: it.Args, TimeoutSeconds: it.TimeoutSeconds, QueueTimeoutSeconds: it.QueueTimeoutSeconds}
}

// SubmitBatchResult answers a batch submit: one record per item, in the
// request's order.
type SubmitBatchResult struct {
	Commands []SubmitBatchRecord `json:"commands"`
}

// SubmitBatchRecord is an item's command in a batch's answer.
type SubmitBatchRecord struct {
	CommandExecutionRecord
	// Replayed says the item's idempotency_key already named this command
	// (the single submit answers 200 instead of 202 for the same): nothing
	// was queued for the item. A replayed record's stdout and stderr are
	// "", as in history, so the answer stays small however much output
	// the commands wrote; stdout_bytes and stderr_bytes say how much there
	// is to read with GET /api/v1/commands/{id}.
	Replayed bool `json:"replayed"`
}

// Validate checks every item as a single submit is checked (the error
// names the item: "commands[3].program"), the batch's size, and the
// items' idempotency keys: each well formed and no two the same, since a
// key names one command. Each item's missing args list becomes an empty
// one.
func (b *SubmitBatch) Validate() error {
	if len(b.Commands) == 0 || len(b.Commands) > MaxBatchCommands {
		return &ValidationError{"commands", fmt.Sprintf("must hold 1 to %d commands, got %d", MaxBatchCommands, len(b.Commands))}
	}
	var keys map[string]int // key → first item with it; nil while no item has one
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
		if !it.IdempotencyKey.Set {
			continue
		}
		if msg := CheckIdempotencyKey(it.IdempotencyKey.Value); msg != "" {
			return &ValidationError{fmt.Sprintf("commands[%d].idempotency_key", i), msg}
		}
		if first, ok := keys[it.IdempotencyKey.Value]; ok {
			return &ValidationError{fmt.Sprintf("commands[%d].idempotency_key", i),
				fmt.Sprintf("is also commands[%d].idempotency_key: a key names one command", first)}
		}
		if keys == nil {
			keys = make(map[string]int)
		}
		keys[it.IdempotencyKey.Value] = i
	}
	return nil
}
