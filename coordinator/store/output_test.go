package store

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/execq/execq/shared"
)

// readAll reads a whole stream through ReadOutput, piece by piece as the API
// does, and checks every piece against the stored end.
func (f *fixture) readAll(id string, stream int) OutputPiece {
	f.t.Helper()
	var all OutputPiece
	for off := int64(0); ; {
		p, err := f.st.ReadOutput(f.ctx, id, stream, off, 1000)
		if err != nil {
			f.t.Fatalf("read output of %s from %d: %v", id, off, err)
		}
		all.RequestedBy, all.Status, all.End, all.Omitted, all.OmittedAt = p.RequestedBy, p.Status, p.End, p.Omitted, p.OmittedAt
		all.Data = append(all.Data, p.Data...)
		off += int64(len(p.Data))
		if len(p.Data) == 0 || off >= p.End {
			return all
		}
	}
}

// TestReadOutput: any piece of a stream, at any offset and size, is the
// exact bytes there, read from the chunks while the command runs and from
// the record once terminal, however the chunks were cut.
func TestReadOutput(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	rng := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 5000)
	for i := range data {
		data[i] = byte(rng.Uint32()) // NUL and invalid UTF-8 included
	}
	for off := 0; off < len(data); {
		end := min(off+1+rng.IntN(400), len(data))
		if _, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt,
			[]shared.Chunk{{Stream: "stdout", Offset: int64(off), Data: data[off:end]}}, testTTL, testCap); err != nil {
			t.Fatal(err)
		}
		off = end
	}
	if _, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, []shared.Chunk{chunk("stderr", 0, "err")}, testTTL, testCap); err != nil {
		t.Fatal(err)
	}
	check := func(status shared.Status) {
		t.Helper()
		for _, from := range []int64{0, 1, 399, 400, 401, 2500, 4999, 5000, 5001, 1 << 40} {
			for _, n := range []int{1, 7, 400, 1000, 6000} {
				p, err := f.st.ReadOutput(f.ctx, c.ID, streamStdout, from, n)
				if err != nil {
					t.Fatalf("%s: read %d from %d: %v", status, n, from, err)
				}
				lo := min(from, int64(len(data)))
				want := data[lo:min(lo+int64(n), int64(len(data)))]
				if !bytes.Equal(p.Data, want) || p.End != int64(len(data)) || p.Status != status || p.RequestedBy != f.user.ID {
					t.Fatalf("%s: read %d from %d: %d bytes (want %d), end %d, status %s", status, n, from, len(p.Data), len(want), p.End, p.Status)
				}
			}
		}
		if got := f.readAll(c.ID, streamStdout); !bytes.Equal(got.Data, data) {
			t.Fatalf("%s: whole stdout %d bytes differ", status, len(got.Data))
		}
		if got := f.readAll(c.ID, streamStderr); string(got.Data) != "err" || got.End != 3 {
			t.Fatalf("%s: stderr %q end %d", status, got.Data, got.End)
		}
	}
	check(shared.StatusRunning)
	if _, err := f.st.Finish(f.ctx, c.ID, f.node.ID, shared.FinishRequest{Attempt: c.Attempt,
		StdoutLength: int64(len(data)), StderrLength: 3, ExitCode: exit(0)}, testCap); err != nil {
		t.Fatal(err)
	}
	check(shared.StatusSucceeded)

	queued := f.enqueue("true")
	if p, err := f.st.ReadOutput(f.ctx, queued.ID, streamStdout, 0, 10); err != nil || len(p.Data) != 0 || p.End != 0 || p.Status != shared.StatusQueued {
		t.Errorf("queued command: %+v %v", p, err)
	}
	if _, err := f.st.ReadOutput(f.ctx, uuid.NewString(), streamStdout, 0, 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown command: %v, want ErrNotFound", err)
	}
}

// TestReadOutputUsesIndexes: a piece of a command's stream, running or
// terminal, is found through the chunks' primary key, not by reading every
// chunk of the command (a 64 MiB stream is thousands of rows, read at every
// wake-up of every follower and every slice of a record).
func TestReadOutputUsesIndexes(t *testing.T) {
	f := setup(t)
	c := f.running()
	f.exec(`INSERT INTO command_chunks (command_id, stream, off, data)
		SELECT $1, s, i * 100, convert_to(repeat('x', 100), 'UTF8')
		FROM generate_series(0, 20000) AS i, generate_series(1, 2) AS s`, c.ID)
	// Other commands' output, as in any real table: the rows of one command
	// are a sliver of it.
	f.exec(`WITH o AS (
			INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status, finished_at)
			SELECT gen_random_uuid(), $1, $2, $3, 'true', '{}', 'succeeded', now() FROM generate_series(1, 2000)
			RETURNING id)
		INSERT INTO command_chunks (command_id, stream, off, data)
		SELECT o.id, 1, i * 100, convert_to(repeat('y', 100), 'UTF8') FROM o, generate_series(0, 49) AS i`,
		f.container, f.node.ID, f.user.ID)
	f.exec(`ANALYZE command_chunks`)
	explain := func(query string, args ...any) {
		t.Helper()
		plan, raw := f.explain(t, query, args...)
		for _, rel := range []string{"commands", "command_chunks"} {
			if seq := plan.seqScans(rel); len(seq) > 0 {
				t.Errorf("plan reads the whole %s table (%s):\n%s", rel, strings.Join(seq, "; "), raw)
			}
		}
	}
	read := func() {
		t.Helper()
		explain(readStdoutSQL, c.ID, streamStdout, 1_000_050, 1000)
		p, err := f.st.ReadOutput(f.ctx, c.ID, streamStdout, 1_000_050, 1000)
		if err != nil || len(p.Data) != 1000 || p.End != 2_000_100 {
			t.Fatalf("read: %d bytes, end %d, %v", len(p.Data), p.End, err)
		}
	}
	read()
	// A terminal command's output is still its chunks: read the same way,
	// its head's sizes by one probe each, and its rows deleted with it
	// (retention) through the key: the statement the foreign key's cascade
	// runs for each command deleted, here for one of the many.
	f.exec(`UPDATE commands SET status = 'succeeded', finished_at = now() WHERE id = $1`, c.ID)
	read()
	explain(getHeadSQL, c.ID)
	if h, err := f.st.GetHead(f.ctx, c.ID); err != nil || h.StdoutSize != 2_000_100 || h.StderrSize != 2_000_100 {
		t.Fatalf("head sizes %d/%d, %v", h.StdoutSize, h.StderrSize, err)
	}
	var other string
	if err := f.st.db.GetContext(f.ctx, &other, `SELECT id FROM commands WHERE id <> $1 AND status = 'succeeded' LIMIT 1`, c.ID); err != nil {
		t.Fatal(err)
	}
	explain(`DELETE FROM ONLY command_chunks WHERE $1 OPERATOR(pg_catalog.=) command_id`, other)
}

