package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// IdempotencyKeyHeader names the submit header that makes a retry safe.
const IdempotencyKeyHeader = "Idempotency-Key"

// MaxIdempotencyKeyBytes bounds a key.
const MaxIdempotencyKeyBytes = 255

// idempotencyKey reads the submit's Idempotency-Key: "" when absent. A key
// is 1 to 255 bytes of printable ASCII (space to tilde) and given once;
// anything else is a 400 invalid_header, before anything is written.
func idempotencyKey(r *http.Request) (string, error) {
	vs := r.Header.Values(IdempotencyKeyHeader)
	switch {
	case len(vs) == 0:
		return "", nil
	case len(vs) > 1:
		return "", badRequest("invalid_header", IdempotencyKeyHeader+" must be given at most once")
	}
	key := vs[0]
	if key == "" || len(key) > MaxIdempotencyKeyBytes {
		return "", badRequest("invalid_header", fmt.Sprintf("%s must be 1 to %d bytes, got %d", IdempotencyKeyHeader, MaxIdempotencyKeyBytes, len(key)))
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return "", badRequest("invalid_header", fmt.Sprintf("%s must be printable ASCII; byte %d is 0x%02x", IdempotencyKeyHeader, i, key[i]))
		}
	}
	return key, nil
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
