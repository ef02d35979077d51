package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// submitBatch queues several commands, each in its own container, in one
// statement and one commit (POST /api/v1/commands): "run this on every
// host" as one request instead of one per host. All or nothing: the body
// is checked whole first (any item a single submit would refuse with 400
// refuses the batch), and an item naming a container the caller may not
// use (or that no agent reported) is the single submit's 404
// unknown_container for the whole batch — nothing is queued. An error
// answer means nothing was queued. Each node is notified once.
//
// An item may carry an idempotency_key, with the single submit's
// Idempotency-Key semantics: an item whose key already names the same
// request answers with that command, marked replayed, and queues nothing;
// a key naming a different request is the single submit's 422
// idempotency_key_reused for the whole batch. 202 if anything was
// queued, 200 if every item was a replay (as the single submit's replay).
func (s *Server) submitBatch(w http.ResponseWriter, r *http.Request) error {
	// A key names one command; a batch's keys go in its items.
	if len(r.Header.Values(IdempotencyKeyHeader)) > 0 {
		return badRequest("invalid_header", IdempotencyKeyHeader+" is not supported by the batch submit: a key names one command; give each item its own idempotency_key")
	}
	var b shared.SubmitBatch
	if err := decodeJSON(w, r, shared.MaxSubmitBatchBodyBytes, &b); err != nil {
		return err
	}
	if err := b.Validate(); err != nil {
		return err
	}
	items := make([]store.BatchItem, len(b.Commands))
	for i, it := range b.Commands {
		id, err := uuid.Parse(it.ContainerID)
		if err != nil || len(it.ContainerID) != 36 {
			return badRequest("invalid_field", fmt.Sprintf("commands[%d].container_id %q is not a UUID", i, it.ContainerID))
		}
		req := it.Submit()
		if err := s.applyLimits(&req); err != nil {
			var e *Error
			if errors.As(err, &e) {
				return badRequest(e.Code, fmt.Sprintf("commands[%d].%s", i, e.Message))
			}
			return err
		}
		items[i] = store.BatchItem{ContainerID: id.String(), Req: req, IdempotencyKey: it.IdempotencyKey.Value}
	}
	cs, err := s.store.EnqueueMany(r.Context(), userFrom(r).ID, items)
	var missing *store.ContainerNotFoundError
	if errors.As(err, &missing) {
		return errUnknownContainer(missing.ContainerID)
	}
	var reused *store.IdempotencyKeyReusedError
	if errors.As(err, &reused) {
		return &Error{http.StatusUnprocessableEntity, "idempotency_key_reused",
			fmt.Sprintf("commands[%d].idempotency_key was already used, within 24 hours, for a different container or body", reused.Index)}
	}
	if err != nil {
		return err
	}
	res := shared.SubmitBatchResult{Commands: make([]shared.SubmitBatchRecord, len(cs))}
	queued := 0
	for i, c := range cs {
		rec := record(c.CommandWithOutput)
		if c.Replay {
			// The output of a replayed command is not read: a batch of
			// finished commands would answer up to 2 × the output cap
			// per item. GET /api/v1/commands/{id} has it.
			rec.Stdout, rec.Stderr = "", ""
		} else {
			queued++
		}
		res.Commands[i] = shared.SubmitBatchRecord{CommandExecutionRecord: rec, Replayed: c.Replay}
	}
	s.reqLog(r).Info("commands queued", "commands", queued, "replayed", len(cs)-queued)
	status := http.StatusAccepted
	if queued == 0 {
		status = http.StatusOK
	}
	return writeJSON(w, status, res)
}
