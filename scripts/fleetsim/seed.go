package main

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// seedBatch is how many rows one INSERT of the seed writes: one transaction
// each, so a long seed shows progress and never holds one huge transaction.
const seedBatch = 250_000

// seedSQL writes finished commands $1..$2 of $3 in all: what a long-lived
// installation's history looks like. Every row is terminal (succeeded, one
// in fifty failed) with a few bytes of output, spread over the last 7 days
// (well inside the coordinator's default 30-day retention, so the pruner
// leaves them alone during the run), over the fleet's nodes and a few
// containers per node, all submitted by the run's user. IDs are random, as
// the coordinator's are.
const seedSQL = `
	INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status,
		created_at, attempt, leased_by, started_at, finished_at, exit_code, end_reason,
		stdout, stdout_len)
	SELECT gen_random_uuid(), md5(n.ids[1 + i % n.cnt]::text || (i / n.cnt) % 4)::uuid, n.ids[1 + i % n.cnt], u.id,
		'true', '{}', CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'succeeded' END,
		t.at, 1, n.ids[1 + i % n.cnt], t.at + interval '5 ms', t.at + interval '20 ms',
		CASE WHEN i % 50 = 0 THEN 1 ELSE 0 END, 'exited', '\x6f6b0a'::bytea, 3
	FROM generate_series($1::bigint, $2::bigint) AS i,
		(SELECT array_agg(id ORDER BY id) AS ids, count(*) AS cnt FROM nodes) AS n,
		(SELECT id FROM users WHERE name = 'fleetsim') AS u,
		LATERAL (SELECT now() - interval '7 days' + i * (interval '7 days' / $3::bigint) AS at) AS t`

// secondaryIndexesSQL lists the commands table's indexes that no
// constraint owns (all but the primary key), with their definitions.
const secondaryIndexesSQL = `
	SELECT i.indexname, i.indexdef FROM pg_indexes i
	WHERE i.schemaname = current_schema() AND i.tablename = 'commands'
		AND NOT EXISTS (SELECT 1 FROM pg_constraint c
			WHERE c.conrelid = 'commands'::regclass AND c.conname = i.indexname)`

// seed fills the run's job table with rows finished commands (between two
// measured passes: the agents are stopped, the replicas idle), then VACUUM
// ANALYZEs it: the planner sees the table as
// it is, and autovacuum, which 5 million fresh rows would otherwise set off
// in the middle of the measured window, has nothing left to do. It is the
// steady state of a table that grew over time, reached in minutes: the
// secondary indexes are dropped for the load and built again after it from
// the definitions the migrations gave them (one sort each instead of
// millions of random B-tree inserts), as a bulk load does.
func (f *fleet) seed(ctx context.Context, rows int64) error {
	db, err := sql.Open("postgres", f.cl.urlFor(f.dbName))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // one session, so its settings hold throughout
	// The rows reference nodes and a user that exist by construction:
	// session_replication_role = replica skips the three foreign-key
	// triggers per row (as a restore does), which are most of an INSERT's
	// cost here. It needs a superuser, as the admin URL is.
	for _, q := range []string{`SET maintenance_work_mem = '256MB'`, `SET session_replication_role = replica`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	type index struct{ name, def string }
	var indexes []index
	res, err := db.QueryContext(ctx, secondaryIndexesSQL)
	if err != nil {
		return err
	}
	for res.Next() {
		var ix index
		if err := res.Scan(&ix.name, &ix.def); err != nil {
			res.Close()
			return err
		}
		indexes = append(indexes, ix)
	}
	if err := res.Err(); err != nil {
		return err
	}
	for _, ix := range indexes {
		if _, err := db.ExecContext(ctx, `DROP INDEX `+pq.QuoteIdentifier(ix.name)); err != nil {
			return fmt.Errorf("drop index %s for the seed: %w", ix.name, err)
		}
	}
	t0 := time.Now()
	for from := int64(1); from <= rows; from += seedBatch {
		to := min(from+seedBatch-1, rows)
		if _, err := db.ExecContext(ctx, seedSQL, from, to, rows); err != nil {
			return fmt.Errorf("seed rows %d..%d: %w", from, to, err)
		}
		fmt.Printf("\rseeding: %d of %d finished commands (%.0fs)", to, rows, time.Since(t0).Seconds())
	}
	fmt.Println()
	for _, ix := range indexes {
		if _, err := db.ExecContext(ctx, ix.def); err != nil {
			return fmt.Errorf("rebuild index %s after the seed: %w", ix.name, err)
		}
	}
	fmt.Printf("seed: rebuilt %d indexes (%.0fs)\n", len(indexes), time.Since(t0).Seconds())
	if _, err := db.ExecContext(ctx, `VACUUM (ANALYZE) commands`); err != nil {
		return fmt.Errorf("vacuum analyze after the seed: %w", err)
	}
	var size string
	if err := db.QueryRowContext(ctx, `SELECT pg_size_pretty(pg_total_relation_size('commands'))`).Scan(&size); err != nil {
		return err
	}
	fmt.Printf("seeded %d finished commands in %.0fs (commands table with indexes: %s)\n", rows, time.Since(t0).Seconds(), size)
	return nil
}
