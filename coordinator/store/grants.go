package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/shared"
)

// Labels is a jsonb object of string to string: a container's labels or a
// grant's selector.
type Labels map[string]string

// Scan reads a jsonb object.
func (l *Labels) Scan(src any) error {
	var raw []byte
	switch v := src.(type) {
	case []byte:
		raw = v
	case string:
		raw = []byte(v)
	case nil:
		*l = Labels{}
		return nil
	default:
		return fmt.Errorf("labels: cannot scan %T", src)
	}
	m := Labels{}
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("labels: %w", err)
	}
	*l = m
	return nil
}

// Value writes a jsonb object as text: with binary parameters on, a []byte
// would be sent in jsonb's binary format, which needs a version byte.
func (l Labels) Value() (driver.Value, error) {
	if l == nil {
		return "{}", nil
	}
	b, err := json.Marshal(map[string]string(l))
	return string(b), err
}

// mayUse is the SQL condition that user (a parameter or column) may submit
// to container row alias c: an admin may use every container, anyone else
// those a grant of theirs selects. Evaluated in the statement that uses the
// container, a revoked grant or a demoted admin takes effect on the next
// request, on every replica. It reads users by primary key and the user's
// grants through grants_user_selector_idx.
func mayUse(c, user string) string {
	return `(EXISTS (SELECT 1 FROM users u WHERE u.id = ` + user + ` AND u.is_admin)
		OR EXISTS (SELECT 1 FROM grants g WHERE g.user_id = ` + user + ` AND ` + c + `.labels @> g.selector))`
}

// Grant lets a user use the containers its selector matches.
type Grant struct {
	ID        string    `db:"id"`
	UserID    string    `db:"user_id"`
	UserName  string    `db:"user_name"`
	Selector  Labels    `db:"selector"`
	CreatedAt time.Time `db:"created_at"`
}

// insertGrantSQL adds grant $1 for the user named $2 with selector $3. It
// returns no row when the user does not exist or already holds the same
// selector (the unique index; jsonb equality ignores key order).
const insertGrantSQL = `
	WITH ins AS (
		INSERT INTO grants (id, user_id, selector)
		SELECT $1, id, $3::jsonb FROM users WHERE name = $2
		ON CONFLICT (user_id, selector) DO NOTHING
		RETURNING id, user_id, selector, created_at)
	SELECT id, user_id, $2 AS user_name, selector, created_at FROM ins`

const grantCols = `g.id, g.user_id, u.name AS user_name, g.selector, g.created_at`

// CreateGrant gives the user named userName the containers sel matches.
// Adding a grant the user already holds returns that grant with created
// false, so a script may repeat it. ErrNotFound: no such user.
func (s *Store) CreateGrant(ctx context.Context, userName string, sel shared.Selector) (g Grant, created bool, err error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	err = s.db.GetContext(ctx, &g, insertGrantSQL, uuid.NewString(), userName, Labels(sel))
	if err == nil {
		return g, true, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return g, false, fmt.Errorf("grant %s to user %q: %w", sel, userName, interpretError(err))
	}
	// The user is unknown, or holds this selector already: the insert
	// waited for any concurrent one with the same selector, so a fresh
	// read sees it.
	err = s.db.GetContext(ctx, &g, `SELECT `+grantCols+` FROM grants g JOIN users u ON u.id = g.user_id
		WHERE u.name = $1 AND g.selector = $2::jsonb`, userName, Labels(sel))
	if errors.Is(err, sql.ErrNoRows) {
		return g, false, ErrNotFound
	}
	if err != nil {
		return g, false, fmt.Errorf("grant %s to user %q: %w", sel, userName, interpretError(err))
	}
	return g, false, nil
}

// ListGrants returns every grant, by user name then age.
func (s *Store) ListGrants(ctx context.Context) ([]Grant, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	gs := []Grant{}
	err := s.db.SelectContext(ctx, &gs, `SELECT `+grantCols+` FROM grants g JOIN users u ON u.id = g.user_id
		ORDER BY u.name, g.created_at, g.id`)
	if err != nil {
		return nil, fmt.Errorf("list grants: %w", interpretError(err))
	}
	return gs, nil
}

// RevokeGrant deletes a grant and returns it. Commands already submitted
// under it stay their submitter's to read and cancel; new submits are
// refused. ErrNotFound: no such grant.
func (s *Store) RevokeGrant(ctx context.Context, id string) (Grant, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var g Grant
	err := s.db.GetContext(ctx, &g, `
		WITH del AS (DELETE FROM grants WHERE id = $1 RETURNING id, user_id, selector, created_at)
		SELECT del.id, del.user_id, u.name AS user_name, del.selector, del.created_at
		FROM del JOIN users u ON u.id = del.user_id`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return g, ErrNotFound
	}
	if err != nil {
		return g, fmt.Errorf("revoke grant %s: %w", id, interpretError(err))
	}
	return g, nil
}

// visibleContainersSQL lists the containers user $1 may use: all of them
// for an admin; for anyone else those a grant selects, found per grant
// through containers_labels_idx, so the cost follows the user's grants and
// what they select, not the size of the fleet. The branch that does not
// apply is cut by its one-time filter before it reads anything.
const visibleContainersSQL = `
	WITH admin AS (SELECT coalesce((SELECT is_admin FROM users WHERE id = $1), false) AS yes)
	SELECT c.id, c.node_id, c.name, c.state, c.labels, c.last_seen_at FROM containers c
	WHERE (SELECT yes FROM admin)
	UNION ALL
	SELECT c.id, c.node_id, c.name, c.state, c.labels, c.last_seen_at FROM containers c
	WHERE NOT (SELECT yes FROM admin)
		AND c.id IN (SELECT c2.id FROM grants g JOIN containers c2 ON c2.labels @> g.selector WHERE g.user_id = $1)
	ORDER BY node_id, name, id`

// VisibleContainers returns the containers userID may use, by node then
// name. A container no grant of theirs selects is not listed, so its
// existence does not leak.
func (s *Store) VisibleContainers(ctx context.Context, userID string) ([]Container, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	cs := []Container{}
	if err := s.db.SelectContext(ctx, &cs, visibleContainersSQL, userID); err != nil {
		return nil, fmt.Errorf("list containers for user %s: %w", userID, interpretError(err))
	}
	return cs, nil
}
