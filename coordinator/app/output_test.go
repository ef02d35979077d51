package app_test

import (
	"bytes"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/execq/execq/shared"
)

// binaryOutput is every byte value (NUL and invalid UTF-8 included)
// followed by 1 MiB of random bytes.
func binaryOutput(seed uint64) []byte {
	out := make([]byte, 256, 256+1<<20)
	for i := range out {
		out[i] = byte(i)
	}
	rng := rand.New(rand.NewPCG(seed, seed+1))
	for range 1 << 20 {
		out = append(out, byte(rng.Uint32()))
	}
	return out
}

// sendChunks heartbeats data in pieces of size bytes on one stream.
func (b *bundle) sendChunks(node nodeIdentity, lc shared.LeasedCommand, stream string, data []byte, size int) {
	b.t.Helper()
	for off := 0; off < len(data); off += size {
		end := min(off+size, len(data))
		hb := b.heartbeat(node, lc, shared.Chunk{Stream: stream, Offset: int64(off), Data: data[off:end]})
		got := hb.Stdout
		if stream == shared.StreamStderr {
			got = hb.Stderr
		}
		if got != int64(end) {
			b.t.Fatalf("%s offset after chunk at %d: %d, want %d", stream, off, got, end)
		}
	}
}

func TestBinaryOutputRoundTrips(t *testing.T) {
	t.Parallel()
	b := setup(t)
	outData, errData := binaryOutput(1), binaryOutput(2)
	// Put invalid UTF-8 right at a chunk boundary too: a lone continuation
	// byte and a truncated multi-byte sequence.
	errData = append(errData, 0x80, 'x', 0xe2, 0x82)

	lc := b.run("/usr/bin/dd", "if=/dev/urandom")
	b.sendChunks(b.NodeA, lc, shared.StreamStdout, outData, 100_000)
	b.sendChunks(b.NodeA, lc, shared.StreamStderr, errData, 333_333)

	// While running the exact bytes so far are readable; the record is not.
	if got := b.output(b.Alice, lc.ID, shared.StreamStdout); !bytes.Equal(got, outData) {
		t.Fatalf("running stdout: %d bytes differ from the %d sent", len(got), len(outData))
	}
	b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{
		Attempt: lc.Attempt, StdoutLength: int64(len(outData)), StderrLength: int64(len(errData)), ExitCode: exitCode(0),
	}, shared.StatusSucceeded)

	if got := b.output(b.Alice, lc.ID, shared.StreamStdout); !bytes.Equal(got, outData) {
		t.Fatalf("stdout: %d bytes differ from the %d sent", len(got), len(outData))
	}
	if got := b.output(b.Alice, lc.ID, shared.StreamStderr); !bytes.Equal(got, errData) {
		t.Fatalf("stderr: %d bytes differ from the %d sent", len(got), len(errData))
	}
	// stream defaults to stdout.
	r := b.do(http.MethodGet, commandPath(lc.ID)+"/output", b.Alice.Token, nil)
	if r.Status != http.StatusOK || !bytes.Equal(r.Body, outData) {
		t.Fatalf("output without stream: %d, %d bytes", r.Status, len(r.Body))
	}
	if s := r.Header.Get("X-Execq-Status"); s != "succeeded" {
		t.Fatalf("X-Execq-Status %q", s)
	}

	// The record's JSON is valid UTF-8 with replacement characters.
	r = b.do(http.MethodGet, commandPath(lc.ID), b.Alice.Token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("get: %s", r)
	}
	if !utf8.Valid(r.Body) {
		t.Fatal("record JSON is not valid UTF-8")
	}
	rec := checkRecordJSON(t, r.Body)
	for name, sent := range map[string][]byte{"stdout": outData, "stderr": errData} {
		s := rec[name].(string)
		if !utf8.ValidString(s) || !strings.ContainsRune(s, utf8.RuneError) {
			t.Fatalf("%s should be valid UTF-8 with U+FFFD", name)
		}
		if want := strings.ToValidUTF8(string(sent), "\uFFFD"); s != want {
			t.Fatalf("%s: %d chars, want the %d of the sent bytes with invalid sequences replaced", name, len(s), len(want))
		}
		if !strings.HasPrefix(s, "\x00\x01\x02") {
			t.Fatalf("%s lost the leading NUL bytes: %q", name, s[:8])
		}
	}
}

func TestEmptyOutput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	lc := b.run("true")
	if got := b.output(b.Alice, lc.ID, shared.StreamStdout); len(got) != 0 {
		t.Fatalf("running command without chunks: %q", got)
	}
	b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0)}, shared.StatusSucceeded)
	for _, s := range []string{shared.StreamStdout, shared.StreamStderr} {
		if got := b.output(b.Alice, lc.ID, s); len(got) != 0 {
			t.Fatalf("%s: %q, want empty", s, got)
		}
	}
	// Output of a queued command is empty too.
	rec := b.submit(b.Alice, b.NodeA.Container, "true")
	if got := b.output(b.Alice, rec.ID, shared.StreamStderr); len(got) != 0 {
		t.Fatalf("queued: %q", got)
	}
}
