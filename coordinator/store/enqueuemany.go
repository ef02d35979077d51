package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/execq/execq/shared"
)

// BatchItem is one command of EnqueueMany: its container and what to run.
type BatchItem struct {
	ContainerID string
	Req         shared.SubmitRequest
	// IdempotencyKey, when not "", queues the item once per key, as
	// EnqueueOnce does. The keys of one batch must differ.
	IdempotencyKey string
}

// BatchResult is an item's command after EnqueueMany.
type BatchResult struct {
	CommandWithOutput
	// Replay says the item's idempotency key already named this command
	// (same container and body) and nothing was queued for it. As with
	// EnqueueOnce, a replayed command's output is not read (empty).
	Replay bool
}

// IdempotencyKeyReusedError says the batch's item Index has a key that
// already names a command submitted with a different container or body.
// Nothing of the batch was queued. It is ErrIdempotencyKeyReused to
// errors.Is.
type IdempotencyKeyReusedError struct{ Index int }

func (e *IdempotencyKeyReusedError) Error() string {
	return fmt.Sprintf("item %d: %v", e.Index, ErrIdempotencyKeyReused)
}

// Is makes the error ErrIdempotencyKeyReused.
func (e *IdempotencyKeyReusedError) Is(target error) bool { return target == ErrIdempotencyKeyReused }

// ContainerNotFoundError says a batch named a container that was never
// reported (or is gone) or that the caller may not use — one answer for
// both, as for a single submit. Nothing of the batch was queued. It is
// ErrNotFound to errors.Is.
type ContainerNotFoundError struct{ ContainerID string }

func (e *ContainerNotFoundError) Error() string {
	return fmt.Sprintf("container %s not found", e.ContainerID)
}

// Is makes the error ErrNotFound.
func (e *ContainerNotFoundError) Is(target error) bool { return target == ErrNotFound }

// enqueueManySQL inserts a batch of queued commands for user $1 in one
// statement: item i is ($2[i] its new ID, $3[i] its container, $4[i] its
// program, $5[i] its args as a JSON array, $6[i] and $7[i] its run and
// queue timeouts, NULL for the defaults). The insert takes the batch only if
// every item's container is known and the user may use it (mayUse, as
// enqueueSQL), so a batch is queued whole or not at all. Each node is
// notified once, however many of its commands the batch holds: the polls
// of a node claim all its queued commands on one wake-up.
//
// created_at is the statement's time plus one microsecond per item before
// it: the claim hands a node's commands out in created_at order, and the
// items of one statement would otherwise tie (now() is the transaction's
// start), so a node's commands of one batch would run in any order.
var enqueueManySQL = `
	WITH item AS (
		SELECT * FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::int[], $7::int[])
			WITH ORDINALITY AS i(id, container_id, program, args, t, qt, ord)),
	target AS MATERIALIZED (
		SELECT item.*, c.node_id FROM item JOIN containers c ON c.id = item.container_id
		WHERE ` + mayUse("c", "$1") + `),
	ins AS (
		INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status, created_at,
			timeout_seconds, queue_timeout_seconds, queue_deadline)
		SELECT id, container_id, node_id, $1, program,
			ARRAY(SELECT jsonb_array_elements_text(args::jsonb)), 'queued', now() + (ord - 1) * interval '1 microsecond',
			t, qt, now() + qt * interval '1 second'
		FROM target
		WHERE (SELECT count(*) FROM target) = cardinality($2::uuid[])
		RETURNING ` + commandCols + `, stdout, stderr),
	notified AS MATERIALIZED (
		SELECT pg_notify('` + NotifyChannel + `', node_id::text) FROM (SELECT DISTINCT node_id FROM ins) AS nodes)
	SELECT ins.* FROM ins, (SELECT count(*) FROM notified) AS n`

// missingContainerSQL names the first container of a batch that is
// unknown or not the user's to use, after enqueueManySQL took nothing.
var missingContainerSQL = `
	SELECT i.id::text FROM unnest($2::uuid[]) WITH ORDINALITY AS i(id, ord)
	WHERE NOT EXISTS (SELECT 1 FROM containers c WHERE c.id = i.id AND ` + mayUse("c", "$1") + `)
	ORDER BY i.ord LIMIT 1`

// EnqueueMany queues the items for requestedBy in one statement and one
// commit, in the items' order, notifying each node once. All or nothing:
// if any item names a container unknown or not the user's to use, nothing
// is queued and the error is a *ContainerNotFoundError naming the first;
// any other error means nothing was queued either (or, ErrUnavailable, the
// database cannot say).
//
// Items with an idempotency key are queued once per key, as EnqueueOnce
// does (enqueueManyOnce): an item whose key already names the same
// request comes back as that command with Replay set; a key naming a
// different request refuses the batch with an *IdempotencyKeyReusedError.
// A batch without keys costs what it did before keys existed: one
// autocommit statement.
func (s *Store) EnqueueMany(ctx context.Context, requestedBy string, items []BatchItem) ([]BatchResult, error) {
	for _, it := range items {
		if it.IdempotencyKey != "" {
			return s.enqueueManyOnce(ctx, requestedBy, items)
		}
	}
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	n := len(items)
	ids, ctrs, progs, args, ts, qts, err := batchArrays(items)
	if err != nil {
		return nil, err
	}
	var rows []CommandWithOutput
	err = s.commitOne(ctx, func(ctx context.Context, conn *sqlx.Conn) error {
		return conn.SelectContext(ctx, &rows, enqueueManySQL, requestedBy, pq.Array(ids), pq.Array(ctrs),
			pq.Array(progs), pq.Array(args), pq.Array(ts), pq.Array(qts))
	})
	if err != nil {
		return nil, fmt.Errorf("enqueue %d commands: %w", n, interpretError(err))
	}
	if len(rows) != n {
		var missing string
		if err := s.db.GetContext(ctx, &missing, missingContainerSQL, requestedBy, pq.Array(ctrs)); err != nil {
			return nil, fmt.Errorf("enqueue %d commands: find the container refused: %w", n, interpretError(err))
		}
		return nil, &ContainerNotFoundError{ContainerID: missing}
	}
	byID := make(map[string]*CommandWithOutput, n)
	for i := range rows {
		byID[rows[i].ID] = &rows[i]
	}
	out := make([]BatchResult, n)
	for i, id := range ids {
		out[i].CommandWithOutput = *byID[id]
	}
	return out, nil
}

// batchArrays are the items as the columns of enqueueManySQL,
// enqueueManyOnceSQL and enqueueGroupSQL: a new ID, the container, the program, the args as a
// JSON array, and the run and queue timeouts (NULL for the defaults).
func batchArrays(items []BatchItem) (ids, ctrs, progs, args []string, ts, qts []sql.NullInt32, err error) {
	n := len(items)
	ids, ctrs, progs, args = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	ts, qts = make([]sql.NullInt32, n), make([]sql.NullInt32, n)
	for i, it := range items {
		a := it.Req.Args
		if a == nil {
			a = []string{}
		}
		js, err := json.Marshal(a)
		if err != nil {
			return nil, nil, nil, nil, nil, nil, fmt.Errorf("encode args of item %d: %w", i, err)
		}
		ids[i], ctrs[i], progs[i], args[i] = uuid.NewString(), it.ContainerID, it.Req.Program, string(js)
		ts[i], qts[i] = optSeconds(it.Req.TimeoutSeconds), optSeconds(it.Req.QueueTimeoutSeconds)
	}
	return ids, ctrs, progs, args, ts, qts, nil
}