// TestHeartbeatNotifiesFollowers: a heartbeat that stores output notifies
// OutputChannel with the command ID; one that stores nothing (a keeper, a
// retry) does not, so followers are not woken for nothing.
func TestHeartbeatNotifiesFollowers(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	l := pq.NewListener(f.url, 10*time.Millisecond, time.Second, nil)
	t.Cleanup(func() { l.Close() })
	if err := l.Listen(OutputChannel); err != nil {
		t.Fatal(err)
	}
	next := func() string {
		t.Helper()
		select {
		case n := <-l.Notify:
			if n == nil {
				t.Fatal("listener reconnected")
			}
			return n.Extra
		case <-time.After(10 * time.Second):
			t.Fatal("no notification")
		}
		return ""
	}
	hb := func(chunks ...shared.Chunk) {
		t.Helper()
		if _, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, chunks, testTTL, testCap); err != nil {
			t.Fatal(err)
		}
	}
	hb(chunk("stdout", 0, "x"))
	if got := next(); got != c.ID {
		t.Fatalf("notification payload %q, want the command ID %s", got, c.ID)
	}
	hb()                        // keeper
	hb(chunk("stdout", 0, "x")) // retry of stored bytes
	// Notifications arrive in commit order: a marker sent now comes first
	// unless the two heartbeats above notified.
	f.exec(`SELECT pg_notify($1, 'marker')`, OutputChannel)
	if got := next(); got != "marker" {
		t.Fatalf("a heartbeat that stored nothing notified (%q)", got)
	}
	hb(chunk("stderr", 0, "y"))
	if got := next(); got != c.ID {
		t.Fatalf("notification payload %q after stderr, want %s", got, c.ID)
	}
}

// TestHeartbeatSkipKeepsHeadAndTail: a chunk marked Skip past the stored end
// leaves the bytes in between out (counted, with where they were), and is
// stored right after the head, so the stored bytes read as head then tail.
func TestHeartbeatSkipKeepsHeadAndTail(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	const cap = 10
	hb := func(chunks ...shared.Chunk) (shared.Offsets, error) {
		rn, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, chunks, testTTL, cap)
		return rn.Offsets, err
	}
	if _, err := hb(chunk("stdout", 0, "HEAD!")); err != nil {
		t.Fatal(err)
	}
	var gap *GapError
	if _, err := hb(chunk("stdout", 100, "tail")); !errors.As(err, &gap) {
		t.Fatalf("a chunk past the end without Skip: %v, want a gap", err)
	}
	skip := shared.Chunk{Stream: "stdout", Offset: 100, Data: []byte("tail"), Skip: true}
	for range 2 { // the second is a retry
		if off, err := hb(skip); err != nil || off.Stdout != 104 {
			t.Fatalf("skip: %v %v", off, err)
		}
	}
	if _, err := hb(shared.Chunk{Stream: "stdout", Offset: 200, Data: []byte("x"), Skip: true}); !errors.As(err, &gap) {
		t.Fatalf("a second skip: %v, want a gap", err)
	}
	got := f.get(c.ID)
	if got.StdoutLen != 104 || got.StdoutOmitted != 95 || got.StdoutOmittedAt != 5 || !got.StdoutTruncated {
		t.Fatalf("stream state: len %d omitted %d at %d truncated %v", got.StdoutLen, got.StdoutOmitted, got.StdoutOmittedAt, got.StdoutTruncated)
	}
	if p := f.readAll(c.ID, streamStdout); string(p.Data) != "HEAD!tail" || p.Omitted != 95 || p.OmittedAt != 5 {
		t.Fatalf("stored bytes %q, omitted %d at %d", p.Data, p.Omitted, p.OmittedAt)
	}
	// Past the cap even the tail is only counted.
	if off, err := hb(chunk("stdout", 104, "0123456789")); err != nil || off.Stdout != 114 {
		t.Fatalf("past the cap: %v %v", off, err)
	}
	if p := f.readAll(c.ID, streamStdout); string(p.Data) != "HEAD!tail0" || p.Omitted != 104 {
		t.Fatalf("past the cap: stored %q, omitted %d", p.Data, p.Omitted)
	}
}
