package app_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/coordinator/reaper"
	"github.com/execq/execq/shared"
)

// seedOld inserts n succeeded commands of alice on node A that finished two
// days ago: history past any retention the tests set.
func (b *bundle) seedOld(n int) {
	b.t.Helper()
	_, err := b.DB.Exec(`INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status,
			created_at, attempt, started_at, finished_at, exit_code)
		SELECT gen_random_uuid(), $1, $2, $3, 'true', '{}', 'succeeded',
			now() - interval '3 days', 1, now() - interval '3 days', now() - interval '2 days', 0
		FROM generate_series(1, $4)`, b.NodeA.Container, b.NodeA.ID, b.Alice.ID, n)
	if err != nil {
		b.t.Fatalf("seed old commands: %v", err)
	}
}

// TestRetentionPrunesOldCommands runs a replica whose pruner ticks often with
// a one-hour retention: terminal commands that finished before it are
// deleted with their chunks, over more than one batch, and counted; recent
// terminal commands and live ones, however old, stay.
func TestRetentionPrunesOldCommands(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) {
		c.Retention = time.Hour
		c.PruneInterval = 20 * time.Millisecond
	}))

	// One command run through the agent protocol, then aged, with output
	// still in a chunk row.
	old := b.run("echo", "old")
	b.heartbeat(b.NodeA, old, stdout(0, "old\n"))
	if r := b.finish(b.NodeA, shared.FinishRequest{Attempt: old.Attempt, StdoutLength: 4, ExitCode: exitCode(0)}, old.ID); r.Status != http.StatusOK {
		t.Fatalf("finish: %s", r)
	}
	// Live commands submitted long ago, and one that finished just now.
	queued := b.submit(b.Alice, b.NodeB.Container, "true") // node B: no lease takes it
	running := b.run("sleep", "1000")
	recent := b.run("true")
	if r := b.finish(b.NodeA, shared.FinishRequest{Attempt: recent.Attempt, ExitCode: exitCode(0)}, recent.ID); r.Status != http.StatusOK {
		t.Fatalf("finish: %s", r)
	}
	mustExec := func(q string, args ...any) {
		t.Helper()
		if _, err := b.DB.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	mustExec(`UPDATE commands SET created_at = now() - interval '3 days' WHERE id IN ($1, $2)`, queued.ID, running.ID)
	mustExec(`INSERT INTO command_chunks (command_id, stream, off, data) VALUES ($1, 2, 0, 'left over')`, old.ID)
	mustExec(`UPDATE commands SET created_at = now() - interval '3 days', finished_at = now() - interval '2 days' WHERE id = $1`, old.ID)
	// More history than two batches.
	const bulk = 2*reaper.PruneBatch + 100
	b.seedOld(bulk)

	eventually(t, within, func() bool {
		return b.count(`SELECT count(*) FROM commands WHERE finished_at < now() - interval '1 day'`) == 0
	}, "commands finished two days ago were not all pruned")
	if n := b.count(`SELECT count(*) FROM command_chunks WHERE command_id = $1`, old.ID); n != 0 {
		t.Errorf("%d chunks of the pruned command left", n)
	}
	if r := b.do(http.MethodGet, commandPath(old.ID), b.Alice.Token, nil); r.Status != http.StatusNotFound {
		t.Errorf("pruned command: %s, want 404", r)
	}
	for name, id := range map[string]string{"queued": queued.ID, "running": running.ID, "recent": recent.ID} {
		if r := b.do(http.MethodGet, commandPath(id), b.Alice.Token, nil); r.Status != http.StatusOK {
			t.Errorf("%s command %s was pruned: %s", name, id, r)
		}
	}
	if got := b.get(b.Alice, queued.ID).Status; got != shared.StatusQueued {
		t.Errorf("queued command became %s", got)
	}
	eventually(t, within, func() bool {
		return scrape(t, b, b.URL, "execq_commands_pruned_total") == bulk+1
	}, "execq_commands_pruned_total is %v, want %d", scrape(t, b, b.URL, "execq_commands_pruned_total"), bulk+1)
}

// TestRetentionZeroKeepsEverything: a zero retention turns pruning off.
func TestRetentionZeroKeepsEverything(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) {
		c.Retention = 0
		c.PruneInterval = 20 * time.Millisecond
	}))
	b.seedOld(10)
	if n := b.App.Pruner.Once(context.Background()); n != 0 {
		t.Errorf("a pruning pass deleted %d commands with retention 0", n)
	}
	// Run has nothing to do and returns at once rather than ticking.
	done := make(chan error, 1)
	go func() { done <- b.App.Pruner.Run(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("pruner: %v", err)
		}
	case <-time.After(within):
		t.Fatal("pruner with retention 0 kept running")
	}
	if n := b.count(`SELECT count(*) FROM commands`); n != 10 {
		t.Errorf("%d of 10 old commands left", n)
	}
	if got := scrape(t, b, b.URL, "execq_commands_pruned_total"); got != 0 {
		t.Errorf("execq_commands_pruned_total = %v, want 0", got)
	}
}
