package store

import (
	"context"
	"fmt"
	"io/fs"
	"sort"

	"github.com/execq/execq/migrations"
)

// migrationLock is the advisory lock key that serialises migrations, so
// replicas starting together apply each file exactly once.
const migrationLock = 0x65786563 // "exec"

// Migrate applies the embedded migrations that are not yet recorded. It
// returns the names it applied: an empty list, never nil, when nothing was
// pending (callers log it as JSON, where nil would read as null).
func (s *Store) Migrate(ctx context.Context) ([]string, error) {
	conn, err := s.db.Connx(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", interpretError(err))
	}
	defer conn.Close()
	// No statement timeout for this session (Open sets the query timeout
	// on every connection): waiting for another replica's migrations, or
	// building an index on a large table, may take longer.
	if _, err := conn.ExecContext(ctx, `SET statement_timeout = 0`); err != nil {
		return nil, fmt.Errorf("migrate: %w", interpretError(err))
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `RESET statement_timeout`) //nolint:errcheck
	// The advisory lock is session scoped: hold this one connection for the
	// whole run.
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return nil, fmt.Errorf("migrate: take lock: %w", interpretError(err))
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLock) //nolint:errcheck

	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("migrate: create schema_migrations: %w", interpretError(err))
	}
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	applied := []string{}
	for _, name := range names {
		var done bool
		if err := conn.GetContext(ctx, &done, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE name = $1)`, name); err != nil {
			return applied, fmt.Errorf("migrate: check %s: %w", name, interpretError(err))
		}
		if done {
			continue
		}
		body, err := migrations.FS.ReadFile(name)
		if err != nil {
			return applied, err
		}
		tx, err := conn.BeginTxx(ctx, nil)
		if err != nil {
			return applied, fmt.Errorf("migrate: begin %s: %w", name, interpretError(err))
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			_ = tx.Rollback()
			return applied, fmt.Errorf("migrate: apply %s: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (name) VALUES ($1)`, name); err != nil {
			_ = tx.Rollback()
			return applied, fmt.Errorf("migrate: record %s: %w", name, err)
		}
		if err := tx.Commit(); err != nil {
			return applied, fmt.Errorf("migrate: commit %s: %w", name, interpretError(err))
		}
		applied = append(applied, name)
	}
	return applied, nil
}
