package store

import (
	"context"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// Container is one row of the inventory.
type Container struct {
	ID       string    `db:"id"`
	NodeID   string    `db:"node_id"`
	Name     string    `db:"name"`
	State    string    `db:"state"`
	LastSeen time.Time `db:"last_seen_at"`
}

// ReplaceInventory makes the node's containers exactly the given set: listed
// ones are upserted, the node's others removed. A container ID already owned
// by another node is left with that node and returned as rejected, so one
// agent cannot take over another host's container and receive its commands,
// and one duplicated ID does not block the rest of the node's inventory.
func (s *Store) ReplaceInventory(ctx context.Context, nodeID string, cs []Container) (rejected []string, err error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
	}
	err = s.WithTx(ctx, func(tx *sqlx.Tx) error {
		rejected = nil
		if err := tx.SelectContext(ctx, &rejected,
			`SELECT id FROM containers WHERE id = ANY($1::uuid[]) AND node_id <> $2 ORDER BY id`, pq.Array(ids), nodeID); err != nil {
			return interpretError(err)
		}
		taken := map[string]bool{}
		for _, id := range rejected {
			taken[id] = true
		}
		if _, err := tx.ExecContext(ctx,
			`DELETE FROM containers WHERE node_id = $1 AND NOT (id = ANY($2::uuid[]))`, nodeID, pq.Array(ids)); err != nil {
			return interpretError(err)
		}
		for _, c := range cs {
			if taken[c.ID] {
				continue
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO containers (id, node_id, name, state, last_seen_at)
				VALUES ($1, $2, $3, $4, now())
				ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, state = EXCLUDED.state, last_seen_at = now()`,
				c.ID, nodeID, c.Name, c.State); err != nil {
				return interpretError(err)
			}
		}
		_, err := tx.ExecContext(ctx, `UPDATE nodes SET last_seen_at = now() WHERE id = $1`, nodeID)
		return interpretError(err)
	})
	return rejected, err
}

// ListContainers returns every reported container, by node then name.
func (s *Store) ListContainers(ctx context.Context) ([]Container, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	cs := []Container{}
	err := s.db.SelectContext(ctx, &cs,
		`SELECT id, node_id, name, state, last_seen_at FROM containers ORDER BY node_id, name, id`)
	return cs, interpretError(err)
}
