package app_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/shared"
)

// TestAgentNumberRanges: every number an agent sends is checked against
// its range — an exit status is 0..255 (what runc exec reports, 128+n for
// a signal), an attempt is a positive 32-bit number (the column's type),
// offsets and lengths are within shared.MaxStreamBytes, waits are bounded —
// and one out of range is a 400 invalid_field with nothing written. An
// exit_code of 4294967296 used to be stored as 0, with status failed.
func TestAgentNumberRanges(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.LeaseTTL, c.Heartbeat = time.Minute, 10*time.Second }))
	lc := b.run("ls")
	b.heartbeat(b.NodeA, lc, stdout(0, "abc"))
	queuedRec := b.submit(b.Alice, b.NodeA.Container, "queued")
	queued := b.leaseCommand(b.NodeA, queuedRec.ID)
	node := b.NodeA.Token
	cmd := func(action string) string { return agentCommandPath(lc.ID, action) }
	att := lc.Attempt
	fin := func(extra string) string { return fmt.Sprintf(`{"attempt":%d,"stdout_length":3,%s}`, att, extra) }
	hb := func(chunk string) string { return fmt.Sprintf(`{"attempt":%d,"chunks":[%s]}`, att, chunk) }
	maxStream := shared.MaxStreamBytes
	cases := []struct {
		name string
		path string
		body string
	}{
		{"exit code 2^32", cmd("finish"), fin(`"exit_code":4294967296`)},
		{"exit code 2^31", cmd("finish"), fin(`"exit_code":2147483648`)},
		{"exit code 256", cmd("finish"), fin(`"exit_code":256`)},
		{"exit code -1", cmd("finish"), fin(`"exit_code":-1`)},
		{"exit code -2^32", cmd("finish"), fin(`"exit_code":-4294967296`)},
		{"finish attempt 0", cmd("finish"), `{"attempt":0,"stdout_length":3,"exit_code":0}`},
		{"finish attempt -1", cmd("finish"), `{"attempt":-1,"stdout_length":3,"exit_code":0}`},
		{"finish attempt 2^32+1", cmd("finish"), fmt.Sprintf(`{"attempt":%d,"stdout_length":3,"exit_code":0}`, 1<<32+att)},
		{"finish stdout length past the bound", cmd("finish"), fmt.Sprintf(`{"attempt":%d,"stdout_length":%d,"exit_code":0}`, att, maxStream+1)},
		{"finish stderr length past the bound", cmd("finish"), fin(fmt.Sprintf(`"stderr_length":%d,"exit_code":0`, int64(1)<<62))},
		{"start attempt 0", cmd("start"), `{"attempt":0}`},
		{"start attempt 2^32+1", cmd("start"), fmt.Sprintf(`{"attempt":%d}`, 1<<32+att)},
		{"heartbeat attempt 0", cmd("heartbeat"), `{"attempt":0}`},
		{"heartbeat attempt 2^32+1", cmd("heartbeat"), fmt.Sprintf(`{"attempt":%d}`, 1<<32+att)},
		{"heartbeat attempt -2^63", cmd("heartbeat"), `{"attempt":-9223372036854775808}`},
		{"release attempt 0", agentCommandPath(queued.ID, "release"), `{"attempt":0}`},
		{"release attempt 2^32+1", agentCommandPath(queued.ID, "release"), fmt.Sprintf(`{"attempt":%d}`, 1<<32+queued.Attempt)},
		{"chunk offset past the bound", cmd("heartbeat"), hb(fmt.Sprintf(`{"stream":"stdout","offset":%d,"data":""}`, maxStream+1))},
		{"chunk end past the bound", cmd("heartbeat"), hb(fmt.Sprintf(`{"stream":"stdout","offset":%d,"data":"YWJj"}`, maxStream-2))},
		{"chunk end overflowing int64", cmd("heartbeat"), hb(`{"stream":"stdout","offset":9223372036854775807,"data":"YWJj"}`)},
		{"finish chunk offset past the bound", cmd("finish"), fin(fmt.Sprintf(`"exit_code":0,"chunks":[{"stream":"stderr","offset":%d,"data":"YQ=="}]`, maxStream))},
		{"lease wait_ms overflowing a duration", shared.AgentPathLease, `{"max":1,"wait_ms":9223372036854775807}`},
		{"lease wait_ms past the bound", shared.AgentPathLease, fmt.Sprintf(`{"max":1,"wait_ms":%d}`, shared.MaxWaitMillis+1)},
		{"control wait_ms overflowing a duration", shared.AgentPathControl, `{"wait_ms":9223372036854775807}`},
		{"control wait_ms negative", shared.AgentPathControl, `{"wait_ms":-1}`},
	}
	before := b.snapshot() + b.inventory()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := b.with(t)
			b.wantError(b.do(http.MethodPost, tc.path, node, tc.body), http.StatusBadRequest, "invalid_field")
			if after := b.snapshot() + b.inventory(); after != before {
				t.Fatalf("refused %s changed the database:\nbefore %s\nafter  %s", tc.body, before, after)
			}
		})
	}

	t.Run("exit code past int64 is not a number the request can hold", func(t *testing.T) {
		b := b.with(t)
		b.wantError(b.do(http.MethodPost, cmd("finish"), node, fin(`"exit_code":18446744073709551616`)), http.StatusBadRequest, "malformed_json")
		if after := b.snapshot() + b.inventory(); after != before {
			t.Fatal("refused finish changed the database")
		}
	})

	// The bounds themselves are accepted.
	// (A wait past the coordinator's maximum but within the bound is
	// shortened, not refused: TestLongPollWaitIsCapped.)
	t.Run("exit code 255 is accepted", func(t *testing.T) {
		b := b.with(t)
		var resp shared.FinishResponse
		b.mustJSON(b.URL, http.MethodPost, cmd("finish"), node, fin(`"exit_code":255`), http.StatusOK, &resp)
		rec := b.get(b.Alice, lc.ID)
		if rec.Status != shared.StatusFailed || rec.ExitCode == nil || *rec.ExitCode != 255 {
			t.Fatalf("status %s exit code %v, want failed with 255", rec.Status, rec.ExitCode)
		}
	})
}

