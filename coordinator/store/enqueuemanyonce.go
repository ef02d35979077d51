package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// expireKeysSQL is expireKeySQL for the keys $2 of a batch. It locks the
// rows in key order, as enqueueManyOnceSQL inserts, so two batches sharing
// keys wait for each other instead of deadlocking.
const expireKeysSQL = `
	UPDATE commands SET idempotency_key = NULL
	WHERE id IN (
		SELECT id FROM commands
		WHERE requested_by = $1 AND idempotency_key = ANY($2::text[]) AND idempotency_key IS NOT NULL
			AND created_at <= now() - interval '` + IdempotencyWindow + `'
		ORDER BY idempotency_key FOR UPDATE)`

// enqueueManyOnceSQL is enqueueManySQL with each item's idempotency key
// $8[i] and request hash $9[i] (hex), NULL for an item without a key. Like
// enqueueSQL, a row already holding an item's key makes that item's insert
// do nothing (after waiting for the transaction that wrote it, if that is
// still open), so it is missing from the rows returned, as is an item
// whose container is unknown or not the user's to use: the caller tells
// the two apart, and refuses the batch (rolls back) for either, except
// for a replay. Rows are inserted in key order, so two batches that share
// keys wait on them in the same order and cannot deadlock; created_at
// still follows the items' order. Notifications go out only if the
// transaction commits.
var enqueueManyOnceSQL = `
	WITH item AS (
		SELECT * FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::int[], $7::int[], $8::text[], $9::text[])
			WITH ORDINALITY AS i(id, container_id, program, args, t, qt, key, hash, ord)),
	target AS MATERIALIZED (
		SELECT item.*, c.node_id FROM item JOIN containers c ON c.id = item.container_id
		WHERE ` + mayUse("c", "$1") + `),
	ins AS (
		INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status, created_at,
			idempotency_key, idempotency_hash, timeout_seconds, queue_timeout_seconds, queue_deadline)
		SELECT id, container_id, node_id, $1, program,
			ARRAY(SELECT jsonb_array_elements_text(args::jsonb)), 'queued', now() + (ord - 1) * interval '1 microsecond',
			key, decode(hash, 'hex'), t, qt, now() + qt * interval '1 second'
		FROM target
		ORDER BY key, ord
		ON CONFLICT (requested_by, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
		RETURNING ` + commandCols + `, stdout, stderr),
	notified AS MATERIALIZED (
		SELECT pg_notify('` + NotifyChannel + `', node_id::text) FROM (SELECT DISTINCT node_id FROM ins) AS nodes)
	SELECT ins.* FROM ins, (SELECT count(*) FROM notified) AS n`

// keyHoldersSQL is keyHolderSQL for the keys $2: the commands that hold
// them, each with the position (from 1) of its key in $2. In READ
// COMMITTED it sees the rows whose inserts made enqueueManyOnceSQL's do
// nothing: they committed before that statement returned.
const keyHoldersSQL = `
	SELECT k.ord, ` + commandCols + `, ''::bytea AS stdout, ''::bytea AS stderr, idempotency_hash
	FROM unnest($2::text[]) WITH ORDINALITY AS k(key, ord)
	JOIN commands c ON c.requested_by = $1 AND c.idempotency_key = k.key`

// enqueueManyOnce is EnqueueMany for a batch in which some items have an
// idempotency key: one transaction (expire the keys past their window,
// insert, and only if an item was not inserted read its key's holder),
// one commit. Racing batches and single submits with the same key, on any
// replica, queue it once: the unique index lets one insert through and the
// others wait for it, then read it.
func (s *Store) enqueueManyOnce(ctx context.Context, requestedBy string, items []BatchItem) ([]BatchResult, error) {
	n := len(items)
	ids, ctrs, progs, args, ts, qts, err := batchArrays(items)
	if err != nil {
		return nil, err
	}
	keys, hashes := make([]sql.NullString, n), make([]sql.NullString, n)
	var keyed []string
	seen := make(map[string]int)
	for i, it := range items {
		if it.IdempotencyKey == "" {
			continue
		}
		if first, ok := seen[it.IdempotencyKey]; ok {
			return nil, fmt.Errorf("enqueue %d commands: items %d and %d have the same idempotency key", n, first, i)
		}
		seen[it.IdempotencyKey] = i
		h, err := requestHash(it.ContainerID, it.Req)
		if err != nil {
			return nil, err
		}
		keys[i] = sql.NullString{String: it.IdempotencyKey, Valid: true}
		hashes[i] = sql.NullString{String: hex.EncodeToString(h), Valid: true}
		keyed = append(keyed, it.IdempotencyKey)
	}
	var out []BatchResult
	err = s.WithTx(ctx, func(tx *sqlx.Tx) error {
		out = make([]BatchResult, n)
		if _, err := tx.ExecContext(ctx, expireKeysSQL, requestedBy, pq.Array(keyed)); err != nil {
			return interpretError(err)
		}
		var rows []CommandWithOutput
		if err := tx.SelectContext(ctx, &rows, enqueueManyOnceSQL, requestedBy, pq.Array(ids), pq.Array(ctrs),
			pq.Array(progs), pq.Array(args), pq.Array(ts), pq.Array(qts), pq.Array(keys), pq.Array(hashes)); err != nil {
			return interpretError(err)
		}
		byID := make(map[string]*CommandWithOutput, len(rows))
		for i := range rows {
			byID[rows[i].ID] = &rows[i]
		}
		var pending []string // keys of the items not inserted
		for i, id := range ids {
			if c, ok := byID[id]; ok {
				out[i].CommandWithOutput = *c
			} else if keys[i].Valid {
				pending = append(pending, keys[i].String)
			}
		}
		held := make(map[string]keyHolder, len(pending))
		if len(pending) > 0 {
			var hs []keyHolder
			if err := tx.SelectContext(ctx, &hs, keyHoldersSQL, requestedBy, pq.Array(pending)); err != nil {
				return interpretError(err)
			}
			for _, h := range hs {
				held[pending[h.Ord-1]] = h
			}
		}
		// The first item refused, in the items' order, refuses the batch.
		for i, id := range ids {
			if _, ok := byID[id]; ok {
				continue
			}
			h, ok := held[keys[i].String]
			if !keys[i].Valid || !ok {
				return &ContainerNotFoundError{ContainerID: ctrs[i]}
			}
			if hash, _ := hex.DecodeString(hashes[i].String); !bytes.Equal(h.Hash, hash) {
				return &IdempotencyKeyReusedError{Index: i}
			}
			out[i] = BatchResult{CommandWithOutput: h.CommandWithOutput, Replay: true}
		}
		return nil
	})
	if err != nil {
		out = nil
	}
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrIdempotencyKeyReused) {
		err = fmt.Errorf("enqueue %d commands with idempotency keys: %w", n, err)
	}
	return out, err
}

// keyHolder is a row of keyHoldersSQL.
type keyHolder struct {
	Ord int `db:"ord"`
	CommandWithOutput
	Hash []byte `db:"idempotency_hash"`
}
