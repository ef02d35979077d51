package app_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/execq/execq/shared"
)

// submitKeyed posts a submit with Idempotency-Key headers (none if keys is
// empty; each one sent as its own header line).
func (b *bundle) submitKeyed(base, path, token string, body any, keys ...string) response {
	b.t.Helper()
	js, err := json.Marshal(body)
	if err != nil {
		b.t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(js))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	for _, k := range keys {
		req.Header.Add("Idempotency-Key", k)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("submit: %v", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

func keyedRecord(t testing.TB, r response) shared.CommandExecutionRecord {
	t.Helper()
	var rec shared.CommandExecutionRecord
	if err := json.Unmarshal(r.Body, &rec); err != nil {
		t.Fatalf("decode record %s: %v", r, err)
	}
	return rec
}

// TestIdempotentSubmitAcrossReplicas sends one key 20 times at once, split
// over two replicas: one command is queued, one answer is 202 and the other
// 19 are 200 with that same command.
func TestIdempotentSubmitAcrossReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := startReplica(t, b.DBURL)
	body := shared.SubmitRequest{Program: "echo", Args: []string{"once"}}

	const n = 20
	resps := make([]response, n)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		base := b.URL
		if i%2 == 1 {
			base = other.URL
		}
		wg.Go(func() {
			<-gate
			resps[i] = b.submitKeyed(base, submitPath(b.NodeA.Container), b.Alice.Token, body, "deploy-42")
		})
	}
	close(gate)
	wg.Wait()

	accepted := 0
	var id string
	for i, r := range resps {
		switch r.Status {
		case http.StatusAccepted:
			accepted++
		case http.StatusOK:
		default:
			t.Fatalf("submit %d: %s", i, r)
		}
		rec := keyedRecord(t, r)
		if id == "" {
			id = rec.ID
		}
		if rec.ID != id || r.Header.Get("Location") != commandPath(id) {
			t.Errorf("submit %d answered %s (Location %q), another answered %s", i, rec.ID, r.Header.Get("Location"), id)
		}
	}
	if accepted != 1 {
		t.Errorf("%d answers are 202, want exactly 1 (the rest 200)", accepted)
	}
	if got := b.count(`SELECT count(*) FROM commands`); got != 1 {
		t.Fatalf("%d commands queued, want 1", got)
	}
	// The one command is leased once.
	lr := b.leaseAt(b.URL, b.NodeA, 10, 0)
	if len(lr.Commands) != 1 || lr.Commands[0].ID != id {
		t.Fatalf("lease after the race: %+v", lr.Commands)
	}
}

// TestIdempotentSubmit covers the answers one key can get: the record again
// with 200 (with ?wait= too, once it finished), 422 for a different request,
// and a fresh command for another user.
func TestIdempotentSubmit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	path := submitPath(b.NodeA.Container)
	body := shared.SubmitRequest{Program: "echo", Args: []string{"hi"}}

	first := b.submitKeyed(b.URL, path, b.Alice.Token, body, "k")
	if first.Status != http.StatusAccepted {
		t.Fatalf("first submit: %s", first)
	}
	rec := keyedRecord(t, first)
	again := b.submitKeyed(b.URL, path, b.Alice.Token, body, "k")
	if again.Status != http.StatusOK || !bytes.Equal(again.Body, first.Body) {
		t.Fatalf("repeat: %s, want 200 with the first answer's record %s", again, first.Body)
	}

	// Reuse for another request changes nothing.
	snap := b.snapshot()
	for name, tc := range map[string]struct {
		path string
		body shared.SubmitRequest
	}{
		"other args":      {path, shared.SubmitRequest{Program: "echo", Args: []string{"ho"}}},
		"other container": {submitPath(b.NodeB.Container), body},
	} {
		b.wantError(b.submitKeyed(b.URL, tc.path, b.Alice.Token, tc.body, "k"), http.StatusUnprocessableEntity, "idempotency_key_reused")
		if b.snapshot() != snap {
			t.Fatalf("%s: a refused reuse changed the job table", name)
		}
	}

	// Another user's key space is their own.
	if r := b.submitKeyed(b.URL, path, b.Bob.Token, body, "k"); r.Status != http.StatusAccepted || keyedRecord(t, r).ID == rec.ID {
		t.Fatalf("bob with alice's key: %s", r)
	}

	// Once the command finished, a repeat with ?wait= answers its final
	// record at once, still 200.
	lc := b.leaseCommand(b.NodeA, rec.ID)
	b.start(b.NodeA, lc)
	if r := b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 3, Chunks: []shared.Chunk{stdout(0, "hi\n")}, ExitCode: exitCode(0)}, rec.ID); r.Status != http.StatusOK {
		t.Fatalf("finish: %s", r)
	}
	r := b.submitKeyed(b.URL, path+"?wait=20s", b.Alice.Token, body, "k")
	if got := keyedRecord(t, r); r.Status != http.StatusOK || got.ID != rec.ID || got.Status != shared.StatusSucceeded || got.Stdout != "hi\n" {
		t.Fatalf("repeat with wait: %s", r)
	}
	if got := b.count(`SELECT count(*) FROM commands WHERE requested_by = $1`, b.Alice.ID); got != 1 {
		t.Fatalf("alice has %d commands, want 1", got)
	}
}

// TestIdempotencyKeyPast24Hours: a key older than 24 hours names nothing, so
// it queues a new command, even with another body.
func TestIdempotencyKeyPast24Hours(t *testing.T) {
	t.Parallel()
	b := setup(t)
	path := submitPath(b.NodeA.Container)
	old := keyedRecord(t, b.submitKeyed(b.URL, path, b.Alice.Token, shared.SubmitRequest{Program: "true"}, "nightly"))
	if _, err := b.DB.Exec(`UPDATE commands SET created_at = created_at - interval '25 hours' WHERE id = $1`, old.ID); err != nil {
		t.Fatal(err)
	}
	r := b.submitKeyed(b.URL, path, b.Alice.Token, shared.SubmitRequest{Program: "false"}, "nightly")
	if r.Status != http.StatusAccepted || keyedRecord(t, r).ID == old.ID {
		t.Fatalf("submit with an expired key: %s, want 202 and a new command", r)
	}
}

// TestIdempotencyKeyValidation: a malformed key is a 400 invalid_header and
// queues nothing; the largest valid key works.
func TestIdempotencyKeyValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	path := submitPath(b.NodeA.Container)
	body := shared.SubmitRequest{Program: "true"}
	for name, keys := range map[string][]string{
		"empty":       {""},
		"256 bytes":   {strings.Repeat("k", 256)},
		"non-ASCII":   {"clé"},
		"tab":         {"a\tb"},
		"given twice": {"a", "a"},
	} {
		t.Run(name, func(t *testing.T) {
			b := b.with(t)
			b.wantError(b.submitKeyed(b.URL, path, b.Alice.Token, body, keys...), http.StatusBadRequest, "invalid_header")
		})
	}
	if n := b.count(`SELECT count(*) FROM commands`); n != 0 {
		t.Fatalf("bad keys queued %d commands", n)
	}
	key := "~ " + strings.Repeat("K", 253)
	if r := b.submitKeyed(b.URL, path, b.Alice.Token, body, key); r.Status != http.StatusAccepted {
		t.Fatalf("a 255-byte printable key: %s", r)
	}
	if r := b.submitKeyed(b.URL, path, b.Alice.Token, body, key); r.Status != http.StatusOK {
		t.Fatalf("its repeat: %s", r)
	}
}
