package store

import (
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/shared"
)

// TestStatsPerNode: the one grouped statement behind the per-node metrics
// gives each node its queued and running commands, its oldest queued age
// and its last contact; a node never seen has none; a revoked node is
// listed only while it has live commands; the totals are the nodes' sum.
func TestStatsPerNode(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.newNode("node-idle")         // never seen, nothing queued
	gone := f.newNode("node-gone") // revoked, nothing live
	if _, _, err := f.st.RevokeNode(f.ctx, Ref{ID: gone.ID}); err != nil {
		t.Fatal(err)
	}
	old := f.enqueue("true")
	f.exec(`UPDATE commands SET created_at = now() - interval '1 hour' WHERE id = $1`, old.ID)
	f.enqueue("true")
	f.running() // takes the hour-old one first
	f.enqueue("true")
	f.enqueue("true")
	// node-a reported its inventory an hour and a minute ago.
	f.exec(`UPDATE nodes SET last_seen_at = now() - interval '61 minutes' WHERE id = $1`, f.node.ID)

	s, err := f.st.Stats(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]NodeStats{}
	for _, n := range s.Nodes {
		byName[n.Name] = n
	}
	if names := slices.Sorted(maps.Keys(byName)); !slices.Equal(names, []string{"node-a", "node-idle"}) {
		t.Fatalf("nodes %v, want node-a and node-idle (node-gone is revoked with nothing live)", names)
	}
	a := byName["node-a"]
	if a.Queued != 4 || a.Running != 1 || s.Queued != 4 || s.Running != 1 {
		t.Errorf("node-a queued %d running %d, totals %d %d: want 4 1 and the same totals", a.Queued, a.Running, s.Queued, s.Running)
	}
	if !a.OldestQueuedS.Valid || a.OldestQueuedS.Float64 >= time.Hour.Seconds() || a.OldestQueuedS != s.OldestQueuedS {
		t.Errorf("node-a oldest queued %+v, total %+v: want the same age, below an hour (the old one runs)", a.OldestQueuedS, s.OldestQueuedS)
	}
	if !a.LastSeenAgoS.Valid || a.LastSeenAgoS.Float64 < 61*60 || a.LastSeenAgoS.Float64 > 62*60 {
		t.Errorf("node-a last seen %v s ago, want about 61 minutes", a.LastSeenAgoS)
	}
	var want float64
	if err := f.st.db.GetContext(f.ctx, &want, `SELECT extract(epoch FROM last_seen_at)::float8 FROM nodes WHERE id = $1`, f.node.ID); err != nil {
		t.Fatal(err)
	}
	if a.LastSeen.Float64 != want {
		t.Errorf("node-a last seen at %v, want %v (nodes.last_seen_at)", a.LastSeen, want)
	}
	if i := byName["node-idle"]; i.Queued != 0 || i.Running != 0 || i.OldestQueuedS.Valid || i.LastSeen.Valid || i.LastSeenAgoS.Valid || i.Revoked {
		t.Errorf("never-seen idle node %+v, want zeros and nulls", i)
	}

	// Revoked with live commands: listed (the totals include them), marked.
	other := f.newNode("node-b")
	c2 := f.reportContainer(other)
	if _, err := f.st.Enqueue(f.ctx, c2, f.user.ID, shared.SubmitRequest{Program: "true", Args: []string{}}); err != nil {
		t.Fatal(err)
	}
	f.exec(`UPDATE nodes SET revoked_at = now() WHERE id = $1`, other.ID)
	s, err = f.st.Stats(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(s.Nodes, func(n NodeStats) bool { return n.Name == "node-b" })
	if i < 0 || !s.Nodes[i].Revoked || s.Nodes[i].Queued != 1 || s.Queued != 5 {
		t.Errorf("revoked node with a queued command: %+v (total queued %d), want listed, revoked, 1 of 5", s.Nodes, s.Queued)
	}
}

// reportContainer reports a container for node n and grants it to the
// fixture's user.
func (f *fixture) reportContainer(n Node) string {
	f.t.Helper()
	f.grantNode(f.user, n)
	id := uuid.NewString()
	if rej, err := f.st.ReplaceInventory(f.ctx, n.ID, []Container{{ID: id, Name: "c2", State: "running"}}); err != nil || len(rej) > 0 {
		f.t.Fatalf("report container: %v %v", rej, err)
	}
	return id
}

// TestTouchNodes: one statement stamps the nodes given with the database's
// now(), except those stamped within fresh (another replica's flush or an
// inventory report did it already).
func TestTouchNodes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	never := f.newNode("node-new")
	f.exec(`UPDATE nodes SET last_seen_at = now() - interval '1 hour' WHERE id = $1`, f.node.ID)
	n, err := f.st.TouchNodes(f.ctx, []string{f.node.ID, never.ID}, time.Minute)
	if err != nil || n != 2 {
		t.Fatalf("touch a stale and a never-seen node: stamped %d (%v), want 2", n, err)
	}
	var ago float64
	if err := f.st.db.GetContext(f.ctx, &ago, `SELECT max(extract(epoch FROM now() - last_seen_at))::float8 FROM nodes WHERE id IN ($1, $2)`,
		f.node.ID, never.ID); err != nil || ago > 60 {
		t.Fatalf("stamped %v s ago (%v), want now", ago, err)
	}
	if n, err := f.st.TouchNodes(f.ctx, []string{f.node.ID, never.ID}, time.Minute); err != nil || n != 0 {
		t.Fatalf("touch again within fresh: stamped %d (%v), want 0", n, err)
	}
	if n, err := f.st.TouchNodes(f.ctx, nil, time.Minute); err != nil || n != 0 {
		t.Fatalf("touch none: %d %v", n, err)
	}
}

