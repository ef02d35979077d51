package store

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
)

// TestPeriodicQueriesUseIndexes checks the plan of every query that runs on
// a timer or on every agent poll, on a table whose history dwarfs its live
// rows: none may read the whole commands table, or its cost grows with every
// command ever run, on every replica, every interval.
func TestPeriodicQueriesUseIndexes(t *testing.T) {
	f := setup(t)
	// Finished history: enough rows that a sequential scan is what the
	// planner picks when no index fits the query.
	f.exec(`INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status,
			created_at, attempt, started_at, finished_at, exit_code)
		SELECT gen_random_uuid(), $1, $2, $3, 'true', '{}', 'succeeded',
			now() - interval '1 day' + i * interval '1 ms', 1, now() - interval '1 day', now() - interval '1 day', 0
		FROM generate_series(1, 100000) AS i`, f.container, f.node.ID, f.user.ID)
	// A few live ones of every kind: queued, leased, leased and expired,
	// running, running and expired.
	for range 3 {
		f.enqueue("true")
	}
	f.claimOne()
	f.expireLease(f.claimOne().ID)
	f.running()
	f.expireLease(f.running().ID)
	f.exec(`ANALYZE commands`)

	for _, q := range []struct {
		name  string
		query string
		args  []any
	}{
		{"claim", claimSQL, []any{pq.Array([]string{f.node.ID}), pq.Array([]int64{10}), testTTL.Milliseconds()}},
		{"requeue expired", requeueExpiredSQL, nil},
		{"safety check", nodesWithWorkSQL, nil},
		{"fail lost", failLostSQL, []any{100, 10000}},
		{"queue stats", statsSQL, nil},
		{"pending cancels", pendingCancelsSQL, []any{f.node.ID}},
		{"timed out", timedOutSQL, []any{int64(1000), 100}},
		{"not picked up", notPickedUpSQL, []any{100}},
		{"prune", pruneSQL, []any{int64(time.Hour / time.Millisecond), 500}},
	} {
		t.Run(q.name, func(t *testing.T) {
			var raw []byte
			if err := f.st.db.QueryRowContext(f.ctx, `EXPLAIN (FORMAT JSON) `+q.query, q.args...).Scan(&raw); err != nil {
				t.Fatalf("explain: %v", err)
			}
			var plans []struct {
				Plan planNode `json:"Plan"`
			}
			if err := json.Unmarshal(raw, &plans); err != nil || len(plans) != 1 {
				t.Fatalf("explain output %s: %v", raw, err)
			}
			if seq := plans[0].Plan.seqScans("commands"); len(seq) > 0 {
				t.Errorf("plan reads the whole commands table (%s):\n%s", strings.Join(seq, "; "), raw)
			}
		})
	}
}

// planNode is one node of EXPLAIN (FORMAT JSON) output; CTEs, init plans and
// sub plans are children in Plans like any other input.
type planNode struct {
	NodeType  string     `json:"Node Type"`
	Relation  string     `json:"Relation Name"`
	Alias     string     `json:"Alias"`
	IndexName string     `json:"Index Name"`
	IndexCond string     `json:"Index Cond"`
	Plans     []planNode `json:"Plans"`
}

// indexConds lists "index: condition" of every index scan in the tree.
func (n planNode) indexConds() []string {
	var found []string
	if n.IndexName != "" {
		found = append(found, n.IndexName+": "+n.IndexCond)
	}
	for _, c := range n.Plans {
		found = append(found, c.indexConds()...)
	}
	return found
}

// seqScans lists the sequential scans of relation anywhere in the tree.
func (n planNode) seqScans(relation string) []string {
	var found []string
	if n.NodeType == "Seq Scan" && n.Relation == relation {
		found = append(found, "Seq Scan on "+n.Relation+" "+n.Alias)
	}
	for _, c := range n.Plans {
		found = append(found, c.seqScans(relation)...)
	}
	return found
}

// TestClaimSeeksItsNodeWithStaleStatistics: on a big table the statistics
// are nearly always those of an empty queue — autovacuum analyzes a table
// again only once a tenth of it changed, and live rows are a sliver of a
// long history — while a backlog may be queued right now ("run this on
// every host"). Every agent poll's claim must then still seek its node's
// rows (commands_queue_idx, on node_id), not read every queued command of
// every node through an index the planner, believing the queue empty, finds
// just as cheap: that made each claim cost the whole backlog on a table of
// 5 million finished rows, and not on an empty one.
//
// The reaper's scans (expired leases and deadlines, once per interval per
// replica) may still read all live rows of their status under such
// statistics: bounded by the live queue, not by the history.
func TestClaimSeeksItsNodeWithStaleStatistics(t *testing.T) {
	f := setup(t)
	f.exec(`INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status,
			created_at, attempt, started_at, finished_at, exit_code)
		SELECT gen_random_uuid(), $1, $2, $3, 'true', '{}', 'succeeded',
			now() - interval '1 day' + i * interval '1 ms', 1, now() - interval '1 day', now() - interval '1 day', 0
		FROM generate_series(1, 100000) AS i`, f.container, f.node.ID, f.user.ID)
	f.exec(`ANALYZE commands`)
	// After the statistics: 200 nodes with 10 queued commands each, a
	// third of them leased, and a few of the fixture's node.
	f.exec(`INSERT INTO nodes (id, name, token_hash)
		SELECT gen_random_uuid(), 'stale-' || i, sha256(('stale-' || i)::bytea) FROM generate_series(1, 200) AS i`)
	f.exec(`INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status, created_at,
			attempt, leased_by, lease_expires_at)
		SELECT gen_random_uuid(), gen_random_uuid(), n.id, $1, 'true', '{}', 'queued', now() - g * interval '1 ms',
			CASE WHEN g % 3 = 0 THEN 1 ELSE 0 END, CASE WHEN g % 3 = 0 THEN n.id END,
			CASE WHEN g % 3 = 0 THEN now() + interval '1 minute' END
		FROM (SELECT id FROM nodes WHERE name LIKE 'stale-%') AS n, generate_series(1, 10) AS g`, f.user.ID)
	for range 3 {
		f.enqueue("true")
	}

	var raw []byte
	if err := f.st.db.QueryRowContext(f.ctx, `EXPLAIN (FORMAT JSON) `+claimSQL, pq.Array([]string{f.node.ID}), pq.Array([]int64{4}), testTTL.Milliseconds()).Scan(&raw); err != nil {
		t.Fatalf("explain: %v", err)
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(raw, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("explain output %s: %v", raw, err)
	}
	conds := plans[0].Plan.indexConds()
	for _, c := range conds {
		if strings.Contains(c, "node_id") {
			return
		}
	}
	t.Errorf("the claim does not seek its node: it reads every queued command (index conditions: %q):\n%s", conds, raw)
}
