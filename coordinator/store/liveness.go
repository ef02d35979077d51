package store

import (
	"context"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// touchNodesSQL stamps nodes $1 as seen now, skipping those stamped less
// than $2 ms ago (by another replica's flush or an inventory report) and
// those whose row another writer holds (it is stamping them anyway), so
// replicas flushing at once neither wait for each other nor write a row
// twice. Rows are locked in ID order: two flushes cannot deadlock.
const touchNodesSQL = `
	UPDATE nodes n SET last_seen_at = now()
	FROM (SELECT id FROM nodes
		WHERE id = ANY($1::uuid[]) AND (last_seen_at IS NULL OR last_seen_at < now() - $2 * interval '1 millisecond')
		ORDER BY id FOR UPDATE SKIP LOCKED) AS due
	WHERE n.id = due.id`

// TouchNodes records that the agents of nodes were in contact: last_seen_at
// becomes the database's now() for each not stamped within fresh. One
// statement for all of them. It returns how many rows it stamped.
func (s *Store) TouchNodes(ctx context.Context, nodes []string, fresh time.Duration) (int, error) {
	if len(nodes) == 0 {
		return 0, nil
	}
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	res, err := s.db.ExecContext(ctx, touchNodesSQL, pq.Array(nodes), fresh.Milliseconds())
	if err != nil {
		return 0, fmt.Errorf("stamp %d nodes as seen: %w", len(nodes), interpretError(err))
	}
	n, err := res.RowsAffected()
	return int(n), err
}
