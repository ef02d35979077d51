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
func (s *Server) submitBatch(w http.ResponseWriter, r *http.Request) error {
	// A client that sends a key expects a retry to be safe; the batch
	// would queue everything again, so it says so instead of ignoring it.
	if len(r.Header.Values(IdempotencyKeyHeader)) > 0 {
		return badRequest("invalid_header", IdempotencyKeyHeader+" is not supported by the batch submit; submit one command at a time to use it")
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
		items[i] = store.BatchItem{ContainerID: id.String(), Req: req}
	}
	cs, err := s.store.EnqueueMany(r.Context(), userFrom(r).ID, items)
	var missing *store.ContainerNotFoundError
	if errors.As(err, &missing) {
		return errUnknownContainer(missing.ContainerID)
	}
	if err != nil {
		return err
	}
	s.reqLog(r).Info("commands queued", "commands", len(cs))
	res := shared.SubmitBatchResult{Commands: make([]shared.CommandExecutionRecord, len(cs))}
	for i, c := range cs {
		res.Commands[i] = record(c)
	}
	return writeJSON(w, http.StatusAccepted, res)
}
