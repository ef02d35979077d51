package store

import (
	"errors"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/execq/execq/shared"
)

func TestEnqueue(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.enqueue("echo", "a", "")
	if c.Status != shared.StatusQueued || c.NodeID != f.node.ID || c.ContainerID != f.container ||
		c.RequestedBy != f.user.ID || c.Program != "echo" || !slices.Equal(c.Args, []string{"a", ""}) ||
		c.Attempt != 0 || c.LeasedBy.Valid || len(c.Stdout) != 0 || len(c.Stderr) != 0 {
		t.Errorf("enqueued %+v", c)
	}
	if got := f.get(c.ID); got.ID != c.ID || !got.CreatedAt.Equal(c.CreatedAt) {
		t.Errorf("read back %+v, want %+v", got, c)
	}

	_, err := f.st.Enqueue(f.ctx, uuid.NewString(), f.user.ID, shared.SubmitRequest{Program: "true", Args: []string{}})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("enqueue on an unreported container: %v, want ErrNotFound", err)
	}
	if _, err := f.st.Get(f.ctx, uuid.NewString()); !errors.Is(err, ErrNotFound) {
		t.Errorf("get of an unknown command: %v, want ErrNotFound", err)
	}
}

// TestEnqueueUnflushedThenFlush: an unflushed enqueue queues the command as
// Enqueue does; FlushCommand then returns only once the WAL is on disk past
// the enqueue's commit, and finds no row for a command that is not there.
func TestEnqueueUnflushedThenFlush(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c, err := f.st.EnqueueUnflushed(f.ctx, f.container, f.user.ID, shared.SubmitRequest{Program: "echo", Args: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != shared.StatusQueued || c.NodeID != f.node.ID || c.Program != "echo" || !slices.Equal(c.Args, []string{"a"}) {
		t.Errorf("enqueued %+v", c)
	}
	// The enqueue's commit record is before this position.
	var inserted string
	if err := f.st.DB().GetContext(f.ctx, &inserted, `SELECT pg_current_wal_insert_lsn()::text`); err != nil {
		t.Fatal(err)
	}
	if err := f.st.FlushCommand(f.ctx, c.ID); err != nil {
		t.Fatalf("flush: %v", err)
	}
	var flushed bool
	if err := f.st.DB().GetContext(f.ctx, &flushed, `SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn`, inserted); err != nil {
		t.Fatal(err)
	}
	if !flushed {
		t.Error("FlushCommand returned before the WAL was flushed past the enqueue")
	}
	if got := f.get(c.ID); got.ID != c.ID || got.Status != shared.StatusQueued {
		t.Errorf("read back %+v", got)
	}
	if err := f.st.FlushCommand(f.ctx, uuid.NewString()); !errors.Is(err, ErrNotFound) {
		t.Errorf("flush of an unknown command: %v, want ErrNotFound", err)
	}
	_, err = f.st.EnqueueUnflushed(f.ctx, uuid.NewString(), f.user.ID, shared.SubmitRequest{Program: "true", Args: []string{}})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("unflushed enqueue on an unreported container: %v, want ErrNotFound", err)
	}
}

func TestClaim(t *testing.T) {
	t.Parallel()
	f := setup(t)
	a, b, c := f.enqueue("a"), f.enqueue("b"), f.enqueue("c")

	cs, err := f.st.Claim(f.ctx, f.node.ID, 2, testTTL)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].ID != a.ID || cs[1].ID != b.ID {
		t.Fatalf("claimed %v, want the two oldest in submit order", cs)
	}
	for _, got := range cs {
		if got.Attempt != 1 || got.LeasedBy.String != f.node.ID || got.Status != shared.StatusQueued {
			t.Errorf("claimed %+v: want attempt 1, leased by the node, still queued", got)
		}
		// The dispatch figure is read on the database's clock: the claim
		// stamped its expiry as that same now() + TTL.
		want := got.LeaseExpiresAt.Time.Add(-testTTL).Sub(got.CreatedAt).Seconds()
		if math.Abs(got.QueuedSeconds-want) > 2e-6 {
			t.Errorf("queued for %.6fs, want %.6fs (the claim's now() - created_at)", got.QueuedSeconds, want)
		}
	}

	// Another node sees nothing of this node's queue.
	other := f.newNode("node-b")
	if cs, err := f.st.Claim(f.ctx, other.ID, 10, testTTL); err != nil || len(cs) != 0 {
		t.Errorf("other node claimed %v (%v), want nothing", cs, err)
	}
	// A live lease is not handed out again; an expired one is, as a new attempt.
	f.expireLease(a.ID)
	cs, err = f.st.Claim(f.ctx, f.node.ID, 10, testTTL)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].ID != a.ID || cs[0].Attempt != 2 || cs[1].ID != c.ID {
		t.Errorf("second claim %v, want a (attempt 2) and c", cs)
	}
}

