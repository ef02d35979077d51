package store

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

// manyChunks returns shared.MaxRequestChunks chunks alternating between the
// streams from the given stream ends, each overlapping the one before it on
// its stream by a byte (as a retry after a lost answer would), and the bytes
// each stream should hold after them.
func manyChunks(stdoutFrom, stderrFrom int64) ([]shared.Chunk, map[string][]byte) {
	next := map[string]int64{shared.StreamStdout: stdoutFrom, shared.StreamStderr: stderrFrom}
	want := map[string][]byte{}
	chunks := make([]shared.Chunk, shared.MaxRequestChunks)
	for i := range chunks {
		stream := shared.StreamStdout
		if i%2 == 1 {
			stream = shared.StreamStderr
		}
		off := next[stream]
		data := []byte{byte('a' + i%26), byte('A' + i%26), byte('0' + i%10)}
		if off > 0 {
			off-- // overlap the stored end by one byte: only the new part is kept
			data = append([]byte{'?'}, data...)
		}
		chunks[i] = shared.Chunk{Stream: stream, Offset: off, Data: data}
		want[stream] = append(want[stream], data[next[stream]-off:]...)
		next[stream] = off + int64(len(data))
	}
	return chunks, want
}

// TestChunksInOneStatement: a heartbeat or a finish carrying the most
// chunks a request may hold sends as many statements as one carrying a
// single chunk — the chunks go in one INSERT, not one each under the row
// lock — and stores every new byte once, in order.
func TestChunksInOneStatement(t *testing.T) {
	t.Parallel()
	f := setup(t)
	st, counter := f.counted(t)
	var err error

	c := f.running()
	one := counter.statements(func() {
		_, err = st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, []shared.Chunk{chunk("stdout", 0, "x")}, testTTL, testCap)
	})
	if err != nil {
		t.Fatalf("heartbeat of one chunk: %v", err)
	}
	chunks, want := manyChunks(1, 0)
	var rn Renewal
	many := counter.statements(func() {
		rn, err = st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, chunks, testTTL, testCap)
	})
	if err != nil {
		t.Fatalf("heartbeat of %d chunks: %v", len(chunks), err)
	}
	if many != one {
		t.Errorf("a heartbeat of %d chunks took %d statements, one of a single chunk %d", len(chunks), many, one)
	}
	want[shared.StreamStdout] = append([]byte("x"), want[shared.StreamStdout]...)
	if rn.Offsets != (shared.Offsets{Stdout: int64(len(want["stdout"])), Stderr: int64(len(want["stderr"]))}) {
		t.Errorf("offsets %+v, want %d and %d", rn.Offsets, len(want["stdout"]), len(want["stderr"]))
	}
	for name, stream := range map[string]int{"stdout": streamStdout, "stderr": streamStderr} {
		out := f.readAll(c.ID, stream)
		if !bytes.Equal(out.Data, want[name]) {
			t.Errorf("%s: %d bytes stored, want %d: %q", name, len(out.Data), len(want[name]), out.Data)
		}
	}

	// A finish folds its chunks in the same single statement.
	finish := func(c Command, chunks []shared.Chunk, want map[string][]byte) int64 {
		t.Helper()
		code := 0
		req := shared.FinishRequest{Attempt: c.Attempt, Chunks: chunks, ExitCode: &code,
			StdoutLength: int64(len(want["stdout"])), StderrLength: int64(len(want["stderr"]))}
		n := counter.statements(func() { _, err = st.Finish(f.ctx, c.ID, f.node.ID, req, testCap) })
		if err != nil {
			t.Fatalf("finish: %v", err)
		}
		got := f.get(c.ID)
		if !bytes.Equal(got.Stdout, want["stdout"]) || !bytes.Equal(got.Stderr, want["stderr"]) {
			t.Errorf("finished with stdout %d bytes, stderr %d; want %d and %d", len(got.Stdout), len(got.Stderr), len(want["stdout"]), len(want["stderr"]))
		}
		return n
	}
	one = finish(f.running(), []shared.Chunk{chunk("stdout", 0, "x")}, map[string][]byte{"stdout": []byte("x")})
	chunks, want = manyChunks(0, 0)
	if many = finish(f.running(), chunks, want); many != one {
		t.Errorf("a finish of %d chunks took %d statements, one of a single chunk %d", len(chunks), many, one)
	}
}

// TestStatementTimeout: a statement that runs past the query timeout (here
// a heartbeat waiting for a row lock held elsewhere) is reported as a
// timeout, not as an unreachable database: PostgreSQL answered, it was the
// statement that was cancelled.
func TestStatementTimeout(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c := f.running()
	st := f.open(t, f.url, Options{MaxConns: 2, QueryTimeout: 200 * time.Millisecond})
	tx, err := f.st.db.BeginTx(f.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(f.ctx, `SELECT 1 FROM commands WHERE id = $1 FOR UPDATE`, c.ID); err != nil {
		t.Fatal(err)
	}
	_, err = st.Heartbeat(f.ctx, c.ID, f.node.ID, c.Attempt, []shared.Chunk{chunk("stdout", 0, "x")}, testTTL, testCap)
	if !errors.Is(err, ErrTimeout) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("heartbeat behind a held row lock: %v, want ErrTimeout and not ErrUnavailable", err)
	}
}
