package store

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

// storedOnce checks that a terminal command's output is held once, in its
// chunk rows: the record's columns are empty, and each stream's rows follow
// each other with no gap and no overlap, adding up to want.
func (f *fixture) storedOnce(id string, stream int, want []byte) {
	f.t.Helper()
	var col int64
	column := "stdout"
	if stream == streamStderr {
		column = "stderr"
	}
	if err := f.st.db.GetContext(f.ctx, &col, `SELECT octet_length(`+column+`) FROM commands WHERE id = $1`, id); err != nil {
		f.t.Fatal(err)
	}
	if col != 0 {
		f.t.Errorf("%s: %d bytes in the record's column as well as in its chunks", column, col)
	}
	var rows []struct {
		Off  int64  `db:"off"`
		Data []byte `db:"data"`
	}
	if err := f.st.db.SelectContext(f.ctx, &rows, `SELECT off, data FROM command_chunks WHERE command_id = $1 AND stream = $2 ORDER BY off`, id, stream); err != nil {
		f.t.Fatal(err)
	}
	var got []byte
	for _, r := range rows {
		if r.Off != int64(len(got)) {
			f.t.Fatalf("%s: chunk at %d after %d bytes", column, r.Off, len(got))
		}
		got = append(got, r.Data...)
	}
	if !bytes.Equal(got, want) {
		f.t.Errorf("%s: chunk rows hold %d bytes, want the %d sent", column, len(got), len(want))
	}
}

// binaryOutput is bytes PostgreSQL text would refuse: NUL, invalid UTF-8,
// a rune cut in two.
var binaryOutput = []byte("a\x00b\xff\xfe\xe2\x82 c\x00\x00\n\xc3")

// TestFinishStoresOutputOnce: a finished command's output stays in its
// chunk rows, the bytes sent exactly (binary included), the ones the finish
// itself carried and the execq line on stderr too; nothing is copied into
// the record's columns. Every reader — the record, its head's sizes, the
// raw output in pieces — gives the bytes sent.
func TestFinishStoresOutputOnce(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	out := bytes.Repeat(binaryOutput, 50)
	errOut := []byte("warn\x00\xff\n")
	// Most of stdout by heartbeats, in uneven chunks; its last piece and
	// all of stderr on the finish.
	sent := 0
	for _, n := range []int{1, 100, 7, 300} {
		if _, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt,
			[]shared.Chunk{{Stream: "stdout", Offset: int64(sent), Data: out[sent : sent+n]}}, testTTL, testCap); err != nil {
			t.Fatal(err)
		}
		sent += n
	}
	res, err := f.st.Finish(f.ctx, c.ID, f.node.ID, shared.FinishRequest{Attempt: c.Attempt, Error: "program not found",
		StdoutLength: int64(len(out)), StderrLength: int64(len(errOut)),
		Chunks: []shared.Chunk{{Stream: "stdout", Offset: int64(sent), Data: out[sent:]}, {Stream: "stderr", Offset: 0, Data: errOut}}}, testCap)
	if err != nil || res.Status != shared.StatusFailed {
		t.Fatalf("finish: %+v %v", res, err)
	}
	wantErr := append(append([]byte{}, errOut...), "execq: program not found\n"...)
	f.checkOutput(c.ID, out, wantErr)
	f.storedOnce(c.ID, streamStdout, out)
	f.storedOnce(c.ID, streamStderr, wantErr)
}

// checkOutput checks every reader of a terminal command's output against
// the bytes of each stream.
func (f *fixture) checkOutput(id string, out, errOut []byte) {
	f.t.Helper()
	got := f.get(id)
	if !bytes.Equal(got.Stdout, out) || !bytes.Equal(got.Stderr, errOut) {
		f.t.Errorf("record output %q / %q, want %q / %q", got.Stdout, got.Stderr, out, errOut)
	}
	h, err := f.st.GetHead(f.ctx, id)
	if err != nil || h.StdoutSize != int64(len(out)) || h.StderrSize != int64(len(errOut)) {
		f.t.Errorf("head sizes %d/%d (%v), want %d/%d", h.StdoutSize, h.StderrSize, err, len(out), len(errOut))
	}
	if p := f.readAll(id, streamStdout); !bytes.Equal(p.Data, out) || p.End != int64(len(out)) {
		f.t.Errorf("raw stdout %q end %d, want %q", p.Data, p.End, out)
	}
	if p := f.readAll(id, streamStderr); !bytes.Equal(p.Data, errOut) || p.End != int64(len(errOut)) {
		f.t.Errorf("raw stderr %q end %d, want %q", p.Data, p.End, errOut)
	}
}