// TestClaimConcurrentPollersNeverShare: pollers claiming at once never get
// the same command.
func TestClaimConcurrentPollersNeverShare(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for range 40 {
		f.enqueue("true")
	}
	var (
		mu   sync.Mutex
		seen = map[string]int{}
		wg   sync.WaitGroup
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				cs, err := f.st.Claim(f.ctx, f.node.ID, 3, testTTL)
				if err != nil {
					t.Error(err)
					return
				}
				if len(cs) == 0 {
					return
				}
				mu.Lock()
				for _, c := range cs {
					seen[c.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 40 {
		t.Errorf("%d commands claimed, want 40", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("command %s claimed %d times", id, n)
		}
	}
}

func TestStart(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.enqueue("true")
	c := f.claimOne()
	other := f.newNode("node-b")

	if _, err := f.st.Start(f.ctx, c.ID, other.ID, c.Attempt, testTTL); !errors.Is(err, ErrForbidden) {
		t.Errorf("start by another node: %v, want ErrForbidden", err)
	}
	if _, err := f.st.Start(f.ctx, c.ID, f.node.ID, c.Attempt+1, testTTL); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("start with a wrong attempt: %v, want ErrLeaseLost", err)
	}
	exp, err := f.st.Start(f.ctx, c.ID, f.node.ID, c.Attempt, testTTL)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	got := f.get(c.ID)
	if got.Status != shared.StatusRunning || !got.StartedAt.Valid || !got.LeaseExpiresAt.Time.Equal(exp) {
		t.Errorf("after start %+v (lease %v)", got, exp)
	}
	// A retried start by the same lease gets the same yes.
	if again, err := f.st.Start(f.ctx, c.ID, f.node.ID, c.Attempt, testTTL); err != nil || !again.Equal(exp) {
		t.Errorf("repeated start: %v %v, want %v", again, err, exp)
	}

	// A lease that expired before start may not start.
	f.enqueue("true")
	late := f.claimOne()
	f.expireLease(late.ID)
	if _, err := f.st.Start(f.ctx, late.ID, f.node.ID, late.Attempt, testTTL); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("start of an expired lease: %v, want ErrLeaseLost", err)
	}
	if _, err := f.st.Start(f.ctx, uuid.NewString(), f.node.ID, 1, testTTL); !errors.Is(err, ErrNotFound) {
		t.Errorf("start of an unknown command: %v, want ErrNotFound", err)
	}
}

// TestRunningRowsKeepTheirLeaseHolder: the schema refuses a running row
// without leased_by, which the reaper's index relies on.
func TestRunningRowsKeepTheirLeaseHolder(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	if _, err := f.st.db.ExecContext(f.ctx, `UPDATE commands SET leased_by = NULL WHERE id = $1`, c.ID); err == nil {
		t.Fatal("a running command without leased_by was accepted")
	}
}

func chunk(stream string, off int64, data string) shared.Chunk {
	return shared.Chunk{Stream: stream, Offset: off, Data: []byte(data)}
}

func TestHeartbeatChunkOffsets(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	hb := func(chunks ...shared.Chunk) (shared.Offsets, error) {
		t.Helper()
		rn, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, chunks, testTTL, testCap)
		off := rn.Offsets
		return off, err
	}
	stdout := func() string {
		t.Helper()
		return string(f.readAll(c.ID, streamStdout).Data)
	}

	if off, err := hb(chunk("stdout", 0, "hello "), chunk("stderr", 0, "e")); err != nil || off != (shared.Offsets{Stdout: 6, Stderr: 1}) {
		t.Fatalf("first heartbeat: %v %v", off, err)
	}
	// A duplicate (a retry whose answer was lost) changes nothing.
	if off, err := hb(chunk("stdout", 0, "hello ")); err != nil || off.Stdout != 6 {
		t.Fatalf("duplicate: %v %v", off, err)
	}
	// An overlap keeps only its new part.
	if off, err := hb(chunk("stdout", 3, "lo world")); err != nil || off.Stdout != 11 {
		t.Fatalf("overlap: %v %v", off, err)
	}
	if got := stdout(); got != "hello world" {
		t.Fatalf("stdout %q after duplicate and overlap", got)
	}
	// A gap is refused whole, with the stored offsets to resend from, even
	// when an earlier chunk of the same request was fine.
	_, err := hb(chunk("stderr", 1, "rr"), chunk("stdout", 20, "!"))
	var gap *GapError
	if !errors.As(err, &gap) || gap.Offsets != (shared.Offsets{Stdout: 11, Stderr: 1}) {
		t.Fatalf("gap: %v, want a GapError at stdout 11 stderr 1", err)
	}
	if got := stdout(); got != "hello world" {
		t.Errorf("stdout %q after a refused gap", got)
	}
	// No chunks: a plain renewal that moves the lease.
	before := f.get(c.ID).LeaseExpiresAt.Time
	rn, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, nil, 2*testTTL, testCap)
	off, exp := rn.Offsets, rn.LeaseExpiresAt
	if err != nil || off != (shared.Offsets{Stdout: 11, Stderr: 1}) || !exp.After(before) {
		t.Errorf("renewal: %v %v %v (lease before %v)", off, exp, err, before)
	}
	// Past the cap the bytes are counted, not stored, and the stream says so.
	if off, err := hb(chunk("stderr", 1, string(make([]byte, testCap)))); err != nil || off.Stderr != testCap+1 {
		t.Fatalf("past the cap: %v %v", off, err)
	}
	if got := f.get(c.ID); !got.StderrTruncated || got.StdoutTruncated {
		t.Errorf("truncation flags stdout %v stderr %v, want only stderr", got.StdoutTruncated, got.StderrTruncated)
	}

	// Only the holder of the running lease may heartbeat.
	other := f.newNode("node-b")
	if _, err := f.st.Heartbeat(f.ctx, c.ID, other.ID, c.Attempt, nil, testTTL, testCap); !errors.Is(err, ErrForbidden) {
		t.Errorf("heartbeat by another node: %v, want ErrForbidden", err)
	}
	if _, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt+1, nil, testTTL, testCap); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("heartbeat with a wrong attempt: %v, want ErrLeaseLost", err)
	}
}

