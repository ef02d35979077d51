package store

import (
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/execq/execq/shared"
)

func TestEnqueueOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	req := shared.SubmitRequest{Program: "echo", Args: []string{"a"}}
	once := func(container, user string, req shared.SubmitRequest, key string) (CommandWithOutput, bool, error) {
		t.Helper()
		return f.st.EnqueueOnce(f.ctx, container, user, req, key)
	}
	rows := func() int {
		var n int
		if err := f.st.db.GetContext(f.ctx, &n, `SELECT count(*) FROM commands`); err != nil {
			t.Fatal(err)
		}
		return n
	}

	first, created, err := once(f.container, f.user.ID, req, "k1")
	if err != nil || !created || first.Status != shared.StatusQueued {
		t.Fatalf("first submit: created %v, %+v, %v", created, first, err)
	}
	again, created, err := once(f.container, f.user.ID, req, "k1")
	if err != nil || created || again.ID != first.ID || !again.CreatedAt.Equal(first.CreatedAt) {
		t.Fatalf("repeat: created %v, id %s (want %s), %v", created, again.ID, first.ID, err)
	}
	if n := rows(); n != 1 {
		t.Fatalf("%d commands after a repeat, want 1", n)
	}

	// The same request with args missing instead of empty is the same request.
	if _, _, err := f.st.EnqueueOnce(f.ctx, f.container, f.user.ID, shared.SubmitRequest{Program: "true"}, "k2"); err != nil {
		t.Fatal(err)
	}
	if c, created, err := once(f.container, f.user.ID, shared.SubmitRequest{Program: "true", Args: []string{}}, "k2"); err != nil || created {
		t.Fatalf("nil versus empty args: created %v, %v (%s)", created, err, c.ID)
	}

	// Reuse for something else is refused and writes nothing.
	other := f.newNode("node-b")
	otherContainer := uuid.NewString()
	if rej, err := f.st.ReplaceInventory(f.ctx, other.ID, []Container{{ID: otherContainer, Name: "c2", State: "running"}}); err != nil || len(rej) > 0 {
		t.Fatalf("report container: %v %v", rej, err)
	}
	before := rows()
	for name, tc := range map[string]struct {
		container string
		req       shared.SubmitRequest
	}{
		"other args":      {f.container, shared.SubmitRequest{Program: "echo", Args: []string{"b"}}},
		"other program":   {f.container, shared.SubmitRequest{Program: "printf", Args: []string{"a"}}},
		"other container": {otherContainer, req},
	} {
		if _, _, err := once(tc.container, f.user.ID, tc.req, "k1"); !errors.Is(err, ErrIdempotencyKeyReused) {
			t.Errorf("%s: %v, want ErrIdempotencyKeyReused", name, err)
		}
	}
	if n := rows(); n != before {
		t.Fatalf("refused reuses wrote %d commands", n-before)
	}

	// Keys belong to a user: another user's same key is another command.
	bob, _, err := f.st.CreateUser(f.ctx, "bob", false)
	if err != nil {
		t.Fatal(err)
	}
	f.grantNode(bob, f.node)
	if c, created, err := once(f.container, bob.ID, req, "k1"); err != nil || !created || c.ID == first.ID {
		t.Fatalf("another user's key: created %v, %v", created, err)
	}

	// An unknown container is not found, and the key stays free.
	if _, _, err := once(uuid.NewString(), f.user.ID, req, "k3"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown container: %v, want ErrNotFound", err)
	}
	if _, created, err := once(f.container, f.user.ID, req, "k3"); err != nil || !created {
		t.Fatalf("the key after an unknown container: created %v, %v", created, err)
	}

	// Past the window the key names nothing: a new command takes it, even
	// for a different request, and the old command keeps its record.
	f.exec(`UPDATE commands SET created_at = created_at - interval '24 hours 1 second' WHERE id = $1`, first.ID)
	fresh, created, err := once(f.container, f.user.ID, shared.SubmitRequest{Program: "echo", Args: []string{"new"}}, "k1")
	if err != nil || !created || fresh.ID == first.ID {
		t.Fatalf("expired key: created %v, %v", created, err)
	}
	if c, created, err := once(f.container, f.user.ID, shared.SubmitRequest{Program: "echo", Args: []string{"new"}}, "k1"); err != nil || created || c.ID != fresh.ID {
		t.Fatalf("repeat after expiry: created %v, %v", created, err)
	}
	if got := f.get(first.ID); got.Program != "echo" || got.Args[0] != "a" {
		t.Fatalf("old command changed: %+v", got)
	}

	// A plain enqueue stores no key and no fingerprint.
	plain := f.enqueue("true")
	var held int
	if err := f.st.db.GetContext(f.ctx, &held, `SELECT count(*) FROM commands WHERE id = $1 AND idempotency_key IS NULL AND idempotency_hash IS NULL`, plain.ID); err != nil || held != 1 {
		t.Fatalf("plain enqueue keeps a key or hash: %d %v", held, err)
	}
}

// TestEnqueueOnceConcurrent races submits with one key on separate
// connections: the unique index lets one through and the rest read it.
func TestEnqueueOnceConcurrent(t *testing.T) {
	t.Parallel()
	f := setup(t)
	const n = 20
	var wg sync.WaitGroup
	ids := make([]string, n)
	created := make([]bool, n)
	errs := make([]error, n)
	gate := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-gate
			var c CommandWithOutput
			c, created[i], errs[i] = f.st.EnqueueOnce(f.ctx, f.container, f.user.ID, shared.SubmitRequest{Program: "true"}, "race")
			ids[i] = c.ID
		})
	}
	close(gate)
	wg.Wait()
	made := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("submit %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Errorf("submit %d got %s, submit 0 got %s", i, ids[i], ids[0])
		}
		if created[i] {
			made++
		}
	}
	var rows int
	if err := f.st.db.GetContext(f.ctx, &rows, `SELECT count(*) FROM commands`); err != nil {
		t.Fatal(err)
	}
	if made != 1 || rows != 1 {
		t.Fatalf("%d submits say they created, %d rows exist; want 1 and 1", made, rows)
	}
}