// TestHeartbeatChunkFlood: a heartbeat with 200,000 one-byte chunks is
// refused at once (400 invalid_field, nothing written) instead of running
// one INSERT per chunk under the command's row lock until the statement
// timeout; one with shared.MaxRequestChunks chunks is stored whole and in
// order.
func TestHeartbeatChunkFlood(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.LeaseTTL, c.Heartbeat = time.Minute, 10*time.Second }))
	lc := b.run("flood")
	chunks := func(n int) []shared.Chunk {
		cs := make([]shared.Chunk, n)
		for i := range cs {
			cs[i] = shared.Chunk{Stream: shared.StreamStdout, Offset: int64(i), Data: []byte{'a' + byte(i%26)}}
		}
		return cs
	}
	flood := shared.HeartbeatRequest{Attempt: lc.Attempt, Chunks: chunks(200_000)}
	js, err := json.Marshal(flood)
	if err != nil {
		t.Fatal(err)
	}
	if len(js) > 12<<20 {
		t.Fatalf("the flood is %d bytes: it must fit the body limit to reach the chunk check", len(js))
	}
	before := b.snapshot()
	r := b.agent(b.NodeA, lc.ID, "heartbeat", js)
	b.wantError(r, http.StatusBadRequest, "invalid_field")
	if !strings.Contains(string(r.Body), "chunks") {
		t.Fatalf("the refusal does not name the chunks: %s", r)
	}
	if after := b.snapshot(); after != before {
		t.Fatal("the refused flood changed the database")
	}
	over := shared.HeartbeatRequest{Attempt: lc.Attempt, Chunks: chunks(shared.MaxRequestChunks + 1)}
	b.wantError(b.agent(b.NodeA, lc.ID, "heartbeat", over), http.StatusBadRequest, "invalid_field")
	finOver := shared.FinishRequest{Attempt: lc.Attempt, Chunks: chunks(shared.MaxRequestChunks + 1), StdoutLength: shared.MaxRequestChunks + 1, ExitCode: exitCode(0)}
	b.wantError(b.agent(b.NodeA, lc.ID, "finish", finOver), http.StatusBadRequest, "invalid_field")
	if after := b.snapshot(); after != before {
		t.Fatal("refused requests changed the database")
	}

	// The most chunks a request may carry are stored whole, in order.
	resp := b.heartbeat(b.NodeA, lc, chunks(shared.MaxRequestChunks)...)
	if resp.Stdout != shared.MaxRequestChunks {
		t.Fatalf("stdout offset %d after %d one-byte chunks", resp.Stdout, shared.MaxRequestChunks)
	}
	b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: shared.MaxRequestChunks, ExitCode: exitCode(0)}, shared.StatusSucceeded)
	var want bytes.Buffer
	for _, c := range chunks(shared.MaxRequestChunks) {
		want.Write(c.Data)
	}
	if got := b.output(b.Alice, lc.ID, shared.StreamStdout); !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("stdout %q, want %q", got, want.Bytes())
	}
}
