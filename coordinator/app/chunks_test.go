package app_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/shared"
)

// wantGap checks a 409 output_gap answer and returns its offsets.
func (b *bundle) wantGap(r response, want shared.Offsets) {
	b.t.Helper()
	b.wantError(r, http.StatusConflict, shared.CodeOutputGap)
	var gb shared.GapBody
	if err := json.Unmarshal(r.Body, &gb); err != nil {
		b.t.Fatalf("gap body: %v (%s)", err, r)
	}
	if gb.Offsets != want {
		b.t.Fatalf("gap offsets %+v, want %+v", gb.Offsets, want)
	}
}

func TestChunks(t *testing.T) {
	t.Parallel()
	b := setup(t)

	t.Run("repeat is acknowledged once", func(t *testing.T) {
		b := b.with(t)
		lc := b.run("echo")
		b.heartbeat(b.NodeA, lc, stdout(0, "hello "))
		hb := b.heartbeat(b.NodeA, lc, stdout(0, "hello "))
		if hb.Stdout != 6 {
			t.Fatalf("offset after a repeated chunk: %d, want 6", hb.Stdout)
		}
		// A repeat inside one request and a strict sub-range are no-ops too.
		hb = b.heartbeat(b.NodeA, lc, stdout(0, "hello "), stdout(0, "hello "), stdout(2, "ll"))
		if hb.Stdout != 6 {
			t.Fatalf("offset: %d, want 6", hb.Stdout)
		}
		b.heartbeat(b.NodeA, lc, stdout(6, "world"))
		if got := string(b.output(b.Alice, lc.ID, shared.StreamStdout)); got != "hello world" {
			t.Fatalf("running output %q", got)
		}
		b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 11, ExitCode: exitCode(0)}, shared.StatusSucceeded)
		if got := b.get(b.Alice, lc.ID).Stdout; got != "hello world" {
			t.Fatalf("stdout %q", got)
		}
	})

	t.Run("overlap is trimmed", func(t *testing.T) {
		b := b.with(t)
		lc := b.run("echo")
		b.heartbeat(b.NodeA, lc, stdout(0, "abcdef"), stderr(0, "012"))
		hb := b.heartbeat(b.NodeA, lc, stdout(3, "defghi"), stderr(1, "12345"))
		if hb.Stdout != 9 || hb.Stderr != 6 {
			t.Fatalf("offsets %+v, want 9/6", hb.Offsets)
		}
		b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{
			Attempt: lc.Attempt, Chunks: []shared.Chunk{stdout(8, "ijk")}, StdoutLength: 11, StderrLength: 6, ExitCode: exitCode(0),
		}, shared.StatusSucceeded)
		got := b.get(b.Alice, lc.ID)
		if got.Stdout != "abcdefghijk" || got.Stderr != "012345" {
			t.Fatalf("stdout %q stderr %q", got.Stdout, got.Stderr)
		}
	})

	t.Run("gap is refused with the stored offsets", func(t *testing.T) {
		b := b.with(t)
		lc := b.run("echo")
		b.heartbeat(b.NodeA, lc, stdout(0, "abc"), stderr(0, "xy"))
		before := b.snapshot()
		r := b.agent(b.NodeA, lc.ID, "heartbeat", shared.HeartbeatRequest{Attempt: lc.Attempt, Chunks: []shared.Chunk{stdout(5, "fgh")}})
		b.wantGap(r, shared.Offsets{Stdout: 3, Stderr: 2})
		// A request whose first chunks fit and a later one gaps applies
		// nothing, and the offsets it reports are what is stored.
		r = b.agent(b.NodeA, lc.ID, "heartbeat", shared.HeartbeatRequest{Attempt: lc.Attempt,
			Chunks: []shared.Chunk{stdout(3, "de"), stderr(2, "z"), stderr(9, "late")}})
		b.wantGap(r, shared.Offsets{Stdout: 3, Stderr: 2})
		if after := b.snapshot(); after != before {
			t.Fatalf("a refused chunk changed the job table:\nbefore %s\nafter  %s", before, after)
		}
		// Resending from the offsets given heals the stream.
		b.heartbeat(b.NodeA, lc, stdout(3, "defgh"))
		b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 8, StderrLength: 2, ExitCode: exitCode(0)}, shared.StatusSucceeded)
		if got := b.get(b.Alice, lc.ID); got.Stdout != "abcdefgh" || got.Stderr != "xy" {
			t.Fatalf("stdout %q stderr %q", got.Stdout, got.Stderr)
		}
	})

	t.Run("finish waits for declared output", func(t *testing.T) {
		b := b.with(t)
		lc := b.run("echo")
		b.heartbeat(b.NodeA, lc, stdout(0, "one\n"))
		// The agent captured 12 bytes of stdout and 4 of stderr, but a
		// heartbeat was lost: finish carries only part of the rest.
		r := b.finish(b.NodeA, shared.FinishRequest{
			Attempt: lc.Attempt, Chunks: []shared.Chunk{stderr(0, "err\n")},
			StdoutLength: 12, StderrLength: 4, ExitCode: exitCode(0),
		}, lc.ID)
		b.wantGap(r, shared.Offsets{Stdout: 4, Stderr: 4})
		if got := b.get(b.Alice, lc.ID); got.Status != shared.StatusRunning {
			t.Fatalf("a refused finish must leave the command running: %+v", got)
		}
		// Resending the missing part with finish completes it; the stderr
		// chunk accepted with the refused finish is not doubled.
		b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{
			Attempt: lc.Attempt, Chunks: []shared.Chunk{stdout(4, "two\nthree\n"), stderr(0, "err\n")},
			StdoutLength: 14, StderrLength: 4, ExitCode: exitCode(0),
		}, shared.StatusSucceeded)
		got := b.get(b.Alice, lc.ID)
		if got.Stdout != "one\ntwo\nthree\n" || got.Stderr != "err\n" {
			t.Fatalf("stdout %q stderr %q", got.Stdout, got.Stderr)
		}
	})

	t.Run("finish declaring less than stored is refused", func(t *testing.T) {
		b := b.with(t)
		lc := b.run("echo")
		b.heartbeat(b.NodeA, lc, stdout(0, "12345"))
		r := b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 2, ExitCode: exitCode(0)}, lc.ID)
		b.wantError(r, http.StatusBadRequest, "invalid_length")
		b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 5, ExitCode: exitCode(0)}, shared.StatusSucceeded)
	})

	t.Run("finish is idempotent for its lease only", func(t *testing.T) {
		b := b.with(t)
		lc := b.run("false")
		req := shared.FinishRequest{Attempt: lc.Attempt, Chunks: []shared.Chunk{stdout(0, "x")}, StdoutLength: 1, ExitCode: exitCode(1)}
		// Another attempt number while running is not this lease.
		b.wantError(b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt + 1, ExitCode: exitCode(0)}, lc.ID),
			http.StatusConflict, shared.CodeLeaseLost)
		b.finishOK(b.NodeA, lc.ID, req, shared.StatusFailed)
		// A retried finish (its answer was lost) gets the same answer and
		// changes nothing, even with its chunks and a different exit code.
		before := b.snapshot()
		b.finishOK(b.NodeA, lc.ID, req, shared.StatusFailed)
		req.ExitCode = exitCode(0)
		b.finishOK(b.NodeA, lc.ID, req, shared.StatusFailed)
		if after := b.snapshot(); after != before {
			t.Fatalf("a repeated finish changed the job table")
		}
		b.wantError(b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt + 1, ExitCode: exitCode(0)}, lc.ID),
			http.StatusConflict, shared.CodeLeaseLost)
		// After finish, heartbeats and starts of the lease are refused.
		b.wantError(b.agent(b.NodeA, lc.ID, "heartbeat", shared.HeartbeatRequest{Attempt: lc.Attempt}),
			http.StatusConflict, shared.CodeLeaseLost)
		b.wantError(b.agent(b.NodeA, lc.ID, "start", shared.StartRequest{Attempt: lc.Attempt}),
			http.StatusConflict, shared.CodeLeaseLost)
		if got := b.get(b.Alice, lc.ID); got.Status != shared.StatusFailed || *got.ExitCode != 1 || got.Stdout != "x" {
			t.Fatalf("record %+v", got)
		}
	})

	t.Run("output under the cap is not marked truncated", func(t *testing.T) {
		b := b.with(t)
		lc := b.run("echo")
		b.heartbeat(b.NodeA, lc, stdout(0, "ok"))
		b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 2, ExitCode: exitCode(0)}, shared.StatusSucceeded)
		if got := b.get(b.Alice, lc.ID); got.StdoutTruncated || got.StderrTruncated {
			t.Fatalf("record %+v", got)
		}
	})
}

