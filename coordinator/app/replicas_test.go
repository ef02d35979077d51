package app_test

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/coordinator/testpg"
	"github.com/execq/execq/migrations"
	"github.com/execq/execq/shared"
)

// TestCrossReplicaWake parks a poll on one replica and enqueues through
// another: only PostgreSQL's NOTIFY connects them.
func TestCrossReplicaWake(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := startReplica(t, b.DBURL)
	waitListeners(t, b.DB, 2)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, dir := range []struct {
		name         string
		park, submit *replica
	}{{"A to B", b.replica, other}, {"B to A", other, b.replica}} {
		t.Run(dir.name, func(t *testing.T) {
			b := b.with(t)
			ch := b.parkPoll(ctx, dir.park.URL, b.NodeA, parkedWait)
			waitParked(t, dir.park.App, 1)
			enqueued := time.Now()
			var rec shared.CommandExecutionRecord
			b.mustJSON(dir.submit.URL, http.MethodPost, submitPath(b.NodeA.Container), b.Alice.Token,
				shared.SubmitRequest{Program: "hostname"}, http.StatusAccepted, &rec)
			wantWoken(t, ch, rec.ID, enqueued)
		})
	}
}

// TestReplicasShareLeases runs the agent protocol across replicas, as behind
// a load balancer: every call of one lease may land on either.
func TestReplicasShareLeases(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := startReplica(t, b.DBURL)

	rec := b.submit(b.Alice, b.NodeA.Container, "echo", "hi")
	var lr shared.LeaseResponse
	b.mustJSON(other.URL, http.MethodPost, shared.AgentPathLease, b.NodeA.Token, shared.LeaseRequest{Max: 1}, http.StatusOK, &lr)
	if len(lr.Commands) != 1 || lr.Commands[0].ID != rec.ID {
		t.Fatalf("lease through the other replica: %+v", lr.Commands)
	}
	lc := lr.Commands[0]
	b.mustJSON(b.URL, http.MethodPost, agentCommandPath(rec.ID, "start"), b.NodeA.Token, shared.StartRequest{Attempt: lc.Attempt}, http.StatusOK, nil)
	b.mustJSON(other.URL, http.MethodPost, agentCommandPath(rec.ID, "heartbeat"), b.NodeA.Token,
		shared.HeartbeatRequest{Attempt: lc.Attempt, Chunks: []shared.Chunk{stdout(0, "hi\n")}}, http.StatusOK, nil)
	b.mustJSON(b.URL, http.MethodPost, agentCommandPath(rec.ID, "finish"), b.NodeA.Token,
		shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 3, ExitCode: exitCode(0)}, http.StatusOK, nil)
	var got shared.CommandExecutionRecord
	b.mustJSON(other.URL, http.MethodGet, commandPath(rec.ID), b.Alice.Token, nil, http.StatusOK, &got)
	if got.Status != shared.StatusSucceeded || got.Stdout != "hi\n" {
		t.Fatalf("record through the other replica: %+v", got)
	}
}

// TestConcurrentMigrations starts replicas at once on a fresh database: the
// advisory lock lets each migration apply exactly once and all succeed.
func TestConcurrentMigrations(t *testing.T) {
	t.Parallel()
	dbURL := testpg.New(t)
	const replicas = 4
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	apps := make([]*app.App, replicas)
	gate := make(chan struct{})
	for i := range replicas {
		wg.Go(func() {
			<-gate
			apps[i], errs[i] = app.New(context.Background(), testConfig(dbURL), testLogger())
		})
	}
	close(gate)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: app.New: %v", i, err)
			continue
		}
		t.Cleanup(func() { apps[i].Close() })
	}
	if t.Failed() {
		return
	}
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("embedded migrations: %v %v", files, err)
	}
	var n int
	if err := apps[0].Store.DB().QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(files) {
		t.Fatalf("schema_migrations has %d rows, want %d", n, len(files))
	}
	// Each replica works on the migrated schema.
	for i, a := range apps {
		if _, _, err := a.Store.CreateUser(context.Background(), fmt.Sprint("user", i), false); err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
}