func exit(code int) *int { return &code }

func TestFinish(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	if _, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, []shared.Chunk{chunk("stdout", 0, "ab")}, testTTL, testCap); err != nil {
		t.Fatal(err)
	}
	req := shared.FinishRequest{Attempt: c.Attempt, Chunks: []shared.Chunk{chunk("stdout", 2, "cd")}, StdoutLength: 6, ExitCode: exit(0)}

	// Bytes announced but not arrived: what came is kept, the gap reported.
	_, err := f.st.Finish(f.ctx, c.ID, f.node.ID, req, testCap)
	var gap *GapError
	if !errors.As(err, &gap) || gap.Offsets.Stdout != 4 {
		t.Fatalf("finish with missing bytes: %v, want a GapError at stdout 4", err)
	}
	if got := f.get(c.ID); got.Status != shared.StatusRunning {
		t.Fatalf("status %s after an incomplete finish, want running", got.Status)
	}
	// Declaring less than was stored is refused.
	short := req
	short.Chunks, short.StdoutLength = nil, 1
	if _, err := f.st.Finish(f.ctx, c.ID, f.node.ID, short, testCap); !errors.Is(err, ErrLengthMismatch) {
		t.Errorf("finish declaring less than stored: %v, want ErrLengthMismatch", err)
	}

	req.Chunks = []shared.Chunk{chunk("stdout", 2, "cdef")}
	res, err := f.st.Finish(f.ctx, c.ID, f.node.ID, req, testCap)
	if err != nil || res.Status != shared.StatusSucceeded || res.Repeat {
		t.Fatalf("finish: %+v %v", res, err)
	}
	got := f.get(c.ID)
	if got.Status != shared.StatusSucceeded || string(got.Stdout) != "abcdef" || !got.ExitCode.Valid || got.ExitCode.Int32 != 0 ||
		!got.FinishedAt.Valid || got.LeaseExpiresAt.Valid {
		t.Errorf("finished record %+v stdout %q", got.Command, got.Stdout)
	}
	// The chunks are the record's output, stored once (no copy in the
	// record's column).
	f.storedOnce(c.ID, streamStdout, []byte("abcdef"))
	// A repeat by the same lease answers the stored status.
	if res, err := f.st.Finish(f.ctx, c.ID, f.node.ID, req, testCap); err != nil || !res.Repeat || res.Status != shared.StatusSucceeded {
		t.Errorf("repeated finish: %+v %v", res, err)
	}

	// An internal error fails the command and says so in stderr.
	d := f.running()
	res, err = f.st.Finish(f.ctx, d.ID, f.node.ID, shared.FinishRequest{Attempt: d.Attempt, Error: "program not found"}, testCap)
	if err != nil || res.Status != shared.StatusFailed {
		t.Fatalf("finish with an error: %+v %v", res, err)
	}
	if got := f.get(d.ID); string(got.Stderr) != "execq: program not found\n" || got.ExitCode.Valid {
		t.Errorf("failed record stderr %q exit %v", got.Stderr, got.ExitCode)
	}
}

