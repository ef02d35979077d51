package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Token prefixes tell a person which kind of secret they hold; the server
// never relies on them (a user token is simply not found among nodes).
const (
	userTokenPrefix = "execq_u_"
	nodeTokenPrefix = "execq_n_"
)

// User is an authenticated operator.
type User struct {
	ID      string `db:"id"`
	Name    string `db:"name"`
	IsAdmin bool   `db:"is_admin"`
}

// Node is an authenticated agent's host.
type Node struct {
	ID   string `db:"id"`
	Name string `db:"name"`
}

// newToken returns a fresh secret and its hash. Tokens carry 256 random bits,
// so a plain SHA-256 is a safe, fast, indexable hash (no password stretching
// needed).
func newToken(prefix string) (string, []byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", nil, err
	}
	tok := prefix + base64.RawURLEncoding.EncodeToString(b)
	return tok, hashToken(tok), nil
}

func hashToken(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

// CreateUser adds a user and returns it with its token, shown only now.
func (s *Store) CreateUser(ctx context.Context, name string, admin bool) (User, string, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	tok, hash, err := newToken(userTokenPrefix)
	if err != nil {
		return User{}, "", err
	}
	u := User{ID: uuid.NewString(), Name: name, IsAdmin: admin}
	_, err = s.db.ExecContext(ctx, `INSERT INTO users (id, name, token_hash, is_admin) VALUES ($1, $2, $3, $4)`,
		u.ID, name, hash, admin)
	if err != nil {
		return User{}, "", fmt.Errorf("create user %q: %w", name, interpretError(err))
	}
	return u, tok, nil
}

// CreateNode adds a node (one agent's identity) and returns its token.
func (s *Store) CreateNode(ctx context.Context, name string) (Node, string, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	tok, hash, err := newToken(nodeTokenPrefix)
	if err != nil {
		return Node{}, "", err
	}
	n := Node{ID: uuid.NewString(), Name: name}
	_, err = s.db.ExecContext(ctx, `INSERT INTO nodes (id, name, token_hash) VALUES ($1, $2, $3)`, n.ID, name, hash)
	if err != nil {
		return Node{}, "", fmt.Errorf("create node %q: %w", name, interpretError(err))
	}
	return n, tok, nil
}

// userByTokenSQL finds an enabled user by token hash and keeps its
// last_seen_at, written at most once a minute so a busy user does not
// turn every lookup into a row update.
const userByTokenSQL = `
	WITH u AS (SELECT id, name, is_admin, last_seen_at FROM users WHERE token_hash = $1 AND disabled_at IS NULL),
	touch AS (
		UPDATE users SET last_seen_at = now() FROM u
		WHERE users.id = u.id AND (u.last_seen_at IS NULL OR u.last_seen_at < now() - interval '1 minute'))
	SELECT id, name, is_admin FROM u`

// UserByToken authenticates a user token; a disabled user is not found.
func (s *Store) UserByToken(ctx context.Context, tok string) (User, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var u User
	err := s.db.GetContext(ctx, &u, userByTokenSQL, hashToken(tok))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrNotFound
	}
	return u, interpretError(err)
}

// NodeByToken authenticates a node token; a revoked node is not found. It
// only reads: agents call on every heartbeat, and last_seen_at is kept by
// the inventory report and by each replica's flush of its agents' contacts
// (TouchNodes), never per request.
func (s *Store) NodeByToken(ctx context.Context, tok string) (Node, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var n Node
	err := s.db.GetContext(ctx, &n, `SELECT id, name FROM nodes WHERE token_hash = $1 AND revoked_at IS NULL`, hashToken(tok))
	if errors.Is(err, sql.ErrNoRows) {
		return Node{}, ErrNotFound
	}
	return n, interpretError(err)
}