// TestOnEndedCountsEveryEnding: every way the store makes a command
// terminal is told to OnEnded once, after its commit, with its status and
// end reason; a repeated finish and a rolled-back one are not.
func TestOnEndedCountsEveryEnding(t *testing.T) {
	t.Parallel()
	f := setup(t)
	got := map[[2]string]int{}
	f.st.OnEnded(func(status shared.Status, reason shared.EndReason, n int) {
		got[[2]string{string(status), string(reason)}] += n
	})
	want := map[[2]string]int{}

	// Agent finishes: exit 0, exit 3, and a repeat of the first.
	ok := f.running()
	req := shared.FinishRequest{Attempt: ok.Attempt, ExitCode: exit(0)}
	for range 2 {
		if _, err := f.st.Finish(f.ctx, ok.ID, f.node.ID, req, testCap); err != nil {
			t.Fatal(err)
		}
	}
	want[[2]string{"succeeded", "exited"}] = 1
	bad := f.running()
	if _, err := f.st.Finish(f.ctx, bad.ID, f.node.ID, shared.FinishRequest{Attempt: bad.Attempt, ExitCode: exit(3)}, testCap); err != nil {
		t.Fatal(err)
	}
	want[[2]string{"failed", "exited"}] = 1
	// A finish declaring less output than stored is refused and rolled back.
	short := f.running()
	if _, err := f.st.Heartbeat(f.ctx, short.ID, f.node.ID, short.Attempt, []shared.Chunk{{Stream: "stdout", Data: []byte("abc")}}, testTTL, testCap); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Finish(f.ctx, short.ID, f.node.ID, shared.FinishRequest{Attempt: short.Attempt, ExitCode: exit(0), StdoutLength: 1}, testCap); !errors.Is(err, ErrLengthMismatch) {
		t.Fatalf("short finish: %v, want ErrLengthMismatch", err)
	}

	// Cancel while queued.
	q := f.enqueue("true")
	if _, res, err := f.st.Cancel(f.ctx, q.ID, f.user, 0); err != nil || res != CancelledQueued {
		t.Fatalf("cancel queued: %v %v", res, err)
	}
	want[[2]string{"cancelled", "cancelled"}] = 1

	// The reaper: agent lost, timed out, not picked up.
	lost := f.running()
	f.expireLease(lost.ID)
	if ids, err := f.st.FailLost(f.ctx, 0, 10); err != nil || len(ids) != 1 {
		t.Fatalf("fail lost: %v %v", ids, err)
	}
	want[[2]string{"failed", "agent_lost"}] = 1
	if _, err := f.st.Enqueue(f.ctx, f.container, f.user.ID, shared.SubmitRequest{Program: "sleep", Args: []string{"9"}, TimeoutSeconds: shared.Secs(1)}); err != nil {
		t.Fatal(err)
	}
	slow := f.claimOne()
	if _, err := f.st.Start(f.ctx, slow.ID, f.node.ID, slow.Attempt, testTTL); err != nil {
		t.Fatal(err)
	}
	f.exec(`UPDATE commands SET run_deadline = now() - interval '1 hour' WHERE id = $1`, slow.ID)
	if ids, err := f.st.FailTimedOut(f.ctx, time.Second, 10); err != nil || len(ids) != 1 {
		t.Fatalf("fail timed out: %v %v", ids, err)
	}
	want[[2]string{"failed", "timed_out"}] = 1
	late, err := f.st.Enqueue(f.ctx, f.container, f.user.ID, shared.SubmitRequest{Program: "true", Args: []string{}, QueueTimeoutSeconds: shared.Secs(60)})
	if err != nil {
		t.Fatal(err)
	}
	f.exec(`UPDATE commands SET queue_deadline = now() - interval '1 second' WHERE id = $1`, late.ID)
	if ids, err := f.st.FailNotPickedUp(f.ctx, 10); err != nil || len(ids) != 1 {
		t.Fatalf("fail not picked up: %v %v", ids, err)
	}
	// Revoking the node fails its two queued commands.
	f.enqueue("true")
	f.enqueue("true")
	if _, n, err := f.st.RevokeNode(f.ctx, Ref{ID: f.node.ID}); err != nil || n != 2 {
		t.Fatalf("revoke: %d %v", n, err)
	}
	want[[2]string{"failed", "not_picked_up"}] = 3

	if !maps.Equal(got, want) {
		t.Errorf("endings told %v, want %v", got, want)
	}
}