func TestRequeueExpired(t *testing.T) {
	t.Parallel()
	f := setup(t)
	live := f.enqueue("true")
	expired := f.enqueue("true")
	started := f.enqueue("true")
	for range 3 {
		f.claimOne()
	}
	if _, err := f.st.Start(f.ctx, started.ID, f.node.ID, 1, testTTL); err != nil {
		t.Fatal(err)
	}
	f.expireLease(expired.ID)
	f.expireLease(started.ID) // running: the lost-agent path's business, not this one's

	n, err := f.st.RequeueExpired(f.ctx)
	if err != nil || n != 1 {
		t.Fatalf("requeued %d (%v), want 1", n, err)
	}
	if got := f.get(expired.ID); got.Status != shared.StatusQueued || got.LeasedBy.Valid || got.LeaseExpiresAt.Valid || got.Attempt != 1 {
		t.Errorf("requeued row %+v: want queued, no lease, attempt kept", got.Command)
	}
	if got := f.get(live.ID); !got.LeasedBy.Valid {
		t.Errorf("a live lease was released")
	}
	if got := f.get(started.ID); got.Status != shared.StatusRunning {
		t.Errorf("a running command was requeued: %s", got.Status)
	}
	if n, err := f.st.RequeueExpired(f.ctx); err != nil || n != 0 {
		t.Errorf("second pass requeued %d (%v), want 0", n, err)
	}
}

