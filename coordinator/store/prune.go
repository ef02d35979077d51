package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// pruneSQL deletes at most $2 terminal commands that finished more than $1
// milliseconds ago, and not before $3 (null: any time), oldest first; their
// chunks (their output: a finished command keeps its chunk rows) go by ON
// DELETE CASCADE, which seeks each command's rows on the chunks' primary key
// (TestReadOutputUsesIndexes). It returns how many it deleted and the
// newest finished_at among them. The status list repeats
// commands_finished_idx's predicate so each batch reads only that index.
// SKIP LOCKED lets replicas prune at once, and never waits on a row another
// transaction holds.
//
// $3 is where the previous batch ended. Every row a batch deletes leaves
// its index entry behind, dead, at the old end of commands_finished_idx
// until a vacuum removes it (on a big table, after a fifth of it is dead),
// and new entries go in at the other end, so nothing else clears them: a
// batch that started from the oldest entry again would walk the dead
// entries of every batch before it (TestPruneBatchReadsPastItsOwnDeletes).
const pruneSQL = `
	WITH deleted AS (
		DELETE FROM commands WHERE id IN (
			SELECT id FROM commands
			WHERE status IN ('succeeded','failed','cancelled')
			  AND finished_at < now() - $1 * interval '1 millisecond'
			  AND finished_at >= coalesce($3::timestamptz, '-infinity')
			ORDER BY finished_at LIMIT $2
			FOR UPDATE SKIP LOCKED)
		RETURNING finished_at)
	SELECT count(*) AS n, max(finished_at) AS last FROM deleted`

// Prune deletes up to limit terminal commands (with their output) that
// finished more than retention ago, and at or after from (zero: any time),
// in one short statement. It returns how many it deleted and where the
// next batch starts: the newest finished_at it deleted (ties included, so
// none is skipped), or from when it deleted none. Callers repeat it from
// there until it deletes fewer than limit, and start a later pass from
// zero again, so a row skipped while another transaction held it is
// deleted then.
func (s *Store) Prune(ctx context.Context, retention time.Duration, from time.Time, limit int) (int64, time.Time, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var after sql.NullTime
	if !from.IsZero() {
		after = sql.NullTime{Time: from, Valid: true}
	}
	var res struct {
		N    int64        `db:"n"`
		Last sql.NullTime `db:"last"`
	}
	if err := s.db.GetContext(ctx, &res, pruneSQL, retention.Milliseconds(), limit, after); err != nil {
		return 0, from, fmt.Errorf("prune commands finished over %s ago: %w", retention, interpretError(err))
	}
	if !res.Last.Valid {
		return 0, from, nil
	}
	return res.N, res.Last.Time, nil
}
