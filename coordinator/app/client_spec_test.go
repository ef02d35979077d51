package app_test

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/cli/client"
	"github.com/execq/execq/shared"
)

// TestClientHeldToTheDescription: the typed client the execq CLI is built
// on speaks the API as docs/openapi.yaml describes it. Every call goes
// through the checked transport, so a query the client formats differently
// (a wait, a since), a header or a body the description does not allow,
// fails here.
func TestClientHeldToTheDescription(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c, err := client.New(client.Options{Server: b.URL, Token: b.Alice.Token, HTTPClient: b.client})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Containers(ctx); err != nil {
		t.Fatalf("containers: %v", err)
	}
	if id, err := c.ResolveContainer(ctx, "node-a-c1"); err != nil || id != b.NodeA.Container {
		t.Fatalf("resolve node-a-c1: %q, %v; want %s", id, err, b.NodeA.Container)
	}
	req := shared.SubmitRequest{Program: "echo", Args: []string{"hello"}, TimeoutSeconds: shared.Secs(60), QueueTimeoutSeconds: shared.Secs(60)}
	rec, err := c.Submit(ctx, b.NodeA.Container, req, client.SubmitOptions{IdempotencyKey: "spec-1"})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if again, err := c.Submit(ctx, b.NodeA.Container, req, client.SubmitOptions{IdempotencyKey: "spec-1", Wait: 100 * time.Millisecond}); err != nil || again.ID != rec.ID {
		t.Fatalf("keyed resubmit: %v, %v; want command %s", again, err, rec.ID)
	}
	many, err := c.SubmitMany(ctx, []shared.SubmitBatchItem{
		{ContainerID: b.NodeA.Container, Program: "true"},
		{ContainerID: b.NodeB.Container, Program: "echo", Args: []string{"b"}, TimeoutSeconds: shared.Secs(60)},
	})
	if err != nil || len(many) != 2 || many[0].ContainerID != b.NodeA.Container || many[1].ContainerID != b.NodeB.Container ||
		many[0].Status != shared.StatusQueued || many[1].Program != "echo" {
		t.Fatalf("submit many: %+v, %v", many, err)
	}
	keyed := []shared.SubmitBatchItem{
		{ContainerID: b.NodeA.Container, Program: "echo", Args: []string{"k"}, IdempotencyKey: shared.IdemKey("spec-batch-1")},
		{ContainerID: b.NodeB.Container, Program: "true", IdempotencyKey: shared.IdemKey("spec-batch-2")},
	}
	made, err := c.SubmitMany(ctx, keyed)
	if err != nil || made[0].Replayed || made[1].Replayed {
		t.Fatalf("keyed submit many: %+v, %v", made, err)
	}
	again, err := c.SubmitMany(ctx, append(keyed[:1:1], shared.SubmitBatchItem{ContainerID: b.NodeA.Container, Program: "true"}))
	if err != nil || !again[0].Replayed || again[0].ID != made[0].ID || again[1].Replayed || again[1].ID == made[1].ID {
		t.Fatalf("keyed submit many again, with a new item: %+v, %v; want %s replayed", again, err, made[0].ID)
	}
	if _, err := c.SubmitMany(ctx, []shared.SubmitBatchItem{{ContainerID: b.NodeB.Container, Program: "false", IdempotencyKey: shared.IdemKey("spec-batch-2")}}); !client.IsCode(err, "idempotency_key_reused") {
		t.Fatalf("submit many reusing a key: %v, want idempotency_key_reused", err)
	}
	if _, err := c.SubmitMany(ctx, []shared.SubmitBatchItem{{ContainerID: uuid.NewString(), Program: "true"}}); !client.IsCode(err, "unknown_container") {
		t.Fatalf("submit many to an unknown container: %v, want unknown_container", err)
	}
	if _, err := c.Get(ctx, rec.ID, 50*time.Millisecond); err != nil {
		t.Fatalf("get: %v", err)
	}

	// Follow from before the command starts to its end.
	followed := make(chan []byte, 1)
	go func() {
		data, err := io.ReadAll(c.Follow(ctx, rec.ID, shared.StreamStdout, 0))
		if err != nil {
			t.Errorf("follow: %v", err)
		}
		followed <- data
	}()
	lc := b.leaseCommand(b.NodeA, rec.ID)
	b.start(b.NodeA, lc)
	b.heartbeat(b.NodeA, lc, stdout(0, "hello\n"))
	b.finishOK(b.NodeA, rec.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 6, ExitCode: exitCode(0)}, shared.StatusSucceeded)
	if got := <-followed; string(got) != "hello\n" {
		t.Fatalf("followed %q, want %q", got, "hello\n")
	}
	if done, err := c.Wait(ctx, rec.ID); err != nil || done.Status != shared.StatusSucceeded {
		t.Fatalf("wait: %v, %v; want succeeded", done, err)
	}
	var out bytes.Buffer
	if info, err := c.Output(ctx, rec.ID, shared.StreamStdout, 0, &out); err != nil || out.String() != "hello\n" || info.Status != shared.StatusSucceeded {
		t.Fatalf("output: %q, %+v, %v", out.String(), info, err)
	}
	page, err := c.History(ctx, client.HistoryQuery{ContainerID: b.NodeA.Container, Status: shared.StatusSucceeded,
		RequestedBy: b.Alice.ID, Since: time.Now().Add(-time.Hour), Limit: 1})
	if err != nil || len(page.Commands) != 1 {
		t.Fatalf("history: %+v, %v", page, err)
	}
	if _, err := c.Cancel(ctx, rec.ID, client.CancelOptions{Grace: shared.Secs(1)}); !client.IsCode(err, "already_finished") {
		t.Fatalf("cancel of a finished command: %v, want already_finished", err)
	}
	queued, err := c.Submit(ctx, b.NodeA.Container, shared.SubmitRequest{Program: "true"}, client.SubmitOptions{})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if got, err := c.Cancel(ctx, queued.ID, client.CancelOptions{Wait: time.Second}); err != nil || got.Status != shared.StatusCancelled {
		t.Fatalf("cancel of a queued command: %v, %v", got, err)
	}
	if _, err := c.Get(ctx, "00000000-0000-4000-8000-000000000000", 0); !client.IsCode(err, "not_found") {
		t.Fatalf("get of an unknown command: %v, want not_found", err)
	}
}
