package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/execq/execq/shared"
)

// requeueExpiredSQL releases expired unstarted leases. It runs every reap
// interval on every replica, so it reads only through commands_lease_idx
// (status and leased_by repeat the index predicate so the planner can use it).
const requeueExpiredSQL = `
	WITH expired AS (
		SELECT id FROM commands
		WHERE status = 'queued' AND leased_by IS NOT NULL AND lease_expires_at < now()
		FOR UPDATE SKIP LOCKED),
	upd AS (
		UPDATE commands c SET leased_by = NULL, lease_expires_at = NULL
		FROM expired WHERE c.id = expired.id RETURNING c.node_id)
	SELECT upd.node_id FROM upd, LATERAL (SELECT pg_notify('` + NotifyChannel + `', upd.node_id::text)) AS n`

// RequeueExpired releases leases that expired before start, so the commands
// are queued and leasable again, and notifies their nodes. It returns how many
// it released.
func (s *Store) RequeueExpired(ctx context.Context) (int, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var nodes []string
	err := s.db.SelectContext(ctx, &nodes, requeueExpiredSQL)
	if err != nil {
		return 0, fmt.Errorf("requeue expired leases: %w", interpretError(err))
	}
	return len(nodes), nil
}

// releaseSQL gives back the leases ($1 command IDs, $3 their attempts) of
// node $2 that were not started, and wakes the node's polls once.
const releaseSQL = `
	WITH upd AS (
		UPDATE commands c SET leased_by = NULL, lease_expires_at = NULL
		FROM unnest($1::uuid[], $3::int[]) AS u(id, attempt)
		WHERE c.id = u.id AND c.leased_by = $2 AND c.attempt = u.attempt AND c.status = 'queued'
		RETURNING c.node_id)
	SELECT upd.node_id FROM (SELECT DISTINCT node_id FROM upd) AS upd,
		LATERAL (SELECT pg_notify('` + NotifyChannel + `', upd.node_id::text)) AS n`

// ReleaseUndelivered gives back leases a poll claimed but could not hand
// to its agent (the connection dropped, the answer could not be written):
// the commands are queued again at once, not after the lease TTL. Leases
// started or replaced meanwhile are left alone.
func (s *Store) ReleaseUndelivered(ctx context.Context, nodeID string, cs []Command) error {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	ids, attempts := make([]string, len(cs)), make([]int64, len(cs))
	for i, c := range cs {
		ids[i], attempts[i] = c.ID, int64(c.Attempt)
	}
	var nodes []string
	err := s.commitOne(ctx, func(ctx context.Context, conn *sqlx.Conn) error {
		return conn.SelectContext(ctx, &nodes, releaseSQL, pq.Array(ids), nodeID, pq.Array(attempts))
	})
	if err != nil {
		return fmt.Errorf("release %d undelivered leases of node %s: %w", len(cs), nodeID, interpretError(err))
	}
	return nil
}

// Release gives back a lease that was never started: the command is queued
// again at once and its node's polls are woken. Repeating it for the same
// lease is harmless; a started, replaced or expired-and-retaken lease gets
// ErrLeaseLost.
func (s *Store) Release(ctx context.Context, id, nodeID string, attempt int) error {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var released []string
	err := s.commitOne(ctx, func(ctx context.Context, conn *sqlx.Conn) error {
		return conn.SelectContext(ctx, &released, releaseSQL, pq.Array([]string{id}), nodeID, pq.Array([]int64{int64(attempt)}))
	})
	if err != nil {
		return fmt.Errorf("release command %s: %w", id, interpretError(err))
	}
	if len(released) == 1 {
		return nil
	}
	c, err := s.lookupForNode(ctx, s.db, id, nodeID, false)
	if err != nil {
		return err
	}
	if c.Status == shared.StatusQueued && !c.LeasedBy.Valid && c.Attempt == attempt {
		return nil // released already
	}
	return ErrLeaseLost
}

// failLostSQL picks running commands whose lease expired, oldest first.
// Like requeueExpiredSQL it runs every reap interval on every replica:
// "leased_by IS NOT NULL" is always true of a running row (Start sets it and
// 0002 checks it) but must be written out, or the planner cannot match the
// partial index commands_lease_idx and reads the whole table.
const failLostSQL = `
	SELECT c.id, n.name AS node_name, c.lease_expires_at FROM commands c JOIN nodes n ON n.id = c.node_id
	WHERE c.status = 'running' AND c.leased_by IS NOT NULL AND c.lease_expires_at < now() - $2 * interval '1 millisecond'
	ORDER BY c.lease_expires_at LIMIT $1
	FOR UPDATE OF c SKIP LOCKED`

// FailLost marks running commands whose heartbeats stopped as failed, with an
// "agent lost" line in stderr. They are never re-run: the program may have
// done part or all of its work. Rows locked by a concurrent heartbeat or by
// another replica's reaper are skipped this round. A lease is failed only
// once it expired more than grace ago: a heartbeat or finish that reached a
// coordinator before the expiry but waits for the database still lands
// first (it renews or ends an expired lease that was not yet reaped).
// Returns the IDs failed.
func (s *Store) FailLost(ctx context.Context, grace time.Duration, limit int) ([]string, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var lost []struct {
		ID       string       `db:"id"`
		NodeName string       `db:"node_name"`
		Expired  sql.NullTime `db:"lease_expires_at"`
	}
	var ids []string
	err := s.WithTx(ctx, func(tx *sqlx.Tx) error {
		if err := tx.SelectContext(ctx, &lost, failLostSQL, limit, grace.Milliseconds()); err != nil {
			return interpretError(err)
		}
		for _, l := range lost {
			note := fmt.Sprintf("execq: agent lost: node %q stopped sending heartbeats (lease expired %s); "+
				"the command may have been interrupted and is not re-run\n",
				l.NodeName, l.Expired.Time.UTC().Format("2006-01-02T15:04:05.000Z"))
			if _, err := finalize(ctx, tx, l.ID, ending{
				status: shared.StatusFailed, note: note, clearLease: true, reason: shared.EndAgentLost}); err != nil {
				return err
			}
			ids = append(ids, l.ID)
		}
		return nil
	})
	return ids, err
}

// QueueStats feeds the queue metrics.
type QueueStats struct {
	Queued        int64           `db:"queued"`
	Running       int64           `db:"running"`
	OldestQueuedS sql.NullFloat64 `db:"oldest_queued_seconds"`
}

// statsSQL is read at every /metrics scrape of every replica. Each figure
// is read through an index on status (or one that holds only queued or
// running rows), so its cost follows the live queue, not the table's
// history.
const statsSQL = `
	SELECT (SELECT count(*) FROM commands WHERE status = 'queued') AS queued,
	       (SELECT count(*) FROM commands WHERE status = 'running') AS running,
	       extract(epoch FROM now() - (SELECT min(created_at) FROM commands WHERE status = 'queued'))::float8 AS oldest_queued_seconds`

// Stats counts live commands for the metrics collector.
func (s *Store) Stats(ctx context.Context) (QueueStats, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var q QueueStats
	err := s.db.GetContext(ctx, &q, statsSQL)
	return q, interpretError(err)
}
