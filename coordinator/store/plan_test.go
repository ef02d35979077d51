package store

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/execq/execq/shared"
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
		{"prune", pruneSQL, []any{int64(time.Hour / time.Millisecond), 500, nil}},
	} {
		t.Run(q.name, func(t *testing.T) { f.wantNoSeqScan(t, q.query, q.args...) })
	}
}

// explain returns the plan PostgreSQL would run query with, and its JSON.
func (f *fixture) explain(t testing.TB, query string, args ...any) (planNode, []byte) {
	t.Helper()
	var raw []byte
	if err := f.st.db.QueryRowContext(f.ctx, `EXPLAIN (FORMAT JSON) `+query, args...).Scan(&raw); err != nil {
		t.Fatalf("explain: %v", err)
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(raw, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("explain output %s: %v", raw, err)
	}
	return plans[0].Plan, raw
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
	// Shared buffers the node and its inputs touched (EXPLAIN ANALYZE
	// with BUFFERS only).
	Hit  int64 `json:"Shared Hit Blocks"`
	Read int64 `json:"Shared Read Blocks"`
}

// scanOf returns the first scan through index in the tree.
func (n planNode) scanOf(index string) (planNode, bool) {
	if n.IndexName == index {
		return n, true
	}
	for _, c := range n.Plans {
		if s, ok := c.scanOf(index); ok {
			return s, true
		}
	}
	return planNode{}, false
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
// rows (commands_live_node_idx, on node_id), not read every queued command of
// every node through an index the planner, believing the queue empty, finds
// just as cheap: that made each claim cost the whole backlog on a table of
// 5 million finished rows, and not on an empty one.
//
// The reaper's scans (expired leases and deadlines, once per interval per
// replica) read the live rows of every node under such statistics: bounded
// by the live queue, not by the history (TestPeriodicQueriesReadOnlyLiveIndexes,
// TestPeriodicQueriesReadLiveRowsAfterChurn).
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

	plan, raw := f.explain(t, claimSQL, pq.Array([]string{f.node.ID}), pq.Array([]int64{4}), testTTL.Milliseconds())
	conds := plan.indexConds()
	for _, c := range conds {
		if strings.Contains(c, "node_id") {
			return
		}
	}
	t.Errorf("the claim does not seek its node: it reads every queued command (index conditions: %q):\n%s", conds, raw)
}

// periodicQuery is a statement that runs on a timer (reaper, pruner, safety
// check, metrics scrape) or on every agent poll, with arguments that make it
// do its usual work.
type periodicQuery struct {
	name  string
	query string
	args  []any
	// terminal: the query reads finished rows (retention), not live ones.
	terminal bool
}

// periodicQueries lists them for the fixture's node.
func (f *fixture) periodicQueries() []periodicQuery {
	return []periodicQuery{
		{name: "claim", query: claimSQL, args: []any{pq.Array([]string{f.node.ID}), pq.Array([]int64{4}), testTTL.Milliseconds()}},
		{name: "requeue expired", query: requeueExpiredSQL},
		{name: "safety check", query: nodesWithWorkSQL},
		{name: "fail lost", query: failLostSQL, args: []any{100, 10000}},
		{name: "timed out", query: timedOutSQL, args: []any{int64(1000), 100}},
		{name: "not picked up", query: notPickedUpSQL, args: []any{100}},
		{name: "queue stats", query: statsSQL},
		{name: "pending cancels", query: pendingCancelsSQL, args: []any{f.node.ID}},
		{name: "prune", query: pruneSQL, args: []any{int64(time.Hour / time.Millisecond), 500, nil}, terminal: true},
	}
}

// seedHistory adds a fleet of 500 nodes and n finished commands spread
// over them, created and finished over the day before, then VACUUM
// ANALYZEs the table as a bulk load (or fleetsim's seed) leaves it: from
// here on the statistics are those of a table with no live row at all, and
// autovacuum, which analyzes a table again only once a tenth of it changed,
// is turned off for it so they stay so and no vacuum tidies the indexes
// behind the test's back.
func (f *fixture) seedHistory(n int) {
	f.t.Helper()
	f.exec(`INSERT INTO nodes (id, name, token_hash)
		SELECT gen_random_uuid(), 'fleet-' || i, sha256(('fleet-' || i)::bytea) FROM generate_series(1, 500) AS i`)
	f.exec(`INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status,
			created_at, attempt, leased_by, started_at, finished_at, exit_code, end_reason)
		SELECT gen_random_uuid(), $1, n.ids[1 + i % 500], $2, 'true', '{}', 'succeeded',
			now() - interval '1 day' + i * interval '1 ms', 1, n.ids[1 + i % 500], now() - interval '1 day' + i * interval '1 ms',
			now() - interval '1 day' + i * interval '1 ms', 0, 'exited'
		FROM generate_series(1, $3::int) AS i,
			(SELECT array_agg(id) AS ids FROM nodes WHERE name LIKE 'fleet-%') AS n`, f.container, f.user.ID, n)
	f.exec(`ALTER TABLE commands SET (autovacuum_enabled = false)`)
	f.exec(`VACUUM ANALYZE commands`)
}

// addLiveRows adds, after the statistics, the live queue of a busy fleet:
// each of the first nodes fleet nodes gets 2 queued commands, 1 leased, 1 leased whose lease
// expired, 1 running and 1 running whose lease expired (half of them with
// queue and run deadlines, some passed), and the fixture's node 2 queued
// and 2 running, one of them with a cancel request. It returns how many
// live rows there are.
func (f *fixture) addLiveRows(nodes int) int {
	f.t.Helper()
	f.exec(`INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status, created_at,
			attempt, leased_by, lease_expires_at, started_at, queue_deadline, run_deadline)
		SELECT gen_random_uuid(), gen_random_uuid(), n.id, $1, 'true', '{}',
			CASE WHEN g <= 4 THEN 'queued' ELSE 'running' END, now() - g * interval '1 s',
			CASE WHEN g >= 3 THEN 1 ELSE 0 END, CASE WHEN g >= 3 THEN n.id END,
			CASE WHEN g >= 3 THEN now() + CASE WHEN g IN (4, 6) THEN -interval '1 minute' ELSE interval '1 minute' END END,
			CASE WHEN g >= 5 THEN now() END,
			CASE WHEN g % 2 = 0 THEN now() + CASE WHEN n.i % 10 = 0 THEN -interval '1 s' ELSE interval '1 hour' END END,
			CASE WHEN g = 6 THEN now() + CASE WHEN n.i % 10 = 0 THEN -interval '1 hour' ELSE interval '1 hour' END END
		FROM (SELECT id, row_number() OVER (ORDER BY name) AS i FROM nodes WHERE name LIKE 'fleet-%' ORDER BY name LIMIT $2) AS n,
			generate_series(1, 6) AS g`, f.user.ID, nodes)
	for range 2 {
		f.enqueue("true")
		f.running()
	}
	f.exec(`UPDATE commands SET cancel_requested_at = now(), cancel_requested_by = $1, cancel_grace_seconds = 5
		WHERE id = (SELECT id FROM commands WHERE node_id = $2 AND status = 'running' LIMIT 1)`, f.user.ID, f.node.ID)
	return nodes*6 + 4
}

// liveIndexes names the partial indexes of commands whose predicate admits
// only live rows (it names statuses, and none of the terminal ones), and
// terminalIndexes those that admit only terminal rows.
func (f *fixture) liveIndexes() (live, terminal map[string]bool) {
	f.t.Helper()
	var rows []struct {
		Name string `db:"name"`
		Pred string `db:"pred"`
	}
	if err := f.st.db.SelectContext(f.ctx, &rows, `
		SELECT c.relname AS name, pg_get_expr(i.indpred, i.indrelid) AS pred
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid = 'commands'::regclass AND i.indpred IS NOT NULL`); err != nil {
		f.t.Fatal(err)
	}
	live, terminal = map[string]bool{}, map[string]bool{}
	for _, r := range rows {
		hasLive := strings.Contains(r.Pred, "'queued'") || strings.Contains(r.Pred, "'running'")
		hasTerminal := strings.Contains(r.Pred, "'succeeded'") || strings.Contains(r.Pred, "'failed'") || strings.Contains(r.Pred, "'cancelled'")
		switch {
		case hasLive && !hasTerminal:
			live[r.Name] = true
		case hasTerminal && !hasLive:
			terminal[r.Name] = true
		}
	}
	return live, terminal
}

// commandsScans lists every scan of commands in the tree (not the
// statement's own update or delete of the rows it found).
func (n planNode) commandsScans() []planNode {
	var found []planNode
	if n.Relation == "commands" && n.NodeType != "ModifyTable" {
		found = append(found, n)
	}
	for _, c := range n.Plans {
		found = append(found, c.commandsScans()...)
	}
	return found
}

// explainAnalyze runs query under EXPLAIN (ANALYZE, BUFFERS) in a
// transaction it rolls back, so the statement does its work (it locks,
// updates, deletes) without changing anything, and returns the plan's root
// with the shared buffers its execution touched.
func (f *fixture) explainAnalyze(t *testing.T, query string, args ...any) (planNode, int64) {
	t.Helper()
	tx, err := f.st.db.BeginTxx(f.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	var raw []byte
	if err := tx.QueryRowContext(f.ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+query, args...).Scan(&raw); err != nil {
		t.Fatalf("explain analyze: %v", err)
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(raw, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("explain output %s: %v", raw, err)
	}
	return plans[0].Plan, plans[0].Plan.Hit + plans[0].Plan.Read
}

// TestPeriodicQueriesReadOnlyLiveIndexes: on a big table whose statistics
// say the queue is empty (the usual state: autovacuum analyzes again only
// once a tenth of the table changed) while a busy fleet's queue is live,
// every periodic query reads commands only through a partial index of live
// rows (retention: of terminal rows), never through an index of the whole
// history. An index over all rows that leads with status
// (commands_history_status_idx) looks as cheap to the planner as the
// partial ones under such statistics, and its 'queued' and 'running' ranges
// hold an entry for every version of every command that ever passed
// through them until a vacuum removes it: on a table of 5 million finished
// rows the reaper read 102 buffers per job through it against 8 on an empty
// one.
func TestPeriodicQueriesReadOnlyLiveIndexes(t *testing.T) {
	f := setup(t)
	f.seedHistory(200000)
	f.addLiveRows(500)
	live, terminal := f.liveIndexes()
	queries := f.periodicQueries()
	// Not periodic, but a screen of running commands may poll it: history
	// filtered by a live status reads the live rows and sorts them (0012
	// left commands_history_status_idx terminal rows only).
	for _, st := range []shared.Status{shared.StatusQueued, shared.StatusRunning} {
		queries = append(queries, periodicQuery{name: "history " + string(st), query: historySQL,
			args: historyArgs(HistoryFilter{Status: st, Limit: 51})})
	}
	for _, q := range queries {
		t.Run(q.name, func(t *testing.T) {
			plan, _ := f.explainAnalyze(t, q.query, q.args...)
			scans := plan.commandsScans()
			if len(scans) == 0 {
				t.Fatalf("plan reads no commands index: %+v", plan)
			}
			for _, s := range scans {
				if s.IndexName == "commands_pkey" && strings.HasPrefix(s.IndexCond, "(id = ") {
					continue // the rows found, locked, updated or deleted by ID
				}
				if q.terminal && !terminal[s.IndexName] || !q.terminal && !live[s.IndexName] {
					t.Errorf("%s on commands %s (%s): not a partial index of %s rows",
						s.NodeType, s.IndexName, s.IndexCond, map[bool]string{true: "terminal", false: "live"}[q.terminal])
				}
			}
		})
	}
}

// churn takes commands through their whole life, as a busy fleet does,
// with no vacuum: steps of size commands over the fleet's nodes, each step
// submitting one batch, claiming the one before, starting the one before
// that, sending a heartbeat for the next and finishing the oldest, in the
// past (two hours ago, a second per step: every lease and deadline has
// passed), and running every periodic query after each step as the reaper,
// the safety check and the scrapes do between them. Every version a
// transition leaves behind stays in the indexes it was entered in until a
// vacuum removes it.
func (f *fixture) churn(t *testing.T, steps, size int) {
	t.Helper()
	// No autovacuum in this database while it churns: an automatic ANALYZE
	// of any of its tables (churn itself fills fast) holds a snapshot, and
	// while it does no scan may mark the entries of dead versions as dead,
	// so the buffers read would measure the collector's timing (seen under
	// the whole suite's load), not the indexes. Vacuum never runs here on
	// purpose; the periodic queries' own scans are what clean the indexes.
	f.exec(`DO $$DECLARE r record; BEGIN
		FOR r IN SELECT c.oid::regclass AS t FROM pg_class c WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace LOOP
			EXECUTE format('ALTER TABLE %s SET (autovacuum_enabled = false)', r.t);
		END LOOP; END$$`)
	f.exec(`CREATE TABLE churn (id uuid PRIMARY KEY, step int NOT NULL) WITH (autovacuum_enabled = false)`)
	f.exec(`CREATE INDEX ON churn (step)`)
	at := `now() - interval '2 hours' + $1 * interval '1 second'`
	for k := 1; k <= steps+4; k++ {
		if k <= steps {
			f.exec(`INSERT INTO churn (id, step)
				SELECT gen_random_uuid(), $1 FROM generate_series(1, $2::int)`, k, size)
			f.exec(`INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status, created_at, queue_deadline, timeout_seconds)
				SELECT c.id, gen_random_uuid(), n.ids[1 + (row_number() OVER ()) % 500], $2, 'true', '{}', 'queued', `+at+`,
					`+at+` + interval '1 minute', 60
				FROM churn c, (SELECT array_agg(id) AS ids FROM nodes WHERE name LIKE 'fleet-%') AS n
				WHERE c.step = $1`, k, f.user.ID)
		}
		f.exec(`UPDATE commands SET attempt = attempt + 1, leased_by = node_id, lease_expires_at = `+at+` + interval '15 s'
			WHERE id IN (SELECT id FROM churn WHERE step = $1 - 1)`, k)
		f.exec(`UPDATE commands SET status = 'running', started_at = `+at+`, lease_expires_at = `+at+` + interval '15 s',
				run_deadline = `+at+` + interval '1 minute'
			WHERE id IN (SELECT id FROM churn WHERE step = $1 - 2)`, k)
		f.exec(`UPDATE commands SET lease_expires_at = `+at+` + interval '15 s', stdout_len = stdout_len + 3
			WHERE id IN (SELECT id FROM churn WHERE step = $1 - 3)`, k)
		f.exec(`UPDATE commands SET status = 'succeeded', leased_by = NULL, lease_expires_at = NULL,
				finished_at = `+at+`, exit_code = 0, end_reason = 'exited'
			WHERE id IN (SELECT id FROM churn WHERE step = $1 - 4)`, k)
		f.flushWAL()
		f.waitForOlderTransactions()
		for _, q := range f.periodicQueries() {
			f.explainAnalyze(t, q.query, q.args...)
		}
	}
}

// waitForOlderTransactions waits (up to 30 s) until every transaction of
// the cluster that began before now has ended. An index scan may mark an
// entry dead only once the version's deleter is older than every
// transaction still running, in any database of the cluster (a snapshot's
// xmin is cluster-wide), and the test cluster is shared with the other
// packages' tests: without the wait the marks depend on what they run.
// The coordinator's own periodic queries mark the entries on their next
// passes the same way.
func (f *fixture) waitForOlderTransactions() {
	f.t.Helper()
	var now string
	if err := f.st.db.GetContext(f.ctx, &now, `SELECT pg_current_xact_id()::text`); err != nil {
		f.t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var past bool
		if err := f.st.db.GetContext(f.ctx, &past, `SELECT pg_snapshot_xmin(pg_current_snapshot()) > $1::xid8`, now); err != nil {
			f.t.Fatal(err)
		}
		if past {
			return
		}
	}
	f.t.Logf("transactions older than %s still running after 30 s", now)
}

// flushWAL commits synchronously, which flushes all WAL written before,
// as every commit of a durable server does. The cluster of `make test`
// commits asynchronously (fast mode), and until the WAL holding a
// transaction's commit is flushed no scan may set its hint bits, so no
// index scan can tell the row versions it ended are dead and mark their
// entries: the churn's updates would look like those of a transaction
// still running.
func (f *fixture) flushWAL() {
	f.t.Helper()
	tx, err := f.st.db.BeginTx(f.ctx, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck
	if _, err := tx.ExecContext(f.ctx, `SET LOCAL synchronous_commit = on`); err != nil {
		f.t.Fatal(err)
	}
	if _, err := tx.ExecContext(f.ctx, `SELECT pg_logical_emit_message(true, 'execq.test', '')`); err != nil {
		f.t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		f.t.Fatal(err)
	}
}

// TestPeriodicQueriesReadLiveRowsAfterChurn: every periodic query reads in
// proportion to the live queue, not to the commands that went through it
// since the last vacuum. Each transition (submit, claim, start, heartbeat,
// finish) enters a new version of the row in the indexes, and the one it
// replaces stays there, dead, until a vacuum — which on a big table comes
// rarely (autovacuum waits for a fifth of the table to be dead) and may
// skip the indexes (it does when under 2 % of the table's pages have dead
// rows). An index whose order puts those dead entries where a periodic
// query reads — any index ordered by status then time, or by a lease or
// deadline time, whose past every superseded version falls into — makes
// that query's cost grow with the churn. So each query runs on the same
// small live queue twice, before and after 20,000 commands went through
// their life (about 80,000 dead versions), and may read at most about
// twice as many buffers after it, whatever the statistics say.
func TestPeriodicQueriesReadLiveRowsAfterChurn(t *testing.T) {
	f := setup(t)
	f.seedHistory(200000)
	live := f.addLiveRows(50)
	before := map[string]int64{}
	for _, q := range f.periodicQueries() {
		_, before[q.name] = f.explainAnalyze(t, q.query, q.args...)
	}
	f.churn(t, 40, 500)
	check := func(stats string) {
		for _, q := range f.periodicQueries() {
			t.Run(q.name+" "+stats, func(t *testing.T) {
				plan, after := f.explainAnalyze(t, q.query, q.args...)
				var used []string
				for _, s := range plan.commandsScans() {
					used = append(used, s.NodeType+" "+s.IndexName)
				}
				t.Logf("%d live rows: %d buffers before the churn, %d after (%q)", live, before[q.name], after, used)
				if after > 2*before[q.name]+100 {
					t.Errorf("reads %d buffers after the churn, %d before: its cost follows the dead versions, not the live rows (%q)",
						after, before[q.name], used)
				}
			})
		}
	}
	check("stale statistics")
	f.exec(`ANALYZE commands`)
	check("fresh statistics")
}
