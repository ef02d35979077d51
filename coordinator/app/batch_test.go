package app_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/execq/execq/shared"
)

// TestSubmitBatchQueuesAllInOrder: a batch across both nodes' containers is
// queued whole, answered 202 with the records in the request's order, and
// each node's agent leases exactly its own commands.
func TestSubmitBatchQueuesAllInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	items := []shared.SubmitBatchItem{
		{ContainerID: b.NodeA.Container, Program: "echo", Args: []string{"a1"}},
		{ContainerID: b.NodeB.Container, Program: "echo", Args: []string{"b1"}, TimeoutSeconds: shared.Secs(30)},
		{ContainerID: b.NodeA.Container, Program: "echo"},
	}
	var res shared.SubmitBatchResult
	b.mustJSON(b.URL, http.MethodPost, "/api/v1/commands", b.Alice.Token, shared.SubmitBatch{Commands: items}, http.StatusAccepted, &res)
	if len(res.Commands) != len(items) {
		t.Fatalf("%d records, want %d", len(res.Commands), len(items))
	}
	for i, rec := range res.Commands {
		if rec.ContainerID != items[i].ContainerID || rec.RequestedBy != b.Alice.ID || rec.Status != shared.StatusQueued || rec.Args == nil {
			t.Errorf("record %d: %+v", i, rec)
		}
	}
	if got := res.Commands[1].TimeoutSeconds; got == nil || *got != 30 {
		t.Errorf("record 1 timeout %v, want 30", got)
	}
	a := b.leaseAt(b.URL, b.NodeA, 10, 0)
	bl := b.leaseAt(b.URL, b.NodeB, 10, 0)
	if len(a.Commands) != 2 || a.Commands[0].ID != res.Commands[0].ID || a.Commands[1].ID != res.Commands[2].ID {
		t.Errorf("node A leased %+v, want commands 0 and 2", a.Commands)
	}
	if len(bl.Commands) != 1 || bl.Commands[0].ID != res.Commands[1].ID || bl.Commands[0].Args[0] != "b1" {
		t.Errorf("node B leased %+v, want command 1", bl.Commands)
	}
}

// TestSubmitBatchRefusedWholeQueuesNothing: a batch with one item a single
// submit would refuse — a container the caller may not use, an unknown
// one, a bad field, too many items — is refused with that answer and
// nothing of it is queued.
func TestSubmitBatchRefusedWholeQueuesNothing(t *testing.T) {
	t.Parallel()
	w := newAuthzWorld(t)
	ok := shared.SubmitBatchItem{ContainerID: w.Blue, Program: "true"}
	tooMany := make([]shared.SubmitBatchItem, shared.MaxBatchCommands+1)
	for i := range tooMany {
		tooMany[i] = ok
	}
	for _, tc := range []struct {
		name   string
		items  []shared.SubmitBatchItem
		status int
		code   string
		msg    string
	}{
		{"ungranted container", []shared.SubmitBatchItem{ok, {ContainerID: w.Red, Program: "true"}}, http.StatusNotFound, "unknown_container", w.Red},
		{"unknown container", []shared.SubmitBatchItem{ok, {ContainerID: "4b9f7a40-3a1e-4c63-9d55-3c1b8f6f2a11", Program: "true"}}, http.StatusNotFound, "unknown_container", "4b9f7a40"},
		{"blank program", []shared.SubmitBatchItem{ok, {ContainerID: w.Blue, Program: " "}}, http.StatusBadRequest, "invalid_field", "commands[1].program"},
		{"bad container id", []shared.SubmitBatchItem{{ContainerID: "nope", Program: "true"}}, http.StatusBadRequest, "invalid_field", "commands[0].container_id"},
		{"timeout out of range", []shared.SubmitBatchItem{ok, {ContainerID: w.Blue, Program: "true", TimeoutSeconds: shared.Secs(1 << 30)}}, http.StatusBadRequest, "invalid_field", "commands[1].timeout_seconds"},
		{"empty", []shared.SubmitBatchItem{}, http.StatusBadRequest, "invalid_field", "commands"},
		{"too many", tooMany, http.StatusBadRequest, "invalid_field", "commands"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := w.count(`SELECT count(*) FROM commands`)
			r := w.do(http.MethodPost, "/api/v1/commands", w.Gina.Token, shared.SubmitBatch{Commands: tc.items})
			w.wantError(r, tc.status, tc.code)
			if !strings.Contains(string(r.Body), tc.msg) {
				t.Errorf("answer %s does not name %q", r.Body, tc.msg)
			}
			if after := w.count(`SELECT count(*) FROM commands`); after != before {
				t.Errorf("%d commands queued by a refused batch", after-before)
			}
		})
	}
	// An Idempotency-Key header is refused: a key names one command, and
	// a batch's keys go in its items.
	before := w.count(`SELECT count(*) FROM commands`)
	r := w.submitKeyed(w.URL, "/api/v1/commands", w.Gina.Token, shared.SubmitBatch{Commands: []shared.SubmitBatchItem{ok}}, "k1")
	w.wantError(r, http.StatusBadRequest, "invalid_header")
	if after := w.count(`SELECT count(*) FROM commands`); after != before {
		t.Errorf("%d commands queued by a batch refused for its Idempotency-Key", after-before)
	}
	// The same batch by the admin, who may use every container, is queued.
	var res shared.SubmitBatchResult
	w.mustJSON(w.URL, http.MethodPost, "/api/v1/commands", w.Root.Token,
		shared.SubmitBatch{Commands: []shared.SubmitBatchItem{ok, {ContainerID: w.Red, Program: "true"}}}, http.StatusAccepted, &res)
	if len(res.Commands) != 2 {
		t.Fatalf("admin's batch: %d records", len(res.Commands))
	}
}

