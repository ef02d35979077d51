package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/execq/execq/shared"
)

// AuthChannel is notified when what a token grants may have changed (a user
// disabled, enabled or demoted, a node revoked, a token rotated, a row
// deleted), with payload "user:ID" or "node:ID", so every replica drops the
// identity from its token cache at once. Triggers of migration 0008 send it
// in the transaction that makes the change, whoever makes it; it is
// delivered at commit.
const AuthChannel = "execq_auth"

// Identity statuses as listed by ListUsers and ListNodes.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"
	StatusRevoked  = "revoked"
)

// Ref selects one user or node by ID or by name: exactly one is set.
type Ref struct {
	ID   string
	Name string
}

// where returns the condition and argument selecting r in a table.
func (r Ref) where() (string, any) {
	if r.ID != "" {
		return "id = $1", r.ID
	}
	return "name = $1", r.Name
}

func (r Ref) String() string {
	if r.ID != "" {
		return r.ID
	}
	return fmt.Sprintf("%q", r.Name)
}

// UserInfo is a user as listed to an operator; never its token.
type UserInfo struct {
	ID         string     `db:"id" json:"id"`
	Name       string     `db:"name" json:"name"`
	IsAdmin    bool       `db:"is_admin" json:"is_admin"`
	Status     string     `db:"status" json:"status"`
	CreatedAt  time.Time  `db:"created_at" json:"created_at"`
	LastSeenAt *time.Time `db:"last_seen_at" json:"last_seen_at"`
	DisabledAt *time.Time `db:"disabled_at" json:"disabled_at,omitempty"`
}

// NodeInfo is a node as listed to an operator.
type NodeInfo struct {
	ID         string     `db:"id" json:"id"`
	Name       string     `db:"name" json:"name"`
	Status     string     `db:"status" json:"status"`
	CreatedAt  time.Time  `db:"created_at" json:"created_at"`
	LastSeenAt *time.Time `db:"last_seen_at" json:"last_seen_at"`
	RevokedAt  *time.Time `db:"revoked_at" json:"revoked_at,omitempty"`
}

// ListUsers returns every user, by name.
func (s *Store) ListUsers(ctx context.Context) ([]UserInfo, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	users := []UserInfo{}
	err := s.db.SelectContext(ctx, &users, `
		SELECT id, name, is_admin, created_at, last_seen_at, disabled_at,
		       CASE WHEN disabled_at IS NULL THEN '`+StatusEnabled+`' ELSE '`+StatusDisabled+`' END AS status
		FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", interpretError(err))
	}
	return utcUsers(users), nil
}

// ListNodes returns every node, by name.
func (s *Store) ListNodes(ctx context.Context) ([]NodeInfo, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	nodes := []NodeInfo{}
	err := s.db.SelectContext(ctx, &nodes, `
		SELECT id, name, created_at, last_seen_at, revoked_at,
		       CASE WHEN revoked_at IS NULL THEN '`+StatusEnabled+`' ELSE '`+StatusRevoked+`' END AS status
		FROM nodes ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", interpretError(err))
	}
	for i := range nodes {
		n := &nodes[i]
		n.CreatedAt, n.LastSeenAt, n.RevokedAt = n.CreatedAt.UTC(), utcPtr(n.LastSeenAt), utcPtr(n.RevokedAt)
	}
	return nodes, nil
}

