package store

import (
	"context"
	"fmt"
	"time"
)

// pruneSQL deletes at most $2 terminal commands that finished more than $1
// milliseconds ago, oldest first; their chunks (their output: a finished
// command keeps its chunk rows) go by ON DELETE CASCADE, which seeks each
// command's rows on the chunks' primary key (TestReadOutputUsesIndexes). The
// status list repeats commands_finished_idx's predicate so each batch reads
// only that index. SKIP LOCKED lets replicas prune at once, and never waits
// on a row another transaction holds.
const pruneSQL = `
	DELETE FROM commands WHERE id IN (
		SELECT id FROM commands
		WHERE status IN ('succeeded','failed','cancelled')
		  AND finished_at < now() - $1 * interval '1 millisecond'
		ORDER BY finished_at LIMIT $2
		FOR UPDATE SKIP LOCKED)`

// Prune deletes up to limit terminal commands (with their output) that
// finished more than retention ago, in one short statement, and returns how
// many it deleted. Callers repeat it until it deletes fewer than limit.
func (s *Store) Prune(ctx context.Context, retention time.Duration, limit int) (int64, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	res, err := s.db.ExecContext(ctx, pruneSQL, retention.Milliseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("prune commands finished over %s ago: %w", retention, interpretError(err))
	}
	return res.RowsAffected()
}