// keyedItem is a batch item with an idempotency key.
func keyedItem(container, key, program string, args ...string) shared.SubmitBatchItem {
	return shared.SubmitBatchItem{ContainerID: container, Program: program, Args: args, IdempotencyKey: shared.IdemKey(key)}
}

// submitBatch posts a batch as user and decodes the answer, which must
// have status want.
func (b *bundle) submitBatch(base, token string, want int, items ...shared.SubmitBatchItem) shared.SubmitBatchResult {
	b.t.Helper()
	var res shared.SubmitBatchResult
	b.mustJSON(base, http.MethodPost, "/api/v1/commands", token, shared.SubmitBatch{Commands: items}, want, &res)
	if len(res.Commands) != len(items) {
		b.t.Fatalf("%d records for %d items", len(res.Commands), len(items))
	}
	return res
}

// TestSubmitBatchIdempotencyKeys: items with idempotency_key follow the
// single submit's Idempotency-Key rules. Sent again, a batch whose items
// all have keys answers 200 with the original commands, each replayed,
// and queues nothing; a mix answers 202 with originals for the replays
// and new commands for the rest, in order; a key used for another request
// refuses the whole batch with 422 naming the item; keys are the
// caller's, shared with the single submit; a replayed finished command
// comes back with its current record, its output left to GET.
func TestSubmitBatchIdempotencyKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a, bc := b.NodeA.Container, b.NodeB.Container

	first := b.submitBatch(b.URL, b.Alice.Token, http.StatusAccepted,
		keyedItem(a, "k1", "echo", "a"), shared.SubmitBatchItem{ContainerID: bc, Program: "true"}, keyedItem(bc, "k2", "echo", "b"))
	for i, rec := range first.Commands {
		if rec.Replayed || rec.Status != shared.StatusQueued {
			t.Errorf("first batch item %d: %+v", i, rec)
		}
	}
	if n := b.count(`SELECT count(*) FROM commands`); n != 3 {
		t.Fatalf("%d commands after the first batch, want 3", n)
	}

	// All replays: 200, the originals, nothing queued.
	snap := b.snapshot()
	again := b.submitBatch(b.URL, b.Alice.Token, http.StatusOK, keyedItem(bc, "k2", "echo", "b"), keyedItem(a, "k1", "echo", "a"))
	for i, want := range []shared.SubmitBatchRecord{first.Commands[2], first.Commands[0]} {
		want.Replayed = true
		if got := again.Commands[i]; !reflect.DeepEqual(got, want) {
			t.Errorf("replay of item %d: %+v, want %+v", i, got, want)
		}
	}
	if b.snapshot() != snap {
		t.Fatal("a batch of replays changed the job table")
	}

	// A mix: 202, new commands for the new items, the original for the
	// replay, in the items' order.
	mixed := b.submitBatch(b.URL, b.Alice.Token, http.StatusAccepted,
		keyedItem(a, "k3", "echo", "c"), keyedItem(a, "k1", "echo", "a"), shared.SubmitBatchItem{ContainerID: bc, Program: "false"})
	if m := mixed.Commands; m[0].Replayed || m[0].Args[0] != "c" || !m[1].Replayed || m[1].ID != first.Commands[0].ID ||
		m[2].Replayed || m[2].Program != "false" || m[0].ID == m[2].ID {
		t.Fatalf("mixed batch: %+v", m)
	}
	if n := b.count(`SELECT count(*) FROM commands`); n != 5 {
		t.Fatalf("%d commands after the mixed batch, want 5", n)
	}

	// A key reused for another request: 422 naming the item, nothing
	// queued (not even the batch's other, new items).
	snap = b.snapshot()
	for name, bad := range map[string]shared.SubmitBatchItem{
		"other args":      keyedItem(a, "k1", "echo", "z"),
		"other container": keyedItem(bc, "k1", "echo", "a"),
	} {
		r := b.do(http.MethodPost, "/api/v1/commands", b.Alice.Token,
			shared.SubmitBatch{Commands: []shared.SubmitBatchItem{keyedItem(a, "k4", "true"), {ContainerID: a, Program: "true"}, bad}})
		b.wantError(r, http.StatusUnprocessableEntity, "idempotency_key_reused")
		if !strings.Contains(string(r.Body), "commands[2]") {
			t.Errorf("%s: %s does not name commands[2]", name, r.Body)
		}
		if b.snapshot() != snap {
			t.Fatalf("%s: a refused batch changed the job table", name)
		}
	}

	// One key space with the single submit, both ways.
	if r := b.submitKeyed(b.URL, submitPath(bc), b.Alice.Token, shared.SubmitRequest{Program: "echo", Args: []string{"b"}}, "k2"); r.Status != http.StatusOK || keyedRecord(t, r).ID != first.Commands[2].ID {
		t.Fatalf("single submit with a batch item's key: %s", r)
	}
	single := keyedRecord(t, b.submitKeyed(b.URL, submitPath(a), b.Alice.Token, shared.SubmitRequest{Program: "uname"}, "single"))
	if r := b.submitBatch(b.URL, b.Alice.Token, http.StatusOK, keyedItem(a, "single", "uname")); r.Commands[0].ID != single.ID || !r.Commands[0].Replayed {
		t.Fatalf("batch with a single submit's key: %+v", r.Commands[0])
	}

	// Another user's key space is their own.
	if r := b.submitBatch(b.URL, b.Bob.Token, http.StatusAccepted, keyedItem(a, "k1", "echo", "a")); r.Commands[0].ID == first.Commands[0].ID ||
		r.Commands[0].Replayed || r.Commands[0].RequestedBy != b.Bob.ID {
		t.Fatalf("bob with alice's key: %+v", r.Commands[0])
	}

	// A finished command replays with its current record; its output is
	// read with GET, not carried by the batch's answer.
	id := first.Commands[0].ID
	lc := b.leaseCommand(b.NodeA, id)
	b.start(b.NodeA, lc)
	b.finishOK(b.NodeA, id, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 2, Chunks: []shared.Chunk{stdout(0, "a\n")}, ExitCode: exitCode(0)}, shared.StatusSucceeded)
	done := b.submitBatch(b.URL, b.Alice.Token, http.StatusOK, keyedItem(a, "k1", "echo", "a")).Commands[0]
	if done.ID != id || !done.Replayed || done.Status != shared.StatusSucceeded || done.ExitCode == nil || *done.ExitCode != 0 ||
		done.Stdout != "" || done.StdoutBytes != 2 {
		t.Fatalf("replay of a finished command: %+v", done)
	}
	if got := b.get(b.Alice, id); got.Stdout != "a\n" {
		t.Fatalf("its record: %+v", got)
	}
}