func utcUsers(users []UserInfo) []UserInfo {
	for i := range users {
		u := &users[i]
		u.CreatedAt, u.LastSeenAt, u.DisabledAt = u.CreatedAt.UTC(), utcPtr(u.LastSeenAt), utcPtr(u.DisabledAt)
	}
	return users
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// SetUserDisabled disables or enables a user and returns it. The change
// notifies AuthChannel, so every replica refuses the token as soon as the
// notification arrives. Repeating either is harmless.
func (s *Store) SetUserDisabled(ctx context.Context, ref Ref, disabled bool) (UserInfo, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	cond, arg := ref.where()
	var u UserInfo
	err := s.db.GetContext(ctx, &u, `
		WITH upd AS (
			UPDATE users SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) END
			WHERE `+cond+`
			RETURNING id, name, is_admin, created_at, last_seen_at, disabled_at)
		SELECT upd.*, CASE WHEN disabled_at IS NULL THEN '`+StatusEnabled+`' ELSE '`+StatusDisabled+`' END AS status
		FROM upd`, arg, disabled)
	if errors.Is(err, sql.ErrNoRows) {
		return UserInfo{}, fmt.Errorf("user %s: %w", ref, ErrNotFound)
	}
	if err != nil {
		return UserInfo{}, fmt.Errorf("set user %s disabled=%t: %w", ref, disabled, interpretError(err))
	}
	return utcUsers([]UserInfo{u})[0], nil
}

// RotateUserToken gives a user a new token, returned only now; the old one
// stops working on every replica (AuthChannel). A disabled user stays
// disabled.
func (s *Store) RotateUserToken(ctx context.Context, ref Ref) (UserInfo, string, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	tok, hash, err := newToken(userTokenPrefix)
	if err != nil {
		return UserInfo{}, "", err
	}
	cond, arg := ref.where()
	var u UserInfo
	err = s.db.GetContext(ctx, &u, `
		WITH upd AS (
			UPDATE users SET token_hash = $2 WHERE `+cond+`
			RETURNING id, name, is_admin, created_at, last_seen_at, disabled_at)
		SELECT upd.*, CASE WHEN disabled_at IS NULL THEN '`+StatusEnabled+`' ELSE '`+StatusDisabled+`' END AS status
		FROM upd`, arg, hash)
	if errors.Is(err, sql.ErrNoRows) {
		return UserInfo{}, "", fmt.Errorf("user %s: %w", ref, ErrNotFound)
	}
	if err != nil {
		return UserInfo{}, "", fmt.Errorf("rotate token of user %s: %w", ref, interpretError(err))
	}
	return utcUsers([]UserInfo{u})[0], tok, nil
}

// RotateNodeToken gives a node a new token, returned only now; the old one
// stops working on every replica. It also re-admits a revoked node: the
// new token is the one its agent is to be given.
func (s *Store) RotateNodeToken(ctx context.Context, ref Ref) (NodeInfo, string, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	tok, hash, err := newToken(nodeTokenPrefix)
	if err != nil {
		return NodeInfo{}, "", err
	}
	cond, arg := ref.where()
	var n NodeInfo
	err = s.db.GetContext(ctx, &n, `
		WITH upd AS (
			UPDATE nodes SET token_hash = $2, revoked_at = NULL WHERE `+cond+`
			RETURNING id, name, created_at, last_seen_at, revoked_at)
		SELECT upd.*, '`+StatusEnabled+`' AS status
		FROM upd`, arg, hash)
	if errors.Is(err, sql.ErrNoRows) {
		return NodeInfo{}, "", fmt.Errorf("node %s: %w", ref, ErrNotFound)
	}
	if err != nil {
		return NodeInfo{}, "", fmt.Errorf("rotate token of node %s: %w", ref, interpretError(err))
	}
	n.CreatedAt, n.LastSeenAt = n.CreatedAt.UTC(), utcPtr(n.LastSeenAt)
	return n, tok, nil
}

// RevokeNode makes a node's token fail authentication on every replica at
// once, and ends its work without deleting history:
//   - its containers leave the inventory, so nothing new is submitted to them
//     (commands keep their container_id);
//   - its commands not yet started fail at once (end reason not_picked_up,
//     stderr says the node was revoked): no agent of it can start them;
//   - its running commands are left to the lease timeout: the agent can no
//     longer heartbeat, so it stops the program itself once its lease is
//     past renewing, and the reaper fails the command as agent lost. Failing
//     them here would report a program as ended while it still runs.
//
// It returns the node and how many queued commands it failed. Repeating it
// is harmless.
func (s *Store) RevokeNode(ctx context.Context, ref Ref) (NodeInfo, int, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	cond, arg := ref.where()
	var n NodeInfo
	var failed int
	err := s.WithTx(ctx, func(tx *sqlx.Tx) error {
		err := tx.GetContext(ctx, &n, `
			WITH upd AS (
				UPDATE nodes SET revoked_at = coalesce(revoked_at, now()) WHERE `+cond+`
				RETURNING id, name, created_at, last_seen_at, revoked_at)
			SELECT upd.*, '`+StatusRevoked+`' AS status
			FROM upd`, arg)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("node %s: %w", ref, ErrNotFound)
		}
		if err != nil {
			return interpretError(err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM containers WHERE node_id = $1`, n.ID); err != nil {
			return interpretError(err)
		}
		var queued []string
		if err := tx.SelectContext(ctx, &queued, `
			SELECT id FROM commands WHERE node_id = $1 AND status = 'queued' ORDER BY created_at FOR UPDATE`, n.ID); err != nil {
			return interpretError(err)
		}
		note := fmt.Sprintf("execq: not picked up: node %q was revoked before any agent started the command\n", n.Name)
		for _, id := range queued {
			if _, err := finalize(ctx, tx, id, ending{
				status: shared.StatusFailed, note: note, clearLease: true, reason: shared.EndNotPickedUp}); err != nil {
				return err
			}
		}
		failed = len(queued)
		return nil
	})
	if err != nil {
		return NodeInfo{}, 0, fmt.Errorf("revoke node %s: %w", ref, err)
	}
	s.countEnded(shared.StatusFailed, shared.EndNotPickedUp, failed)
	n.CreatedAt, n.LastSeenAt, n.RevokedAt = n.CreatedAt.UTC(), utcPtr(n.LastSeenAt), utcPtr(n.RevokedAt)
	return n, failed, nil
}
