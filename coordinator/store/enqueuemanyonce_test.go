package store

import (
	"bytes"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/execq/execq/shared"
)

// rows counts the commands table.
func (f *fixture) rows() int {
	f.t.Helper()
	var n int
	if err := f.st.db.GetContext(f.ctx, &n, `SELECT count(*) FROM commands`); err != nil {
		f.t.Fatal(err)
	}
	return n
}

// keyed is a batch item with an idempotency key.
func keyed(container, key, program string, args ...string) BatchItem {
	return BatchItem{ContainerID: container, Req: shared.SubmitRequest{Program: program, Args: args}, IdempotencyKey: key}
}

// TestEnqueueManyOnce: items with keys are queued once per key, as
// EnqueueOnce queues them: a replay returns the original (Replay set) and
// queues nothing; a batch mixing replays, new keyed items and items
// without a key queues the new ones, in the items' order; a key reused for
// another request refuses the whole batch; keys belong to a user and
// expire after the window; single and batch submits share one key space.
func TestEnqueueManyOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	other := f.newNode("node-b")
	f.grantNode(f.user, other)
	otherContainer := uuid.NewString()
	if rej, err := f.st.ReplaceInventory(f.ctx, other.ID, []Container{{ID: otherContainer, Name: "c2", State: "running"}}); err != nil || len(rej) > 0 {
		t.Fatal(rej, err)
	}
	many := func(user string, items ...BatchItem) ([]BatchResult, error) {
		t.Helper()
		return f.st.EnqueueMany(f.ctx, user, items)
	}

	first, err := many(f.user.ID,
		keyed(f.container, "k1", "echo", "a"),
		BatchItem{ContainerID: f.container, Req: shared.SubmitRequest{Program: "true"}},
		keyed(otherContainer, "k2", "echo", "b"))
	if err != nil || len(first) != 3 {
		t.Fatalf("first batch: %d, %v", len(first), err)
	}
	for i, r := range first {
		if r.Replay || r.Status != shared.StatusQueued || r.ID == "" {
			t.Errorf("first batch item %d: replay %v, %+v", i, r.Replay, r.Command)
		}
	}
	if first[2].NodeID != other.ID || !first[0].CreatedAt.Before(first[1].CreatedAt) || !first[1].CreatedAt.Before(first[2].CreatedAt) {
		t.Errorf("first batch: node %s (want %s), created_at %v %v %v: the items' order", first[2].NodeID, other.ID,
			first[0].CreatedAt, first[1].CreatedAt, first[2].CreatedAt)
	}
	if n := f.rows(); n != 3 {
		t.Fatalf("%d commands after the first batch, want 3", n)
	}

	// Every item a replay: the originals, nothing queued.
	again, err := many(f.user.ID, keyed(otherContainer, "k2", "echo", "b"), keyed(f.container, "k1", "echo", "a"))
	if err != nil || len(again) != 2 || !again[0].Replay || !again[1].Replay || again[0].ID != first[2].ID || again[1].ID != first[0].ID ||
		!again[1].CreatedAt.Equal(first[0].CreatedAt) || again[1].Program != "echo" || again[1].Args[0] != "a" {
		t.Fatalf("replayed batch: %+v, %v", again, err)
	}
	if n := f.rows(); n != 3 {
		t.Fatalf("%d commands after a replayed batch, want 3", n)
	}

	// A mix: the replay's original, new commands for the rest, in order.
	mixed, err := many(f.user.ID,
		keyed(f.container, "k3", "echo", "c"),
		keyed(f.container, "k1", "echo", "a"),
		BatchItem{ContainerID: otherContainer, Req: shared.SubmitRequest{Program: "false"}})
	if err != nil || len(mixed) != 3 {
		t.Fatalf("mixed batch: %d, %v", len(mixed), err)
	}
	if mixed[0].Replay || mixed[0].Program != "echo" || mixed[1].ID != first[0].ID || !mixed[1].Replay ||
		mixed[2].Replay || mixed[2].Program != "false" || mixed[2].ContainerID != otherContainer {
		t.Fatalf("mixed batch: %+v", mixed)
	}
	if n := f.rows(); n != 5 {
		t.Fatalf("%d commands after the mixed batch, want 5", n)
	}

	// A key reused for another request refuses the batch: nothing queued,
	// the batch's new key stays free. The error names the item.
	before := f.rows()
	for name, bad := range map[string]BatchItem{
		"other args":      keyed(f.container, "k1", "echo", "z"),
		"other program":   keyed(f.container, "k1", "printf", "a"),
		"other container": keyed(otherContainer, "k1", "echo", "a"),
	} {
		_, err := many(f.user.ID, keyed(f.container, "k4", "true"), BatchItem{ContainerID: f.container, Req: shared.SubmitRequest{Program: "true"}}, bad)
		var reused *IdempotencyKeyReusedError
		if !errors.As(err, &reused) || reused.Index != 2 || !errors.Is(err, ErrIdempotencyKeyReused) {
			t.Errorf("%s: %v, want item 2's key reused", name, err)
		}
	}
	if n := f.rows(); n != before {
		t.Fatalf("refused batches queued %d commands", n-before)
	}
	if c, created, err := f.st.EnqueueOnce(f.ctx, f.container, f.user.ID, shared.SubmitRequest{Program: "false"}, "k4"); err != nil || !created {
		t.Fatalf("k4 after the refused batches: created %v, %v (%s)", created, err, c.ID)
	}

	// An unknown container refuses the batch whatever its keys.
	gone := uuid.NewString()
	before = f.rows()
	_, err = many(f.user.ID, keyed(f.container, "k5", "true"), keyed(f.container, "k1", "echo", "a"), keyed(gone, "k6", "true"))
	var missing *ContainerNotFoundError
	if !errors.As(err, &missing) || missing.ContainerID != gone {
		t.Fatalf("unknown container: %v", err)
	}
	if n := f.rows(); n != before {
		t.Fatalf("a batch with an unknown container queued %d commands", n-before)
	}

	// One key space for the single and the batch submit.
	single, _, err := f.st.EnqueueOnce(f.ctx, f.container, f.user.ID, shared.SubmitRequest{Program: "echo", Args: []string{"s"}}, "single")
	if err != nil {
		t.Fatal(err)
	}
	if rs, err := many(f.user.ID, keyed(f.container, "single", "echo", "s")); err != nil || !rs[0].Replay || rs[0].ID != single.ID {
		t.Fatalf("batch replay of a single submit: %+v, %v", rs, err)
	}
	if c, created, err := f.st.EnqueueOnce(f.ctx, otherContainer, f.user.ID, shared.SubmitRequest{Program: "echo", Args: []string{"b"}}, "k2"); err != nil || created || c.ID != first[2].ID {
		t.Fatalf("single replay of a batch item: created %v, %s (want %s), %v", created, c.ID, first[2].ID, err)
	}

	// Another user's same key is another command.
	bob, _, err := f.st.CreateUser(f.ctx, "bob", false)
	if err != nil {
		t.Fatal(err)
	}
	f.grantNode(bob, f.node)
	if rs, err := many(bob.ID, keyed(f.container, "k1", "echo", "a")); err != nil || rs[0].Replay || rs[0].ID == first[0].ID || rs[0].RequestedBy != bob.ID {
		t.Fatalf("bob's k1: %+v, %v", rs, err)
	}

	// Past the window the key names nothing: a new command takes it, even
	// for another request, and the old command keeps its record.
	f.exec(`UPDATE commands SET created_at = created_at - interval '24 hours 1 second' WHERE id = $1`, first[0].ID)
	fresh, err := many(f.user.ID, keyed(f.container, "k1", "echo", "new"), keyed(f.container, "k3", "echo", "c"))
	if err != nil || fresh[0].Replay || fresh[0].ID == first[0].ID || !fresh[1].Replay || fresh[1].ID != mixed[0].ID {
		t.Fatalf("expired key: %+v, %v", fresh, err)
	}
	if got := f.get(first[0].ID); got.Args[0] != "a" {
		t.Fatalf("old command changed: %+v", got.Command)
	}

	// Two items with one key: refused, nothing queued.
	before = f.rows()
	if _, err := many(f.user.ID, keyed(f.container, "d", "true"), keyed(f.container, "d", "true")); err == nil {
		t.Fatal("a batch with one key twice was queued")
	}
	if n := f.rows(); n != before {
		t.Fatalf("a batch with one key twice queued %d commands", n-before)
	}

	// A batch's keyed row holds the same fingerprint a single submit's
	// would, and a row without a key none.
	var key, hash sql.NullString
	if err := f.st.db.QueryRowContext(f.ctx, `SELECT idempotency_key, encode(idempotency_hash, 'hex') FROM commands WHERE id = $1`, first[2].ID).Scan(&key, &hash); err != nil {
		t.Fatal(err)
	}
	want, _ := requestHash(otherContainer, shared.SubmitRequest{Program: "echo", Args: []string{"b"}})
	if key.String != "k2" || hash.String != hex.EncodeToString(want) {
		t.Fatalf("stored key %q hash %s, want k2 %x", key.String, hash.String, want)
	}
	if err := f.st.db.QueryRowContext(f.ctx, `SELECT idempotency_key, idempotency_hash FROM commands WHERE id = $1`, first[1].ID).Scan(&key, &hash); err != nil || key.Valid || hash.Valid {
		t.Fatalf("an item without a key stored key %v hash %v (%v)", key, hash, err)
	}
}

