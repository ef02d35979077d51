package store

import (
	"context"
	"fmt"
	"time"

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

// replaceInventorySQL makes node $1's containers exactly the reported set
// ($2 IDs, $3 names, $4 states, as parallel arrays) in one statement.
//
// The ownership rule lives in the upsert's WHERE: a conflicting row is
// locked, then updated only if this node owns it, so a report racing another
// node's can neither overwrite nor steal a row, and whoever inserted first
// keeps it. IDs the upsert did not return are the refused ones. Rows are
// written in ID order so two overlapping reports lock them in the same order
// rather than deadlocking. The delete only ever touches this node's rows not
// in the report, which the upsert does not.
const replaceInventorySQL = `
	WITH reported AS (
		SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[]) AS r(id, name, state)),
	upserted AS (
		INSERT INTO containers AS c (id, node_id, name, state, last_seen_at)
		SELECT id, $1, name, state, now() FROM reported ORDER BY id
		ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, state = EXCLUDED.state, last_seen_at = now()
		WHERE c.node_id = EXCLUDED.node_id
		RETURNING c.id),
	dropped AS (
		DELETE FROM containers WHERE node_id = $1 AND NOT (id = ANY($2::uuid[]))),
	seen AS (
		UPDATE nodes SET last_seen_at = now() WHERE id = $1)
	SELECT id FROM reported WHERE id NOT IN (SELECT id FROM upserted) ORDER BY id`

// ReplaceInventory makes the node's containers exactly the given set: listed
// ones are upserted, the node's others removed. A container ID already owned
// by another node is left with that node and returned as rejected, so one
// agent cannot take over another host's container and receive its commands,
// and one duplicated ID does not block the rest of the node's inventory.
// IDs must be distinct (the API refuses a report listing one twice).
func (s *Store) ReplaceInventory(ctx context.Context, nodeID string, cs []Container) (rejected []string, err error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	ids, names, states := make([]string, len(cs)), make([]string, len(cs)), make([]string, len(cs))
	for i, c := range cs {
		ids[i], names[i], states[i] = c.ID, c.Name, c.State
	}
	err = s.db.SelectContext(ctx, &rejected, replaceInventorySQL, nodeID, pq.Array(ids), pq.Array(names), pq.Array(states))
	if err != nil {
		return nil, fmt.Errorf("replace inventory of node %s: %w", nodeID, interpretError(err))
	}
	return rejected, nil
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