func TestFailLost(t *testing.T) {
	t.Parallel()
	f := setup(t)
	alive := f.running()
	lost := []string{f.running().ID, f.running().ID, f.running().ID}
	for _, id := range lost {
		f.expireLease(id)
	}
	f.enqueue("true")
	f.expireLease(f.claimOne().ID) // queued: requeued, never failed

	// Batches: the limit bounds one pass, the next pass takes the rest.
	first, err := f.st.FailLost(f.ctx, 0, 2)
	if err != nil || len(first) != 2 {
		t.Fatalf("first pass failed %v (%v), want 2", first, err)
	}
	rest, err := f.st.FailLost(f.ctx, 0, 2)
	if err != nil || len(rest) != 1 {
		t.Fatalf("second pass failed %v (%v), want 1", rest, err)
	}
	if got := append(first, rest...); !sameSet(got, lost) {
		t.Errorf("failed %v, want %v", got, lost)
	}
	for _, id := range lost {
		c := f.get(id)
		if c.Status != shared.StatusFailed || c.LeasedBy.Valid || !c.FinishedAt.Valid {
			t.Errorf("lost command %+v: want failed with the lease cleared", c.Command)
		}
		if want := `execq: agent lost: node "node-a"`; len(c.Stderr) < len(want) || string(c.Stderr[:len(want)]) != want {
			t.Errorf("stderr %q, want it to start with %q", c.Stderr, want)
		}
		// The old lease can no longer finish it.
		if _, err := f.st.Finish(f.ctx, id, f.node.ID, shared.FinishRequest{Attempt: 1, ExitCode: exit(0)}, testCap); !errors.Is(err, ErrLeaseLost) {
			t.Errorf("finish after agent lost: %v, want ErrLeaseLost", err)
		}
	}
	if got := f.get(alive.ID); got.Status != shared.StatusRunning {
		t.Errorf("a heartbeating command was failed: %s", got.Status)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestStats(t *testing.T) {
	t.Parallel()
	f := setup(t)
	s, err := f.st.Stats(f.ctx)
	if err != nil || s.Queued != 0 || s.Running != 0 || s.OldestQueuedS.Valid {
		t.Fatalf("empty queue stats %+v (%v)", s, err)
	}
	// Running: an hour-old command and a fresh one; a third finished.
	old := f.enqueue("true")
	f.exec(`UPDATE commands SET created_at = now() - interval '1 hour' WHERE id = $1`, old.ID)
	if c := f.claimOne(); c.ID != old.ID {
		t.Fatalf("claimed %s, want the only queued command", c.ID)
	} else if _, err := f.st.Start(f.ctx, c.ID, f.node.ID, c.Attempt, testTTL); err != nil {
		t.Fatalf("start: %v", err)
	}
	f.running()
	done := f.running()
	if _, err := f.st.Finish(f.ctx, done.ID, f.node.ID, shared.FinishRequest{Attempt: done.Attempt, ExitCode: exit(0)}, testCap); err != nil {
		t.Fatal(err)
	}
	// Three queued, one of them leased (still queued until started).
	for range 3 {
		f.enqueue("true")
	}
	f.claimOne()

	s, err = f.st.Stats(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Queued != 3 || s.Running != 2 {
		t.Errorf("queued %d running %d, want 3 and 2", s.Queued, s.Running)
	}
	// The hour-old command runs: the oldest queued one is fresh.
	if !s.OldestQueuedS.Valid || s.OldestQueuedS.Float64 >= time.Hour.Seconds() {
		t.Errorf("oldest queued age %+v, want a valid age below an hour", s.OldestQueuedS)
	}
	f.exec(`UPDATE commands SET created_at = now() - interval '2 hours' WHERE status = 'queued'`)
	if s, err := f.st.Stats(f.ctx); err != nil || s.OldestQueuedS.Float64 < 2*time.Hour.Seconds() {
		t.Errorf("oldest queued age %+v (%v), want at least two hours", s.OldestQueuedS, err)
	}
}

func TestRelease(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.enqueue("true")
	c := f.claimOne()
	if err := f.st.Release(f.ctx, c.ID, f.node.ID, c.Attempt); err != nil {
		t.Fatalf("release: %v", err)
	}
	if got := f.get(c.ID); got.Status != shared.StatusQueued || got.LeasedBy.Valid {
		t.Errorf("released row %+v: want queued without a lease", got.Command)
	}
	// A repeat is harmless.
	if err := f.st.Release(f.ctx, c.ID, f.node.ID, c.Attempt); err != nil {
		t.Errorf("repeated release: %v", err)
	}
	// Taken again: the old lease can neither release nor start it.
	again := f.claimOne()
	if err := f.st.Release(f.ctx, c.ID, f.node.ID, c.Attempt); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("release by a replaced lease: %v, want ErrLeaseLost", err)
	}
	if _, err := f.st.Start(f.ctx, again.ID, f.node.ID, again.Attempt, testTTL); err != nil {
		t.Fatal(err)
	}
	if err := f.st.Release(f.ctx, again.ID, f.node.ID, again.Attempt); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("release of a started command: %v, want ErrLeaseLost", err)
	}
	if err := f.st.Release(f.ctx, again.ID, f.newNode("node-b").ID, again.Attempt); !errors.Is(err, ErrForbidden) {
		t.Errorf("release by another node: %v, want ErrForbidden", err)
	}
}

// TestOutput: while running, a stream is read from its chunks; once
// terminal, from the record; the bytes are exact (NUL, invalid UTF-8).
func TestOutput(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	raw := "a\x00\xff"
	if _, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt,
		[]shared.Chunk{chunk("stdout", 0, raw), chunk("stderr", 0, "err")}, testTTL, testCap); err != nil {
		t.Fatal(err)
	}
	read := func(stream int) OutputPiece {
		t.Helper()
		return f.readAll(c.ID, stream)
	}
	if out := read(streamStdout); string(out.Data) != raw || out.Status != shared.StatusRunning || out.RequestedBy != f.user.ID {
		t.Errorf("running stdout %+v", out)
	}
	if _, err := f.st.Finish(f.ctx, c.ID, f.node.ID, shared.FinishRequest{Attempt: c.Attempt, StdoutLength: 3, StderrLength: 3, ExitCode: exit(1)}, testCap); err != nil {
		t.Fatal(err)
	}
	if out := read(streamStdout); string(out.Data) != raw || out.Status != shared.StatusFailed {
		t.Errorf("finished stdout %+v", out)
	}
	if out := read(streamStderr); string(out.Data) != "err" {
		t.Errorf("finished stderr %q", out.Data)
	}
	if _, err := f.st.ReadOutput(f.ctx, uuid.NewString(), streamStdout, 0, 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("output of an unknown command: %v, want ErrNotFound", err)
	}
}

