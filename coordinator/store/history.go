package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/execq/execq/shared"
)

// HistoryFilter narrows a history page. Empty fields do not filter.
type HistoryFilter struct {
	// RequestedBy limits the page to one user's commands. The API always sets
	// it for a non-admin caller: the store does not decide who may see what.
	RequestedBy string
	ContainerID string
	Status      shared.Status
	// Since keeps commands created at or after it.
	Since time.Time
	// After is the keyset position: only commands strictly older than it in
	// (created_at, id) order are returned. Nil starts at the newest.
	After *HistoryPosition
	// Limit is the page size; the caller bounds it.
	Limit int
}

// HistoryPosition is a command's place in history order.
type HistoryPosition struct {
	CreatedAt time.Time
	ID        string
}

// historySQL lists commands newest first, one keyset page. Every filter is a
// parameter that is either NULL (no filter) or a value; lib/pq sends the
// statement unnamed, so PostgreSQL plans it with the values bound, folds the
// "IS NULL OR" arms away and picks the commands_history_* index that fits
// (TestHistoryUsesIndexes checks each combination). The row comparison on
// (created_at, id) is an index condition of all of them. Output columns are
// not read: a page of 500 finished commands must not drag their output out
// of TOAST.
const historySQL = `
	SELECT ` + commandCols + ` FROM commands
	WHERE ($1::uuid IS NULL OR requested_by = $1::uuid)
		AND ($2::uuid IS NULL OR container_id = $2::uuid)
		AND ($3::text IS NULL OR status = $3::text)
		AND ($4::timestamptz IS NULL OR created_at >= $4::timestamptz)
		AND ($5::timestamptz IS NULL OR (created_at, id) < ($5::timestamptz, $6::uuid))
	ORDER BY created_at DESC, id DESC
	LIMIT $7`

// historyArgs are historySQL's parameters for f.
func historyArgs(f HistoryFilter) []any {
	null := func(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }
	var since, afterAt sql.NullTime
	var afterID sql.NullString
	if !f.Since.IsZero() {
		since = sql.NullTime{Time: f.Since, Valid: true}
	}
	if f.After != nil {
		afterAt = sql.NullTime{Time: f.After.CreatedAt, Valid: true}
		afterID = null(f.After.ID)
	}
	return []any{null(f.RequestedBy), null(f.ContainerID), null(string(f.Status)), since, afterAt, afterID, f.Limit}
}

// History returns one page of commands, newest first, without their output
// (the record's stdout_len/stderr_len say how much there is).
func (s *Store) History(ctx context.Context, f HistoryFilter) ([]Command, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	cs := []Command{}
	if err := s.db.SelectContext(ctx, &cs, historySQL, historyArgs(f)...); err != nil {
		return nil, fmt.Errorf("history: %w", interpretError(err))
	}
	return cs, nil
}
