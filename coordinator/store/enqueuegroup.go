package store

import (
	"context"
	"errors"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/execq/execq/shared"
)

// enqueueReq is one single submit (without an Idempotency-Key) waiting in
// the enqueue group.
type enqueueReq struct {
	containerID, requestedBy string
	req                      shared.SubmitRequest
}

// enqueueRes is what one submit of a group got: its row, or ErrNotFound.
type enqueueRes struct {
	cmd CommandWithOutput
	err error
}

// enqueueGroupSQL queues the submits of a group in one statement: item i
// is ($1[i] its new ID, $2[i] its container, $3[i] its user, $4[i] its
// program, $5[i] its args as a JSON array, $6[i] and $7[i] its run and
// queue timeouts, NULL for the defaults). Unlike enqueueManySQL the items
// are independent submits, of any users: each is queued if its own
// container is known and its own user may use it (mayUse, as enqueueSQL),
// and an item that is not returns no row — that submit's 404 — without
// touching the others. Each node is notified once. created_at is spread a
// microsecond per item, as in enqueueManySQL, so the rows keep an order.
var enqueueGroupSQL = `
	WITH item AS (
		SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::int[], $7::int[])
			WITH ORDINALITY AS i(id, container_id, requested_by, program, args, t, qt, ord)),
	target AS MATERIALIZED (
		SELECT item.*, c.node_id FROM item JOIN containers c ON c.id = item.container_id
		WHERE ` + mayUse("c", "item.requested_by") + `),
	ins AS (
		INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status, created_at,
			timeout_seconds, queue_timeout_seconds, queue_deadline)
		SELECT id, container_id, node_id, requested_by, program,
			ARRAY(SELECT jsonb_array_elements_text(args::jsonb)), 'queued', now() + (ord - 1) * interval '1 microsecond',
			t, qt, now() + qt * interval '1 second'
		FROM target
		RETURNING ` + commandCols + `, stdout, stderr),
	notified AS MATERIALIZED (
		SELECT pg_notify('` + NotifyChannel + `', node_id::text) FROM (SELECT DISTINCT node_id FROM ins) AS nodes)
	SELECT ins.* FROM ins, (SELECT count(*) FROM notified) AS n`

// initEnqueues sets up the submit group. Concurrent single submits — many
// clients, or one script submitting to every host in parallel — are
// queued in one statement and one commit, batched naturally as the
// agents' reports are (group.go): a lone submit runs at once, as its own
// statement, so an idle coordinator adds no wait. A submit is new work, so
// its batches wait for admission, and the submits queued for a batch count
// towards Busy, so the public API still refuses early (429) instead of
// queueing past the query timeout.
func (s *Store) initEnqueues(max, slots int) {
	s.enqueues = newGroup(max, 0, slots, func(enqueueReq) int { return 0 }, s.enqueueGroup)
	s.enqueues.admit = true
}

// enqueueGroup runs one batch of the submit group: a lone submit as
// enqueueSQL, several as enqueueGroupSQL. The error is the batch's:
// nothing of it was queued (or, ErrUnavailable, the database cannot say).
func (s *Store) enqueueGroup(ctx context.Context, calls []enqueueReq) ([]enqueueRes, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	res := make([]enqueueRes, len(calls))
	if len(calls) == 1 {
		c := calls[0]
		cmd, err := s.enqueueOne(ctx, enqueueSQL, c.containerID, c.requestedBy, c.req)
		if errors.Is(err, ErrNotFound) {
			// That submit's answer, not the batch's failure.
			res[0].err, err = err, nil
		}
		res[0].cmd = cmd
		return res, err
	}
	items, users := make([]BatchItem, len(calls)), make([]string, len(calls))
	for i, c := range calls {
		items[i], users[i] = BatchItem{ContainerID: c.containerID, Req: c.req}, c.requestedBy
	}
	ids, ctrs, progs, args, ts, qts, err := batchArrays(items)
	if err != nil {
		return nil, err
	}
	var rows []CommandWithOutput
	err = s.commitOne(ctx, func(ctx context.Context, conn *sqlx.Conn) error {
		return conn.SelectContext(ctx, &rows, enqueueGroupSQL, pq.Array(ids), pq.Array(ctrs), pq.Array(users),
			pq.Array(progs), pq.Array(args), pq.Array(ts), pq.Array(qts))
	})
	if err != nil {
		return nil, interpretError(err)
	}
	byID := make(map[string]int, len(rows))
	for i := range rows {
		byID[rows[i].ID] = i
	}
	for i, id := range ids {
		if j, ok := byID[id]; ok {
			res[i].cmd = rows[j]
		} else {
			res[i].err = ErrNotFound
		}
	}
	return res, nil
}