// TestSubmitBatchIdempotencyKeyRefused: a malformed idempotency_key, or
// one key on two items, is a 400 invalid_field naming the items, and
// nothing of the batch is queued.
func TestSubmitBatchIdempotencyKeyRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.NodeA.Container
	ok := keyedItem(a, "fine", "true")
	for name, tc := range map[string]struct {
		items []any
		names []string
	}{
		"empty":     {[]any{ok, keyedItem(a, "", "true")}, []string{"commands[1].idempotency_key"}},
		"256 bytes": {[]any{ok, keyedItem(a, strings.Repeat("k", 256), "true")}, []string{"commands[1].idempotency_key", "255"}},
		"non-ASCII": {[]any{ok, keyedItem(a, "clé", "true")}, []string{"commands[1].idempotency_key", "printable ASCII"}},
		"tab":       {[]any{ok, keyedItem(a, "a\tb", "true")}, []string{"commands[1].idempotency_key"}},
		"null": {[]any{ok, map[string]any{"container_id": a, "program": "true", "idempotency_key": nil}},
			[]string{"commands[1].idempotency_key", "null"}},
		"a number": {[]any{ok, map[string]any{"container_id": a, "program": "true", "idempotency_key": 7}}, nil},
		"one key twice": {[]any{keyedItem(a, "twice", "true"), ok, keyedItem(a, "twice", "true")},
			[]string{"commands[2].idempotency_key", "commands[0].idempotency_key"}},
		"one key twice, other bodies": {[]any{keyedItem(a, "twice", "true"), keyedItem(b.NodeB.Container, "twice", "false")},
			[]string{"commands[1].idempotency_key", "commands[0].idempotency_key"}},
	} {
		t.Run(name, func(t *testing.T) {
			b := b.with(t)
			r := b.do(http.MethodPost, "/api/v1/commands", b.Alice.Token, map[string]any{"commands": tc.items})
			if r.Status != http.StatusBadRequest {
				t.Fatalf("got %s, want 400", r)
			}
			if tc.names != nil {
				b.wantError(r, http.StatusBadRequest, "invalid_field")
			}
			for _, s := range tc.names {
				if !strings.Contains(string(r.Body), s) {
					t.Errorf("answer %s does not name %q", r.Body, s)
				}
			}
		})
	}
	if n := b.count(`SELECT count(*) FROM commands`); n != 0 {
		t.Fatalf("refused batches queued %d commands", n)
	}
	// The largest valid key works, and replays.
	key := "~ " + strings.Repeat("K", 253)
	first := b.submitBatch(b.URL, b.Alice.Token, http.StatusAccepted, keyedItem(a, key, "true"))
	if again := b.submitBatch(b.URL, b.Alice.Token, http.StatusOK, keyedItem(a, key, "true")); again.Commands[0].ID != first.Commands[0].ID {
		t.Fatalf("a 255-byte key's replay: %+v", again.Commands[0])
	}
}