// TestNodesWithWork lists a node exactly while a claim would take one of its
// commands: queued and unleased, or leased with the lease expired.
func TestNodesWithWork(t *testing.T) {
	f := setup(t)
	want := func(nodes ...string) {
		t.Helper()
		got, err := f.st.NodesWithWork(f.ctx)
		if err != nil {
			t.Fatalf("nodes with work: %v", err)
		}
		if len(got) != len(nodes) || (len(nodes) == 1 && got[0] != nodes[0]) {
			t.Fatalf("nodes with work = %v, want %v", got, nodes)
		}
	}
	want()
	f.enqueue("true")
	f.enqueue("true")
	want(f.node.ID) // one row per node, however many commands
	first := f.claimOne()
	want(f.node.ID)
	f.claimOne()
	want() // all leased
	f.expireLease(first.ID)
	want(f.node.ID)
	f.claimOne()
	f.running()
	want()
}

// TestFailLostGrace: a running command whose lease expired less than the
// grace ago is left to its agent — a heartbeat that reached a coordinator
// before the expiry but waits for the database may still land — and
// failed once the grace has passed.
func TestFailLostGrace(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	f.exec(`UPDATE commands SET lease_expires_at = now() - interval '2 seconds' WHERE id = $1`, c.ID)
	if ids, err := f.st.FailLost(f.ctx, time.Minute, 10); err != nil || len(ids) != 0 {
		t.Fatalf("within the grace: failed %v (%v), want none", ids, err)
	}
	// The late heartbeat lands: the lease is renewed, nothing is lost.
	if _, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, nil, testTTL, testCap); err != nil {
		t.Fatalf("late heartbeat: %v", err)
	}
	if got := f.get(c.ID); got.Status != shared.StatusRunning || !got.LeaseExpiresAt.Time.After(time.Now()) {
		t.Fatalf("after the late heartbeat: %+v, want running with a renewed lease", got.Command)
	}
	f.exec(`UPDATE commands SET lease_expires_at = now() - interval '2 seconds' WHERE id = $1`, c.ID)
	if ids, err := f.st.FailLost(f.ctx, time.Second, 10); err != nil || len(ids) != 1 {
		t.Fatalf("past the grace: failed %v (%v), want the command", ids, err)
	}
}

