package e2e_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

// TestLargeOutputExact: 20 MiB of output arrives byte-exact, checked by
// checksum against the file the program printed.
func TestLargeOutputExact(t *testing.T) {
	t.Parallel()
	// Within the cap (the default is 16 MiB): every byte is kept.
	s := newStack(t, stackOptions{outputCap: 32 << 20})
	c := s.container()
	big := make([]byte, 20<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	c.WriteFile(t, "/data/big", big, 0o644)
	s.startAgent()
	s.waitReported(c)

	rec := s.submit(c.ID, "cat", "/data/big")
	got := s.wait(rec.ID, 3*time.Minute)
	if got.Status != shared.StatusSucceeded {
		t.Fatalf("status %s, stderr %q", got.Status, got.Stderr)
	}
	out := s.output(rec.ID, "stdout")
	if len(out) != len(big) || sha256.Sum256(out) != sha256.Sum256(big) {
		t.Fatalf("stdout is %d bytes with a different checksum; want the %d bytes written", len(out), len(big))
	}
}

// TestBinaryOutputExact: 1 MiB of random bytes (NULs, invalid UTF-8) on
// stdout and a different 64 KiB on stderr come back exactly through the raw
// output endpoint; the JSON record stays valid UTF-8.
func TestBinaryOutputExact(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{})
	c := s.container()
	bin := make([]byte, 1<<20)
	errBin := make([]byte, 64<<10)
	rand.Read(bin)
	rand.Read(errBin)
	c.WriteFile(t, "/data/bin", bin, 0o644)
	c.WriteFile(t, "/data/errbin", errBin, 0o644)
	s.startAgent()
	s.waitReported(c)

	rec := s.submit(c.ID, "sh", "-c", "cat /data/bin; cat /data/errbin >&2")
	got := s.wait(rec.ID, time.Minute)
	if got.Status != shared.StatusSucceeded {
		t.Fatalf("status %s, stderr %q", got.Status, got.Stderr)
	}
	if out := s.output(rec.ID, "stdout"); !bytes.Equal(out, bin) {
		t.Fatalf("stdout differs: got %d bytes, want %d", len(out), len(bin))
	}
	if out := s.output(rec.ID, "stderr"); !bytes.Equal(out, errBin) {
		t.Fatalf("stderr differs: got %d bytes, want %d", len(out), len(errBin))
	}
	if got.Stdout == "" {
		t.Fatal("record stdout is empty for a finished command with output")
	}
}

// TestOutputPastCapNotUploaded: the coordinator keeps 64 KiB per stream and
// tells the agent so in the lease. A command writing 8 MiB is recorded
// truncated with its first and last 32 KiB, and the agent uploads no more
// than the cap and one chunk: what the coordinator would throw away never
// crosses the network.
func TestOutputPastCapNotUploaded(t *testing.T) {
	t.Parallel()
	const outputCap, chunk = 64 << 10, 16 << 10
	s := newStack(t, stackOptions{outputCap: outputCap})
	p := newFaultProxy(t, s.url(""))
	c := s.container()
	s.startAgentAt(p.URL(), "--chunk-bytes", fmt.Sprint(chunk))
	s.waitReported(c)

	rec := s.submit(c.ID, "sh", "-c", "head -c 8388608 /dev/zero; echo fine >&2")
	got := s.wait(rec.ID, 2*time.Minute)
	if got.Status != shared.StatusSucceeded || !got.StdoutTruncated || got.StderrTruncated || got.Stderr != "fine\n" {
		t.Fatalf("status %s stdout_truncated %v stderr_truncated %v stderr %q; want succeeded, stdout truncated",
			got.Status, got.StdoutTruncated, got.StderrTruncated, got.Stderr)
	}
	if out := s.output(rec.ID, "stdout"); !bytes.Equal(out, make([]byte, outputCap)) {
		t.Fatalf("stored stdout is %d bytes, want the head and tail, %d", len(out), outputCap)
	}
	if sent := p.outputBytes.Load(); sent > outputCap+chunk {
		t.Fatalf("agent uploaded %d output bytes for a %d-byte cap (chunks of %d)", sent, outputCap, chunk)
	}
}
