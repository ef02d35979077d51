package app_test

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/shared"
)

// capTestBytes is the output cap of the head-and-tail tests: 512 bytes of
// head and 512 of tail per stream.
const capTestBytes = 1024

func setupCapped(t *testing.T) *bundle {
	return setup(t, withConfig(func(c *app.Config) { c.OutputCap, c.OutputTail = capTestBytes, 0 }))
}

// pattern is n bytes that differ at every position a test looks at.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26 + i/26%3)
	}
	return b
}

// TestOutputCapHeadAndTail takes a stream past the cap as an agent does:
// the head live, the middle left out, the tail at the end in a chunk marked
// Skip. The record keeps the head and the tail with one marker line between
// and the true total; the raw output is the bytes on either side exactly
// and says where the middle was; a follower gets the head live and the tail
// at the end.
func TestOutputCapHeadAndTail(t *testing.T) {
	t.Parallel()
	b := setupCapped(t)
	data := pattern(5000)
	head, tail := data[:512], data[5000-512:]
	lc := b.run("/bin/sh", "-c", "chatty")
	f := b.follow(b.URL, b.Alice, lc.ID, shared.StreamStdout, 0)
	b.sendChunks(b.NodeA, lc, shared.StreamStdout, head, 200)
	f.expect(head, wakeBound)

	skip := shared.Chunk{Stream: shared.StreamStdout, Offset: 5000 - 512, Data: tail[:300], Skip: true}
	if hb := b.heartbeat(b.NodeA, lc, skip); hb.Stdout != 5000-512+300 {
		t.Fatalf("offset after the tail's first chunk %d, want %d", hb.Stdout, 5000-512+300)
	}
	// A retry of it (its answer lost) changes nothing; a second skip is a gap.
	if hb := b.heartbeat(b.NodeA, lc, skip); hb.Stdout != 5000-512+300 {
		t.Fatalf("offset after a retried skip %d", hb.Stdout)
	}
	b.wantGap(b.agent(b.NodeA, lc.ID, "heartbeat", shared.HeartbeatRequest{Attempt: lc.Attempt,
		Chunks: []shared.Chunk{{Stream: shared.StreamStdout, Offset: 4900, Data: []byte("x"), Skip: true}}}),
		shared.Offsets{Stdout: 5000 - 512 + 300})
	b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 5000, ExitCode: exitCode(0),
		Chunks: []shared.Chunk{{Stream: shared.StreamStdout, Offset: 5000 - 212, Data: tail[300:]}}}, shared.StatusSucceeded)

	rec := b.get(b.Alice, lc.ID)
	want := string(head) + "\n[execq: 3976 bytes omitted]\n" + string(tail)
	if !rec.StdoutTruncated || rec.StderrTruncated || rec.Stdout != want || rec.StdoutBytes != 5000 || rec.StderrBytes != 0 {
		t.Fatalf("record: truncated %v/%v, %d/%d bytes, stdout %q", rec.StdoutTruncated, rec.StderrTruncated, rec.StdoutBytes, rec.StderrBytes, rec.Stdout)
	}
	r := b.do(http.MethodGet, commandPath(lc.ID)+"/output", b.Alice.Token, nil)
	if r.Status != http.StatusOK || !bytes.Equal(r.Body, append(append([]byte{}, head...), tail...)) ||
		r.Header.Get("X-Execq-Omitted") != "3976" || r.Header.Get("X-Execq-Omitted-At") != "512" {
		t.Fatalf("raw output: %d, %d bytes, headers %v", r.Status, len(r.Body), r.Header)
	}
	if got := f.expectEnd(shared.StatusSucceeded); !bytes.Equal(got, r.Body) {
		t.Fatalf("follower received %s, want the head and the tail", preview(got))
	}
	if f.resp.Trailer.Get("X-Execq-Omitted") != "3976" || f.resp.Trailer.Get("X-Execq-Omitted-At") != "512" {
		t.Fatalf("follow trailers %v", f.resp.Trailer)
	}
	// History carries the true totals too.
	var page shared.HistoryPage
	b.mustJSON(b.URL, http.MethodGet, "/api/v1/commands?limit=1", b.Alice.Token, nil, http.StatusOK, &page)
	if len(page.Commands) != 1 || page.Commands[0].StdoutBytes != 5000 || !page.Commands[0].StdoutTruncated {
		t.Fatalf("history entry %+v", page.Commands)
	}
}

// TestOutputCapShortStreams: a stream within the cap, its bytes past the
// head sent at the end as the agent does (no skip), is kept whole and not
// truncated; a tail that would overflow the cap is bounded and counted.
func TestOutputCapShortStreams(t *testing.T) {
	t.Parallel()
	b := setupCapped(t)
	data := pattern(capTestBytes)
	lc := b.run("/bin/sh", "-c", "work")
	b.sendChunks(b.NodeA, lc, shared.StreamStdout, data[:512], 512)
	b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: capTestBytes, StderrLength: 3, ExitCode: exitCode(0),
		Chunks: []shared.Chunk{stdout(512, string(data[512:])), stderr(0, "err")}}, shared.StatusSucceeded)
	rec := b.get(b.Alice, lc.ID)
	if rec.StdoutTruncated || rec.Stdout != string(data) || rec.StdoutBytes != capTestBytes || rec.Stderr != "err" || rec.StderrBytes != 3 {
		t.Fatalf("record within the cap: truncated %v, %d bytes, stdout %d chars, stderr %q", rec.StdoutTruncated, rec.StdoutBytes, len(rec.Stdout), rec.Stderr)
	}

	// A misbehaving agent: a skip after a full head, then more than the
	// tail. The stored bytes stay within the cap.
	lc = b.run("/bin/sh", "-c", "work")
	b.sendChunks(b.NodeA, lc, shared.StreamStdout, data[:512], 512)
	big := pattern(2000)
	b.heartbeat(b.NodeA, lc, shared.Chunk{Stream: shared.StreamStdout, Offset: 10_000, Data: big, Skip: true})
	b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 12_000, ExitCode: exitCode(0)}, shared.StatusSucceeded)
	raw := b.output(b.Alice, lc.ID, shared.StreamStdout)
	if len(raw) != capTestBytes || !bytes.Equal(raw[:512], data[:512]) || !bytes.Equal(raw[512:], big[:512]) {
		t.Fatalf("overflowing tail: raw %d bytes", len(raw))
	}
	if rec := b.get(b.Alice, lc.ID); !rec.StdoutTruncated || rec.StdoutBytes != 12_000 {
		t.Fatalf("overflowing tail: record %+v", rec)
	}
}
