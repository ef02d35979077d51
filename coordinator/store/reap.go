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
// interval on every replica, so it reads only commands_live_node_idx, the
// index of live rows: the lease expiry is compared in the index entries,
// and only the expired rows are fetched (0012).
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
// Like requeueExpiredSQL it runs every reap interval on every replica and
// reads commands_live_node_idx, comparing the lease expiry in its entries.
// "leased_by IS NOT NULL" is always true of a running row (Start sets it and
// 0002 checks it).
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
	if err == nil {
		s.countEnded(shared.StatusFailed, shared.EndAgentLost, len(ids))
	}
	return ids, err
}

// QueueStats feeds the queue metrics: the live queue in total and per node.
type QueueStats struct {
	Queued        int64
	Running       int64
	OldestQueuedS sql.NullFloat64
	// Nodes holds every node not revoked, and any revoked one that still
	// has live commands, in name order: so the per-node figures add up to
	// the totals, and their number is bounded by the fleet's.
	Nodes []NodeStats
}

// NodeStats is one node's part of the live queue and its last contact.
type NodeStats struct {
	Name string `db:"name"`
	// Revoked nodes are listed only while they have live commands.
	Revoked       bool            `db:"revoked"`
	Queued        int64           `db:"queued"`
	Running       int64           `db:"running"`
	OldestQueuedS sql.NullFloat64 `db:"oldest_queued_seconds"`
	// LastSeen is when its agent was last in contact (unix seconds), and
	// LastSeenAgoS how long ago that was by the database's clock, the one
	// that wrote it (see FlushContacts); both null if it never was.
	LastSeen     sql.NullFloat64 `db:"last_seen"`
	LastSeenAgoS sql.NullFloat64 `db:"last_seen_ago_seconds"`
}

// statsSQL is read at every /metrics scrape of every replica: one grouped
// statement for the whole fleet, never one per node. The live rows are read
// through commands_live_node_idx, which holds only queued and running rows
// (index only), so its cost follows the live queue, not the table's
// history; nodes is read whole, and is as large as the fleet.
const statsSQL = `
	WITH live AS (
		SELECT node_id,
			count(*) FILTER (WHERE status = 'queued') AS queued,
			count(*) FILTER (WHERE status = 'running') AS running,
			min(created_at) FILTER (WHERE status = 'queued') AS oldest_queued
		FROM commands WHERE status IN ('queued','running')
		GROUP BY node_id)
	SELECT n.name, n.revoked_at IS NOT NULL AS revoked,
		coalesce(l.queued, 0) AS queued, coalesce(l.running, 0) AS running,
		extract(epoch FROM now() - l.oldest_queued)::float8 AS oldest_queued_seconds,
		extract(epoch FROM n.last_seen_at)::float8 AS last_seen,
		extract(epoch FROM now() - n.last_seen_at)::float8 AS last_seen_ago_seconds
	FROM nodes n LEFT JOIN live l ON l.node_id = n.id
	WHERE n.revoked_at IS NULL OR l.node_id IS NOT NULL
	ORDER BY n.name`

// Stats reads the live queue, in total and per node, for the metrics
// collector.
func (s *Store) Stats(ctx context.Context) (QueueStats, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	q := QueueStats{Nodes: []NodeStats{}}
	if err := s.db.SelectContext(ctx, &q.Nodes, statsSQL); err != nil {
		return QueueStats{}, fmt.Errorf("queue stats: %w", interpretError(err))
	}
	for _, n := range q.Nodes {
		q.Queued += n.Queued
		q.Running += n.Running
		if n.OldestQueuedS.Valid && (!q.OldestQueuedS.Valid || n.OldestQueuedS.Float64 > q.OldestQueuedS.Float64) {
			q.OldestQueuedS = n.OldestQueuedS
		}
	}
	return q, nil
}
