package store

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/lib/pq"

	"github.com/execq/execq/shared"
)

// TestReportsInFewStatements: an agent's heartbeat and finish each cost at
// most two statements — a read of the row and one conditional write — and
// no BEGIN/COMMIT round trips with the row locked in between.
func TestReportsInFewStatements(t *testing.T) {
	t.Parallel()
	f := setup(t)
	st, counter := f.counted(t)
	var err error

	c := f.running()
	n := counter.statements(func() {
		_, err = st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, []shared.Chunk{chunk("stdout", 0, "out")}, testTTL, testCap)
	})
	if err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	if n > 2 {
		t.Errorf("a heartbeat with output took %d statements, want at most 2", n)
	}
	code := 0
	n = counter.statements(func() {
		_, err = st.Finish(f.ctx, c.ID, f.node.ID, shared.FinishRequest{Attempt: c.Attempt, ExitCode: &code,
			Chunks: []shared.Chunk{chunk("stdout", 3, "put"), chunk("stderr", 0, "err")}, StdoutLength: 6, StderrLength: 3}, testCap)
	})
	if err != nil {
		t.Fatalf("finish: %v", err)
	}
	if n > 2 {
		t.Errorf("a finish with output took %d statements, want at most 2", n)
	}
	got := f.get(c.ID)
	if string(got.Stdout) != "output" || string(got.Stderr) != "err" || got.Status != shared.StatusSucceeded {
		t.Errorf("record: status %s, stdout %q, stderr %q; want succeeded, \"output\", \"err\"", got.Status, got.Stdout, got.Stderr)
	}
}

// TestReportsFindRowsByKey: the statements of every start, heartbeat and
// finish find their rows by primary key, also when the statistics lag
// behind a burst of live leases. Given a constant status and
// "lease_expires_at > now()", the planner took the partial index of live
// leases instead and read every live lease to start one command.
func TestReportsFindRowsByKey(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec(`ALTER TABLE commands SET (autovacuum_enabled = false)`)
	f.exec(`INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status,
			created_at, attempt, started_at, finished_at, exit_code)
		SELECT gen_random_uuid(), $1, $2, $3, 'true', '{}', 'succeeded',
			now() - interval '1 day' + i * interval '1 ms', 1, now() - interval '1 day', now() - interval '1 day', 0
		FROM generate_series(1, 20000) AS i`, f.container, f.node.ID, f.user.ID)
	leased := f.enqueue("true")
	f.claimOne()
	c := f.running()
	f.exec(`ANALYZE commands`)
	f.exec(`ANALYZE command_chunks`)
	// The burst, after the statistics were taken: live leases, queued and
	// running, with chunks.
	for _, status := range []string{"queued", "running"} {
		f.exec(`INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status,
				attempt, leased_by, lease_expires_at, started_at)
			SELECT gen_random_uuid(), $1, $2, $3, 'true', '{}', $4,
				1, $2, now() + interval '1 minute', CASE WHEN $4 = 'running' THEN now() END
			FROM generate_series(1, 5000) AS i`, f.container, f.node.ID, f.user.ID, status)
	}
	f.exec(`INSERT INTO command_chunks (command_id, stream, off, data)
		SELECT id, 1, 0, 'x' FROM commands WHERE status = 'running'`)

	cc := c
	parts, _, _, err := appendChunks(&cc, []shared.Chunk{chunk("stdout", 0, "x")}, testCap)
	if err != nil {
		t.Fatal(err)
	}
	var w reportWrites
	w.add(1, &cc, parts)
	appendArgs := append(w.args(), pq.Array([]bool{true}), pq.Array([]bool{true}), testTTL.Milliseconds())
	var fw finalWrites
	fw.add(1, &cc, parts, ending{status: shared.StatusSucceeded})
	for _, q := range []struct {
		name  string
		query string
		args  []any
	}{
		{"start", startSQL, []any{pq.Array([]string{leased.ID}), pq.Array([]string{f.node.ID}), pq.Array([]int64{1}),
			pq.Array([]string{"queued"}), testTTL.Milliseconds()}},
		{"read", reportRowsSQL, []any{pq.Array([]string{c.ID})}},
		{"append", appendSQL, append(appendArgs, w.chunkArgs()...)},
		{"finalize", finalizeSQL, fw.args()},
	} {
		t.Run(q.name, func(t *testing.T) {
			var raw []byte
			if err := f.st.db.QueryRowContext(f.ctx, `EXPLAIN (FORMAT JSON) `+q.query, q.args...).Scan(&raw); err != nil {
				t.Fatalf("explain: %v", err)
			}
			var plans []struct {
				Plan scanNode `json:"Plan"`
			}
			if err := json.Unmarshal(raw, &plans); err != nil || len(plans) != 1 {
				t.Fatalf("explain output %s: %v", raw, err)
			}
			for table, key := range map[string]string{"commands": "commands_pkey", "command_chunks": "command_chunks_pkey"} {
				if other := plans[0].Plan.notBy(table, key); len(other) > 0 {
					t.Errorf("plan reads %s otherwise than by %s (%s):\n%s", table, key, strings.Join(other, "; "), raw)
				}
			}
		})
	}
}

// scanNode is one node of EXPLAIN (FORMAT JSON) output with what it scans.
type scanNode struct {
	NodeType  string     `json:"Node Type"`
	Relation  string     `json:"Relation Name"`
	IndexName string     `json:"Index Name"`
	Plans     []scanNode `json:"Plans"`
}

// notBy lists the scans of relation that do not go through index key: a
// sequential scan, or another index (a bitmap scan names its index in its
// child).
func (n scanNode) notBy(relation, key string) []string {
	var found []string
	switch {
	case n.Relation != relation || n.NodeType == "ModifyTable":
	case n.NodeType == "Seq Scan":
		found = append(found, "Seq Scan on "+relation)
	case n.NodeType == "Bitmap Heap Scan":
		for _, c := range n.Plans {
			if c.IndexName != key {
				found = append(found, "Bitmap Index Scan using "+c.IndexName)
			}
		}
	case n.IndexName != key:
		found = append(found, n.NodeType+" using "+n.IndexName)
	}
	for _, c := range n.Plans {
		found = append(found, c.notBy(relation, key)...)
	}
	return found
}
