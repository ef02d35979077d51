package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/execq/execq/shared"
)

// ErrIdempotencyKeyReused: the caller's idempotency key already names a
// command submitted with a different container or body.
var ErrIdempotencyKeyReused = errors.New("idempotency key already used for a different request")

// IdempotencyWindow is how long a key keeps naming its command, as a
// PostgreSQL interval: ages are compared on the database's clock, so
// replicas whose clocks disagree still agree on what expired.
const IdempotencyWindow = "24 hours"

// expireKeySQL releases the key from a command older than the window, so
// the unique index admits a new command with it. A row submitted within the
// window keeps it.
const expireKeySQL = `
	UPDATE commands SET idempotency_key = NULL
	WHERE requested_by = $1 AND idempotency_key = $2 AND created_at <= now() - interval '` + IdempotencyWindow + `'`

// keyHolderSQL reads the command that holds a key, with its fingerprint.
//
// The output is not read (empty): a replay of a finished command may hold
// 2 × the output cap, and the API streams it from the record instead.
const keyHolderSQL = `
	SELECT ` + commandCols + `, ''::bytea AS stdout, ''::bytea AS stderr, idempotency_hash FROM commands
	WHERE requested_by = $1 AND idempotency_key = $2`

// EnqueueOnce is Enqueue under an idempotency key: the first call with the
// key enqueues (created is true); any later call by the same user within
// the window, with the same container and body, returns that command
// (created is false) — even when the calls race on different replicas,
// because the unique index on (requested_by, idempotency_key) lets only one
// insert through and the others wait for it, then read it. The same key with
// a different request is ErrIdempotencyKeyReused and writes nothing.
func (s *Store) EnqueueOnce(ctx context.Context, containerID, requestedBy string, req shared.SubmitRequest, key string) (c CommandWithOutput, created bool, err error) {
	hash, err := requestHash(containerID, req)
	if err != nil {
		return c, false, err
	}
	err = s.WithTx(ctx, func(tx *sqlx.Tx) error {
		created = false
		if _, err := tx.ExecContext(ctx, expireKeySQL, requestedBy, key); err != nil {
			return interpretError(err)
		}
		err := tx.GetContext(ctx, &c, enqueueSQL, enqueueArgs(containerID, requestedBy, req, key, hash)...)
		if err == nil {
			created = true
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return interpretError(err)
		}
		// Either the key is taken, or the container is unknown or not
		// the user's to use. In READ
		// COMMITTED this statement sees the row whose insert made ours do
		// nothing: it committed before our insert returned.
		var held struct {
			CommandWithOutput
			Hash []byte `db:"idempotency_hash"`
		}
		err = tx.GetContext(ctx, &held, keyHolderSQL, requestedBy, key)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return interpretError(err)
		}
		if !bytes.Equal(held.Hash, hash) {
			return ErrIdempotencyKeyReused
		}
		c = held.CommandWithOutput
		return nil
	})
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrIdempotencyKeyReused) {
		err = fmt.Errorf("enqueue on container %s with an idempotency key: %w", containerID, err)
	}
	return c, created, err
}

// requestHash fingerprints what a submit asks for: the container and the
// validated body, re-encoded so that formatting, field order and a missing
// versus empty args list do not count as differences.
func requestHash(containerID string, req shared.SubmitRequest) ([]byte, error) {
	if req.Args == nil {
		req.Args = []string{}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("fingerprint request: %w", err)
	}
	h := sha256.New()
	h.Write([]byte(containerID))
	h.Write([]byte{0})
	h.Write(body)
	return h.Sum(nil), nil
}