// TestSubmitBatchIdempotencyRace sends batches sharing keys, each listing
// them in another order, at once over two replicas: every key is queued
// once, every answer carries that command, and exactly one answer per key
// says it queued it.
func TestSubmitBatchIdempotencyRace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := startReplica(t, b.DBURL)
	keys := []string{"deploy/a", "deploy/b", "deploy/c"}
	const n = 12
	answers := make([]response, n)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		base := b.URL
		if i%2 == 1 {
			base = other.URL
		}
		items := make([]shared.SubmitBatchItem, len(keys))
		for j := range keys {
			k := keys[(i+j)%len(keys)]
			items[j] = keyedItem(b.NodeA.Container, k, "echo", k)
		}
		wg.Go(func() {
			<-gate
			answers[i] = b.doAt(base, http.MethodPost, "/api/v1/commands", b.Alice.Token, shared.SubmitBatch{Commands: items})
		})
	}
	close(gate)
	wg.Wait()
	ids := map[string]string{}
	queued := map[string]int{}
	for i, r := range answers {
		if r.Status != http.StatusOK && r.Status != http.StatusAccepted {
			t.Fatalf("batch %d: %s", i, r)
		}
		var res shared.SubmitBatchResult
		if err := json.Unmarshal(r.Body, &res); err != nil {
			t.Fatal(err)
		}
		all := true
		for _, rec := range res.Commands {
			k := rec.Args[0]
			if ids[k] == "" {
				ids[k] = rec.ID
			}
			if rec.ID != ids[k] {
				t.Errorf("batch %d got %s for %s, another %s", i, rec.ID, k, ids[k])
			}
			if !rec.Replayed {
				queued[k]++
			}
			all = all && rec.Replayed
		}
		if all != (r.Status == http.StatusOK) {
			t.Errorf("batch %d: status %d, every item replayed: %v", i, r.Status, all)
		}
	}
	for _, k := range keys {
		if queued[k] != 1 {
			t.Errorf("%d answers say they queued %s, want 1", queued[k], k)
		}
	}
	if got := b.count(`SELECT count(*) FROM commands`); got != len(keys) {
		t.Fatalf("%d commands queued, want %d", got, len(keys))
	}
}