// TestCoordinatorEndsKeepOutput: the ends the coordinator writes itself —
// a cancel before start, an agent lost, a run timeout, a queue timeout —
// keep the output that arrived and add their execq line after it on
// stderr, once.
func TestCoordinatorEndsKeepOutput(t *testing.T) {
	t.Parallel()
	f := setup(t)

	queued := f.enqueue("true")
	if _, outcome, err := f.st.Cancel(f.ctx, queued.ID, f.user, 0); err != nil || outcome != CancelledQueued {
		t.Fatalf("cancel: %v %v", outcome, err)
	}
	got := f.get(queued.ID)
	if !strings.HasPrefix(string(got.Stderr), "execq: cancelled by alice") || len(got.Stdout) != 0 {
		t.Fatalf("cancelled record stdout %q stderr %q", got.Stdout, got.Stderr)
	}
	f.checkOutput(queued.ID, nil, got.Stderr)
	f.storedOnce(queued.ID, streamStderr, got.Stderr)

	lost := f.running()
	if _, err := f.st.Heartbeat(f.ctx, lost.ID, f.node.ID, lost.Attempt,
		[]shared.Chunk{{Stream: "stdout", Offset: 0, Data: binaryOutput}, {Stream: "stderr", Offset: 0, Data: []byte("e\x00")}}, testTTL, testCap); err != nil {
		t.Fatal(err)
	}
	f.expireLease(lost.ID)
	if ids, err := f.st.FailLost(f.ctx, 0, 10); err != nil || len(ids) != 1 {
		t.Fatalf("fail lost: %v %v", ids, err)
	}
	got = f.get(lost.ID)
	if !bytes.HasPrefix(got.Stderr, []byte("e\x00execq: agent lost")) {
		t.Fatalf("lost record stderr %q", got.Stderr)
	}
	f.checkOutput(lost.ID, binaryOutput, got.Stderr)
	f.storedOnce(lost.ID, streamStdout, binaryOutput)
	f.storedOnce(lost.ID, streamStderr, got.Stderr)
}

// TestCappedOutputAfterFinish: past the cap the stored head and tail, the
// omitted count and its place, and the execq line after a capped stderr
// read back exactly once the command is terminal.
func TestCappedOutputAfterFinish(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	const cap = 10
	for _, ch := range []shared.Chunk{
		{Stream: "stdout", Offset: 0, Data: []byte("HEAD\x00")},
		{Stream: "stdout", Offset: 100, Data: []byte("t\xffil"), Skip: true},
		{Stream: "stderr", Offset: 0, Data: []byte("0123456789abc")},
	} {
		if _, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, []shared.Chunk{ch}, testTTL, cap); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.st.Finish(f.ctx, c.ID, f.node.ID, shared.FinishRequest{Attempt: c.Attempt, ExitCode: exit(137),
		StdoutLength: 104, StderrLength: 13}, cap); err != nil {
		t.Fatal(err)
	}
	got := f.get(c.ID)
	wantErr := "0123456789execq: the program was killed by SIGKILL (exit status 137), a signal execq did not send\n"
	if string(got.Stderr) != wantErr || got.StderrOmitted != 3 || got.StderrOmittedAt != 10 {
		t.Fatalf("capped stderr %q omitted %d at %d", got.Stderr, got.StderrOmitted, got.StderrOmittedAt)
	}
	if got.StdoutOmitted != 95 || got.StdoutOmittedAt != 5 || !got.StdoutTruncated {
		t.Fatalf("capped stdout omitted %d at %d truncated %v", got.StdoutOmitted, got.StdoutOmittedAt, got.StdoutTruncated)
	}
	f.checkOutput(c.ID, []byte("HEAD\x00t\xffil"), []byte(wantErr))
	if p := f.readAll(c.ID, streamStdout); p.Omitted != 95 || p.OmittedAt != 5 {
		t.Fatalf("raw stdout omitted %d at %d", p.Omitted, p.OmittedAt)
	}
	f.storedOnce(c.ID, streamStdout, []byte("HEAD\x00t\xffil"))
	f.storedOnce(c.ID, streamStderr, []byte(wantErr))
}