// TestEnqueueManyOnceConcurrent races batches that share keys, each
// listing them in another order, with single submits of one of them, on
// separate connections: each key is queued once, every racer gets that
// command, and none fails (no deadlock: rows are inserted in key order).
func TestEnqueueManyOnceConcurrent(t *testing.T) {
	t.Parallel()
	f := setup(t)
	keys := []string{"r1", "r2", "r3", "r4"}
	const batches, singles = 12, 4
	got := make([][]BatchResult, batches)
	errs := make([]error, batches+singles)
	single := make([]CommandWithOutput, singles)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range batches {
		wg.Go(func() {
			items := make([]BatchItem, len(keys))
			for j := range keys {
				k := keys[(i+j)%len(keys)]
				if i%2 == 1 {
					k = keys[(len(keys)-1-j+i)%len(keys)]
				}
				items[j] = keyed(f.container, k, "echo", k)
			}
			<-gate
			got[i], errs[i] = f.st.EnqueueMany(f.ctx, f.user.ID, items)
		})
	}
	for i := range singles {
		wg.Go(func() {
			<-gate
			single[i], _, errs[batches+i] = f.st.EnqueueOnce(f.ctx, f.container, f.user.ID, shared.SubmitRequest{Program: "echo", Args: []string{"r2"}}, "r2")
		})
	}
	close(gate)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	ids := map[string]string{} // key → command
	created := map[string]int{}
	for i, rs := range got {
		for _, r := range rs {
			k := r.Args[0]
			if ids[k] == "" {
				ids[k] = r.ID
			}
			if r.ID != ids[k] {
				t.Errorf("batch %d got %s for %s, another racer %s", i, r.ID, k, ids[k])
			}
			if !r.Replay {
				created[k]++
			}
		}
	}
	for i, c := range single {
		if c.ID != ids["r2"] {
			t.Errorf("single submit %d got %s for r2, the batches %s", i, c.ID, ids["r2"])
		}
	}
	if n := f.rows(); n != len(keys) {
		t.Fatalf("%d commands, want %d", n, len(keys))
	}
	for _, k := range keys {
		if created[k] > 1 {
			t.Errorf("%d batches say they queued %s", created[k], k)
		}
	}
}