// TestClaimCommitsWithoutWaitingForFlush: the claim's transaction commits
// with synchronous_commit off — it does not wait for its WAL to reach disk
// (see claimSQL for why at-most-once holds) — and turns it off for itself
// only.
func TestClaimCommitsWithoutWaitingForFlush(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.enqueue("true")
	// One connection whose own setting is on, whatever the server's default
	// (the test cluster runs with synchronous_commit off): the claim must
	// turn it off for its transaction alone.
	conn, err := f.st.db.Connx(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(f.ctx, `SET synchronous_commit = on`); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.BeginTxx(f.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var cs []Command
	if err := tx.SelectContext(f.ctx, &cs, claimSQL, pq.Array([]string{f.node.ID}), pq.Array([]int64{1}), testTTL.Milliseconds()); err != nil || len(cs) != 1 {
		t.Fatalf("claim: %v %v", cs, err)
	}
	var mode string
	if err := tx.GetContext(f.ctx, &mode, `SHOW synchronous_commit`); err != nil || mode != "off" {
		t.Fatalf("synchronous_commit in the claim's transaction = %q (%v), want off", mode, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := conn.GetContext(f.ctx, &mode, `SHOW synchronous_commit`); err != nil || mode != "on" {
		t.Fatalf("synchronous_commit after the claim = %q (%v), want on: the claim must not change it for others", mode, err)
	}
}

// TestLostClaimIsNeverStarted: a claim lost in a crash (its row as it was
// before the claim, since its commit had not reached disk) cannot be
// started: start requires the lease the claim wrote. Claimed again, the
// command gets the same attempt, so two leases may name it alike — which is
// why an agent runs one session per command (agent/worker) — and start says
// yes to the new one.
func TestLostClaimIsNeverStarted(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.enqueue("true")
	cs, err := f.st.Claim(f.ctx, f.node.ID, 1, testTTL)
	if err != nil || len(cs) != 1 || cs[0].Attempt != 1 {
		t.Fatalf("claim: %v %v", cs, err)
	}
	// What recovery shows when the claim's commit was lost.
	if _, err := f.st.db.ExecContext(f.ctx, `UPDATE commands SET attempt = 0, leased_by = NULL, lease_expires_at = NULL WHERE id = $1`, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Start(f.ctx, c.ID, f.node.ID, 1, testTTL); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("start under the lost claim: %v, want ErrLeaseLost", err)
	}
	cs, err = f.st.Claim(f.ctx, f.node.ID, 1, testTTL)
	if err != nil || len(cs) != 1 || cs[0].Attempt != 1 {
		t.Fatalf("claim again: %v %v, want attempt 1 again", cs, err)
	}
	if _, err := f.st.Start(f.ctx, c.ID, f.node.ID, 1, testTTL); err != nil {
		t.Fatalf("start under the new claim: %v", err)
	}
}