func TestOutputCap(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.OutputCap = 1024 }))
	lc := b.run("yes")
	big := make([]byte, 1500)
	for i := range big {
		big[i] = 'a' + byte(i%26)
	}
	b.sendChunks(b.NodeA, lc, shared.StreamStdout, big, 700)
	// Offsets keep counting past the cap so the agent's retries line up.
	hb := b.heartbeat(b.NodeA, lc, stdout(1500, "more"))
	if hb.Stdout != 1504 {
		t.Fatalf("offset %d, want 1504", hb.Stdout)
	}
	b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 1504, ExitCode: exitCode(0)}, shared.StatusSucceeded)
	// An agent that sends past the cap without leaving the middle out (see
	// TestOutputCapHeadAndTail) loses the end: what passed the cap is
	// counted and marked where it was dropped.
	got := b.get(b.Alice, lc.ID)
	if !got.StdoutTruncated || got.StderrTruncated || got.Stdout != string(big[:1024])+"\n[execq: 480 bytes omitted]\n" || got.StdoutBytes != 1504 {
		t.Fatalf("truncated=%v/%v, stdout %d bytes (%d counted)", got.StdoutTruncated, got.StderrTruncated, len(got.Stdout), got.StdoutBytes)
	}
	if out := b.output(b.Alice, lc.ID, shared.StreamStdout); string(out) != string(big[:1024]) {
		t.Fatalf("raw output %d bytes, want the first 1024", len(out))
	}
}

// TestLargestAgentRequestAccepted: a heartbeat carrying the most output an
// agent may send in one request (shared.MaxRequestOutputBytes, base64 in
// JSON) fits the coordinator's body limit.
func TestLargestAgentRequestAccepted(t *testing.T) {
	t.Parallel()
	// Encoding 8 MiB under the race detector on a busy machine can outlast
	// the tests' usual 2s lease; this test is about the size limit only.
	b := setup(t, withConfig(func(c *app.Config) { c.LeaseTTL, c.Heartbeat = time.Minute, 10*time.Second }))
	lc := b.run("cat")
	half := shared.MaxRequestOutputBytes / 2
	hb := b.heartbeat(b.NodeA, lc,
		shared.Chunk{Stream: shared.StreamStdout, Data: bytes.Repeat([]byte{0xff}, half)},
		shared.Chunk{Stream: shared.StreamStderr, Data: bytes.Repeat([]byte{0x00}, half)})
	if hb.Stdout != int64(half) || hb.Stderr != int64(half) {
		t.Fatalf("offsets %+v after a maximal heartbeat, want %d each", hb.Offsets, half)
	}
}
