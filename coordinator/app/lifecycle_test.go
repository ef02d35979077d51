package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/execq/execq/shared"
)

// finishOK finishes a command and checks the stored status.
func (b *bundle) finishOK(node nodeIdentity, id string, req shared.FinishRequest, want shared.Status) {
	b.t.Helper()
	r := b.finish(node, req, id)
	var fr shared.FinishResponse
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &fr) != nil || fr.Status != want {
		b.t.Fatalf("finish %s: %s, want 200 with status %s", id, r, want)
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t)

	t.Run("exit 0 succeeds with output in order", func(t *testing.T) {
		b := b.with(t)
		rec := b.submit(b.Alice, b.NodeA.Container, "/bin/sh", "-c", "work")
		lc := b.leaseCommand(b.NodeA, rec.ID)
		if lc.Attempt != 1 || lc.ContainerID != b.NodeA.Container || lc.LeaseExpiresAt.IsZero() {
			t.Fatalf("leased command: %+v", lc)
		}
		var sr shared.StartResponse
		b.mustJSON(b.URL, http.MethodPost, agentCommandPath(rec.ID, "start"), b.NodeA.Token,
			shared.StartRequest{Attempt: lc.Attempt}, http.StatusOK, &sr)
		if sr.Status != shared.StatusRunning {
			t.Fatalf("start answered %+v", sr)
		}
		got := b.get(b.Alice, rec.ID)
		if got.Status != shared.StatusRunning || got.StartedAt == nil {
			t.Fatalf("after start: %+v", got)
		}

		var out, errOut strings.Builder
		var offOut, offErr int64
		for i := range 5 {
			o := strings.Repeat(string(rune('a'+i)), 10+i) + "\n"
			e := "err line " + string(rune('0'+i)) + "\n"
			hb := b.heartbeat(b.NodeA, lc, stdout(offOut, o), stderr(offErr, e))
			out.WriteString(o)
			errOut.WriteString(e)
			offOut += int64(len(o))
			offErr += int64(len(e))
			if hb.Stdout != offOut || hb.Stderr != offErr {
				t.Fatalf("heartbeat %d offsets %+v, want %d/%d", i, hb.Offsets, offOut, offErr)
			}
		}
		// The last chunks may ride on finish.
		out.WriteString("tail\n")
		b.finishOK(b.NodeA, rec.ID, shared.FinishRequest{
			Attempt: lc.Attempt, Chunks: []shared.Chunk{stdout(offOut, "tail\n")},
			StdoutLength: offOut + 5, StderrLength: offErr, ExitCode: exitCode(0),
		}, shared.StatusSucceeded)

		got = b.get(b.Alice, rec.ID)
		if got.Status != shared.StatusSucceeded || got.Stdout != out.String() || got.Stderr != errOut.String() {
			t.Fatalf("record %+v, want succeeded with stdout %q stderr %q", got, out.String(), errOut.String())
		}
		if got.ExitCode == nil || *got.ExitCode != 0 || got.FinishedAt == nil || got.FinishedAt.Before(*got.StartedAt) {
			t.Fatalf("exit/timestamps: %+v", got)
		}
		// Stored once: in the chunk rows, which are the record's output,
		// and not copied into the record's columns.
		if n := b.count(`SELECT count(*) FROM commands WHERE id = $1 AND octet_length(stdout) + octet_length(stderr) > 0`, rec.ID); n != 0 {
			t.Fatalf("output copied into the record's columns at finish")
		}
		if n := b.count(`SELECT coalesce(sum(octet_length(data)), 0) FROM command_chunks WHERE command_id = $1`, rec.ID); n != out.Len()+errOut.Len() {
			t.Fatalf("%d bytes in chunk rows after finish, want the %d sent", n, out.Len()+errOut.Len())
		}
	})

	t.Run("exit 3 fails with the code", func(t *testing.T) {
		b := b.with(t)
		lc := b.run("false")
		b.heartbeat(b.NodeA, lc, stderr(0, "boom\n"))
		b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StderrLength: 5, ExitCode: exitCode(3)}, shared.StatusFailed)
		got := b.get(b.Alice, lc.ID)
		if got.Status != shared.StatusFailed || got.ExitCode == nil || *got.ExitCode != 3 || got.Stderr != "boom\n" || got.Stdout != "" {
			t.Fatalf("record %+v", got)
		}
	})

	t.Run("program not found fails without exit code", func(t *testing.T) {
		b := b.with(t)
		lc := b.run("/no/such/program")
		b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, Error: "program not found"}, shared.StatusFailed)
		got := b.get(b.Alice, lc.ID)
		if got.Status != shared.StatusFailed || got.ExitCode != nil {
			t.Fatalf("record %+v, want failed with exit_code null", got)
		}
		if !strings.HasSuffix(got.Stderr, "execq: program not found\n") {
			t.Fatalf("stderr %q should end with the execq line", got.Stderr)
		}
		// exit_code is present and null in the JSON, not omitted.
		r := b.do(http.MethodGet, commandPath(lc.ID), b.Alice.Token, nil)
		var m map[string]any
		if err := json.Unmarshal(r.Body, &m); err != nil {
			t.Fatal(err)
		}
		if v, ok := m["exit_code"]; !ok || v != nil {
			t.Fatalf("exit_code = %v (present %v), want null", v, ok)
		}
	})

	t.Run("an error after output keeps the output", func(t *testing.T) {
		b := b.with(t)
		lc := b.run("sleep", "100")
		b.heartbeat(b.NodeA, lc, stdout(0, "started\n"), stderr(0, "partial\n"))
		b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{
			Attempt: lc.Attempt, StdoutLength: 8, StderrLength: 8, Error: "timed out",
		}, shared.StatusFailed)
		got := b.get(b.Alice, lc.ID)
		if got.Status != shared.StatusFailed || got.Stdout != "started\n" || got.Stderr != "partial\nexecq: timed out\n" || got.ExitCode != nil {
			t.Fatalf("record %+v", got)
		}
	})
}