// TestReceivedCountsNewBytes: a heartbeat or finish reports the new output
// bytes it brought per stream; a retry of bytes already stored brings none.
func TestReceivedCountsNewBytes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	hb := func(chunks ...shared.Chunk) shared.Offsets {
		t.Helper()
		rn, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, chunks, testTTL, testCap)
		if err != nil {
			t.Fatal(err)
		}
		return rn.Received
	}
	if got := hb(shared.Chunk{Stream: "stdout", Data: []byte("hello")}, shared.Chunk{Stream: "stderr", Data: []byte("oops")}); got != (shared.Offsets{Stdout: 5, Stderr: 4}) {
		t.Errorf("first heartbeat received %+v, want 5 and 4", got)
	}
	// A retry overlapping what is stored: only "!" is new.
	if got := hb(shared.Chunk{Stream: "stdout", Data: []byte("hello!")}); got != (shared.Offsets{Stdout: 1}) {
		t.Errorf("overlapping retry received %+v, want 1 stdout byte", got)
	}
	res, err := f.st.Finish(f.ctx, c.ID, f.node.ID, shared.FinishRequest{Attempt: c.Attempt, ExitCode: exit(0),
		Chunks: []shared.Chunk{{Stream: "stderr", Offset: 4, Data: []byte("!!")}}, StdoutLength: 6, StderrLength: 6}, testCap)
	if err != nil || res.Received != (shared.Offsets{Stderr: 2}) {
		t.Errorf("finish received %+v (%v), want 2 stderr bytes", res.Received, err)
	}
}
