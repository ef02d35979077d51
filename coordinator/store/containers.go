package store

import (
	"context"
	"fmt"
	"time"

	"github.com/lib/pq"

	"github.com/execq/execq/shared"
)

// The reserved labels, as SQL literals.
const (
	labelNode      = shared.LabelNode
	labelContainer = shared.LabelContainer
)

// Container is one row of the inventory.
type Container struct {
	ID       string    `db:"id"`
	NodeID   string    `db:"node_id"`
	Name     string    `db:"name"`
	State    string    `db:"state"`
	LastSeen time.Time `db:"last_seen_at"`
	// Labels are the reported ones on the way in; read back they also hold
	// the reserved "node" and "container" the upsert sets.
	Labels Labels `db:"labels"`
}

// replaceInventorySQL makes node $1's containers exactly the reported set
// ($2 IDs, $3 names, $4 states, $5 labels as JSON objects, as parallel
// arrays) in one statement. The reserved labels are added last, so they
// win over anything reported: "node" is the node's name, from its identity,
// and "container" the ID.
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
		SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[]) AS r(id, name, state, labels)),
	upserted AS (
		INSERT INTO containers AS c (id, node_id, name, state, labels, last_seen_at)
		SELECT r.id, $1, r.name, r.state,
			r.labels::jsonb || jsonb_build_object('` + labelNode + `', n.name, '` + labelContainer + `', r.id::text), now()
		FROM reported r JOIN nodes n ON n.id = $1 ORDER BY r.id
		ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, state = EXCLUDED.state, labels = EXCLUDED.labels,
			last_seen_at = now()
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
	ids, names, states, labels := make([]string, len(cs)), make([]string, len(cs)), make([]string, len(cs)), make([]string, len(cs))
	for i, c := range cs {
		ids[i], names[i], states[i] = c.ID, c.Name, c.State
		js, err := c.Labels.Value()
		if err != nil {
			return nil, fmt.Errorf("replace inventory of node %s: labels of %s: %w", nodeID, c.ID, err)
		}
		labels[i] = js.(string)
	}
	err = s.db.SelectContext(ctx, &rejected, replaceInventorySQL, nodeID, pq.Array(ids), pq.Array(names), pq.Array(states), pq.Array(labels))
	if err != nil {
		return nil, fmt.Errorf("replace inventory of node %s: %w", nodeID, interpretError(err))
	}
	return rejected, nil
}

// ListContainers returns every reported container, by node then name,
// whoever may use it (VisibleContainers is what a user sees).
func (s *Store) ListContainers(ctx context.Context) ([]Container, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	cs := []Container{}
	err := s.db.SelectContext(ctx, &cs,
		`SELECT id, node_id, name, state, labels, last_seen_at FROM containers ORDER BY node_id, name, id`)
	return cs, interpretError(err)
}