// TestEnqueueManyOnceRaceStaysWhole races batches that each hold one
// shared key with a body of their own and a key of their own: one batch
// wins; every other finds the shared key taken by another request only
// after its insert (it waited for the winner), and is refused whole: its
// own key's command is not queued.
func TestEnqueueManyOnceRaceStaysWhole(t *testing.T) {
	t.Parallel()
	f := setup(t)
	const n = 10
	errs := make([]error, n)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			items := []BatchItem{keyed(f.container, fmt.Sprintf("own-%d", i), "true"), keyed(f.container, "shared", "echo", fmt.Sprint(i))}
			<-gate
			_, errs[i] = f.st.EnqueueMany(f.ctx, f.user.ID, items)
		})
	}
	close(gate)
	wg.Wait()
	won := -1
	for i, err := range errs {
		var reused *IdempotencyKeyReusedError
		switch {
		case err == nil && won < 0:
			won = i
		case errors.As(err, &reused) && reused.Index == 1:
		default:
			t.Errorf("batch %d: %v (batch %d won)", i, err, won)
		}
	}
	var keys []string
	if err := f.st.db.SelectContext(f.ctx, &keys, `SELECT idempotency_key FROM commands ORDER BY 1`); err != nil {
		t.Fatal(err)
	}
	if want := []string{fmt.Sprintf("own-%d", won), "shared"}; strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Fatalf("commands hold keys %v, want %v (only the winner's)", keys, want)
	}
}

