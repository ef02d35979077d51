package store

import (
	"testing"
	"time"
)

// TestPrune deletes terminal commands finished longer ago than the
// retention, in batches, with their chunks, and never a live or a recent one.
func TestPrune(t *testing.T) {
	t.Parallel()
	f := setup(t)
	seed := func(n int, status, finishedAgo string) {
		f.t.Helper()
		f.exec(`INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status,
				created_at, attempt, leased_by, started_at, finished_at, exit_code)
			SELECT gen_random_uuid(), $1, $2, $3, 'true', '{}', $4,
				now() - interval '2 days', 1,
				CASE WHEN $4 = 'running' THEN $2::uuid END,
				now() - interval '2 days',
				CASE WHEN $4 IN ('queued','running') THEN NULL ELSE now() - $5::interval END,
				CASE WHEN $4 = 'succeeded' THEN 0 END
			FROM generate_series(1, $6)`, f.container, f.node.ID, f.user.ID, status, finishedAgo, n)
	}
	// Old terminal rows of every kind, more than two batches of them.
	seed(5, "succeeded", "1 day")
	seed(4, "failed", "1 day")
	seed(3, "cancelled", "1 day")
	// Recent terminal rows, and live ones created long ago.
	seed(2, "succeeded", "1 minute")
	seed(2, "queued", "0")
	seed(2, "running", "0")
	// Output left in chunks of an old terminal row goes with it.
	f.exec(`INSERT INTO command_chunks (command_id, stream, off, data)
		SELECT id, 1, 0, 'x' FROM commands WHERE status = 'failed'`)

	count := func(q string) int {
		t.Helper()
		var n int
		if err := f.st.db.GetContext(f.ctx, &n, q); err != nil {
			t.Fatal(err)
		}
		return n
	}
	const limit = 5
	var batches []int64
	var from time.Time
	for {
		n, next, err := f.st.Prune(f.ctx, time.Hour, from, limit)
		if err != nil {
			t.Fatalf("prune: %v", err)
		}
		from = next
		batches = append(batches, n)
		if n < limit {
			break
		}
	}
	if want := []int64{5, 5, 2}; len(batches) != len(want) || batches[0] != 5 || batches[1] != 5 || batches[2] != 2 {
		t.Fatalf("batches deleted %v, want %v", batches, want)
	}
	if n := count(`SELECT count(*) FROM commands WHERE status IN ('succeeded','failed','cancelled') AND finished_at < now() - interval '1 hour'`); n != 0 {
		t.Errorf("%d old terminal commands left", n)
	}
	if n := count(`SELECT count(*) FROM command_chunks`); n != 0 {
		t.Errorf("%d chunks of pruned commands left", n)
	}
	for q, want := range map[string]int{
		`SELECT count(*) FROM commands WHERE status = 'succeeded'`: 2,
		`SELECT count(*) FROM commands WHERE status = 'queued'`:    2,
		`SELECT count(*) FROM commands WHERE status = 'running'`:   2,
	} {
		if n := count(q); n != want {
			t.Errorf("%s = %d, want %d", q, n, want)
		}
	}
	// Nothing is left to prune: another pass deletes nothing.
	if n, _, err := f.st.Prune(f.ctx, time.Hour, time.Time{}, limit); err != nil || n != 0 {
		t.Fatalf("second prune deleted %d, err %v", n, err)
	}
}

// TestPruneBatchReadsPastItsOwnDeletes: the pruner deletes the oldest
// terminal commands batch after batch, and every row it deletes leaves its
// entry in commands_finished_idx, dead, at the old end where the next batch
// starts reading — until a vacuum, which on a big table comes after a fifth
// of it is dead. A batch after 50,000 deletes must read the index about as
// much as the first batch did, not walk the dead entries of all the
// batches before it.
func TestPruneBatchReadsPastItsOwnDeletes(t *testing.T) {
	f := setup(t)
	f.seedHistory(60000)
	const retention, limit = time.Hour, 500
	indexBuffers := func(args ...any) int64 {
		t.Helper()
		plan, _ := f.explainAnalyze(t, pruneSQL, args...)
		scan, ok := plan.scanOf("commands_finished_idx")
		if !ok {
			t.Fatalf("prune does not read commands_finished_idx: %+v", plan)
		}
		return scan.Hit + scan.Read
	}
	first := indexBuffers(retention.Milliseconds(), limit, nil)
	var from time.Time
	for range 100 {
		n, next, err := f.st.Prune(f.ctx, retention, from, limit)
		if err != nil || n != limit {
			t.Fatalf("prune deleted %d, err %v", n, err)
		}
		from = next
	}
	after := indexBuffers(retention.Milliseconds(), limit, from)
	t.Logf("a batch of %d reads %d buffers of the index and its rows first, %d after 50,000 deletes", limit, first, after)
	if after > 2*first+20 {
		t.Errorf("a batch after 50,000 deletes reads %d buffers, the first %d: it walks the dead entries of the batches before it", after, first)
	}
}
