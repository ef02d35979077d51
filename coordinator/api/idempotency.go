package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// IdempotencyKeyHeader names the submit header that makes a retry safe.
const IdempotencyKeyHeader = "Idempotency-Key"

// MaxIdempotencyKeyBytes bounds a key.
const MaxIdempotencyKeyBytes = shared.MaxIdempotencyKeyBytes

// idempotencyKey reads the submit's Idempotency-Key: "" when absent. A key
// is 1 to 255 bytes of printable ASCII (space to tilde) and given once
// (shared.CheckIdempotencyKey, as a batch item's idempotency_key); anything
// else is a 400 invalid_header, before anything is written.
func idempotencyKey(r *http.Request) (string, error) {
	vs := r.Header.Values(IdempotencyKeyHeader)
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1:
		return "", badRequest("invalid_header", IdempotencyKeyHeader+" must be given at most once")
	}
	if msg := shared.CheckIdempotencyKey(vs[0]); msg != "" {
		return "", badRequest("invalid_header", IdempotencyKeyHeader+" "+msg)
	}
	return vs[0], nil
}

// enqueue submits req, once per idempotency key when key is set. replay says
// the key already named a command of this user (within its 24 hours) and c
// is that command, nothing new was queued. unflushed (a plain submit that
// waits) commits without waiting for the disk: see submit.
func (s *Server) enqueue(ctx context.Context, containerID, userID string, req shared.SubmitRequest, key string, unflushed bool) (c store.CommandWithOutput, replay bool, err error) {
	if key == "" && unflushed {
		c, err = s.store.EnqueueUnflushed(ctx, containerID, userID, req)
		return c, false, err
	}
	if key == "" {
		c, err = s.store.Enqueue(ctx, containerID, userID, req)
		return c, false, err
	}
	c, created, err := s.store.EnqueueOnce(ctx, containerID, userID, req, key)
	if errors.Is(err, store.ErrIdempotencyKeyReused) {
		return c, false, &Error{http.StatusUnprocessableEntity, "idempotency_key_reused",
			"this " + IdempotencyKeyHeader + " was already used, within 24 hours, for a different container or body"}
	}
	return c, !created, err
}