// TestEnqueueManyOnceLookupsUseIndex: the batch's key lookups (the expiry
// and the holders' read) seek the (requested_by, idempotency_key) index,
// not read the commands table nor the user's whole history (four weeks
// of keyed commands here, most past the window).
func TestEnqueueManyOnceLookupsUseIndex(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.exec(`INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status, created_at,
			idempotency_key, idempotency_hash)
		SELECT gen_random_uuid(), $1, $2, $3, 'true', '{}', 'succeeded', now() - i * interval '2 minutes', 'key-' || i, '\x00'
		FROM generate_series(1, 20000) AS i`, f.container, f.node.ID, f.user.ID)
	f.exec(`ANALYZE commands`)
	keys := pq.Array([]string{"key-1", "key-99999", "key-5000"})
	for name, q := range map[string]string{"expire": expireKeysSQL, "holders": keyHoldersSQL} {
		plan, raw := f.explain(t, q, f.user.ID, keys)
		if seq := plan.seqScans("commands"); len(seq) > 0 {
			t.Errorf("%s reads the whole commands table (%s):\n%s", name, strings.Join(seq, "; "), raw)
		}
		if !bytes.Contains(raw, []byte("commands_idempotency_idx")) {
			t.Errorf("%s does not use commands_idempotency_idx:\n%s", name, raw)
		}
	}
}

// TestEnqueueManyStatements: a batch costs a fixed number of statements
// whatever its size: without keys one (as before keys existed), with keys
// one transaction of BEGIN, the expiry, the insert and COMMIT, plus one
// read of the keys' commands when some items were replays.
func TestEnqueueManyStatements(t *testing.T) {
	t.Parallel()
	f := setup(t)
	st, counter := f.counted(t)
	batch := func(keyPrefix string) []BatchItem {
		items := make([]BatchItem, 50)
		for i := range items {
			items[i] = BatchItem{ContainerID: f.container, Req: shared.SubmitRequest{Program: "true"}}
			if keyPrefix != "" {
				items[i].IdempotencyKey = fmt.Sprintf("%s-%d", keyPrefix, i)
			}
		}
		return items
	}
	for _, tc := range []struct {
		name  string
		items []BatchItem
		max   int64
	}{
		{"no keys", batch(""), 1},
		{"new keys", batch("k"), 4},
		{"replayed keys", batch("k"), 5},
	} {
		var err error
		if n := counter.statements(func() { _, err = st.EnqueueMany(f.ctx, f.user.ID, tc.items) }); n > tc.max || err != nil {
			t.Errorf("%s: %d statements for 50 items (%v), want at most %d", tc.name, n, err, tc.max)
		}
	}
}