// oldFinalizeSQL is how a command was made terminal before its chunks
// became its record's storage: they were folded into commands.stdout and
// stderr, with the execq line, and deleted.
const oldFinalizeSQL = `
	WITH del AS (DELETE FROM command_chunks WHERE command_id = $1 RETURNING stream, off, data)
	UPDATE commands SET status = 'failed', exit_code = 3, finished_at = now(), lease_expires_at = NULL, end_reason = 'exited',
		stdout = coalesce((SELECT string_agg(data, ''::bytea ORDER BY off) FROM del WHERE stream = 1), ''::bytea),
		stderr = coalesce((SELECT string_agg(data, ''::bytea ORDER BY off) FROM del WHERE stream = 2), ''::bytea)
			|| convert_to($2, 'UTF8')
	WHERE id = $1`

// TestFoldedRecordStillReads: a command finished by the old code, its
// output folded into the record's columns, reads the same through every
// reader as it did once migration 0011 is applied over it; and so does one
// whose output was empty.
func TestFoldedRecordStillReads(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	out := bytes.Repeat(binaryOutput, 3000) // past TOAST's threshold
	for off := 0; off < len(out); off += 1000 {
		if _, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt,
			[]shared.Chunk{{Stream: "stdout", Offset: int64(off), Data: out[off:min(off+1000, len(out))]}}, testTTL, testCap); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, []shared.Chunk{chunk("stderr", 0, "err\xff")}, testTTL, testCap); err != nil {
		t.Fatal(err)
	}
	f.exec(oldFinalizeSQL, c.ID, "execq: note\n")
	empty := f.running()
	f.exec(oldFinalizeSQL, empty.ID, "")
	// The rows were folded as before migration 0011: apply it now, over
	// them.
	f.exec(`DELETE FROM schema_migrations WHERE name = '0011_output_in_chunks.sql'`)
	if applied, err := f.st.Migrate(f.ctx); err != nil || len(applied) != 1 || applied[0] != "0011_output_in_chunks.sql" {
		t.Fatalf("migrate over folded rows: applied %v, %v", applied, err)
	}
	f.checkOutput(c.ID, out, []byte("err\xffexecq: note\n"))
	f.checkOutput(empty.ID, nil, nil)
	if _, outcome, err := f.st.Cancel(f.ctx, c.ID, f.user, 0); err != nil || outcome != AlreadyFinished {
		t.Fatalf("cancel of a folded record: %v %v", outcome, err)
	}
}

// TestPruneTakesChunks: a finished command's output rows go when
// retention deletes the command, and a live or recent command's stay.
func TestPruneTakesChunks(t *testing.T) {
	t.Parallel()
	f := setup(t)
	finish := func() Command {
		c := f.running()
		if _, err := f.st.Finish(f.ctx, c.ID, f.node.ID, shared.FinishRequest{Attempt: c.Attempt, ExitCode: exit(0),
			StdoutLength: 3, Chunks: []shared.Chunk{chunk("stdout", 0, "old")}}, testCap); err != nil {
			t.Fatal(err)
		}
		return c
	}
	old, recent := finish(), finish()
	live := f.running()
	if _, err := f.st.Heartbeat(f.ctx, live.ID, f.node.ID, live.Attempt, []shared.Chunk{chunk("stdout", 0, "live")}, testTTL, testCap); err != nil {
		t.Fatal(err)
	}
	f.exec(`UPDATE commands SET finished_at = now() - interval '2 days' WHERE id = $1`, old.ID)
	if n, _, err := f.st.Prune(f.ctx, time.Hour, time.Time{}, 100); err != nil || n != 1 {
		t.Fatalf("prune: %d %v", n, err)
	}
	for id, want := range map[string]int{old.ID: 0, recent.ID: 1, live.ID: 1} {
		var n int
		if err := f.st.db.GetContext(f.ctx, &n, `SELECT count(*) FROM command_chunks WHERE command_id = $1`, id); err != nil || n != want {
			t.Errorf("%d chunk rows of %s (%v), want %d", n, id, err, want)
		}
	}
}
