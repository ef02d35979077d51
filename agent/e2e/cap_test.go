package e2e_test

import (
	"bytes"
	"crypto/rand"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

// TestOutputCapKeepsHeadAndTail: 40 MiB of output with a 4 MiB cap keeps
// the first and the last 2 MiB byte-exact (the raw output is exactly those,
// the record shows them around one marker line), and the record's totals
// are the true 40 MiB. stderr, within the cap, is kept whole.
func TestOutputCapKeepsHeadAndTail(t *testing.T) {
	t.Parallel()
	const total, cap = 40 << 20, 4 << 20
	s := newStack(t, stackOptions{outputCap: cap})
	c := s.container()
	big := make([]byte, total)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	c.WriteFile(t, "/data/big", big, 0o644)
	s.startAgent()
	s.waitReported(c)

	rec := s.submit(c.ID, "sh", "-c", "cat /data/big; echo done >&2")
	got := s.wait(rec.ID, 3*time.Minute)
	if got.Status != shared.StatusSucceeded {
		t.Fatalf("status %s, stderr %q", got.Status, got.Stderr)
	}
	if !got.StdoutTruncated || got.StdoutBytes != total || got.StderrTruncated || got.StderrBytes != 5 || got.Stderr != "done\n" {
		t.Fatalf("record: stdout truncated %v, %d bytes; stderr truncated %v, %d bytes %q",
			got.StdoutTruncated, got.StdoutBytes, got.StderrTruncated, got.StderrBytes, got.Stderr)
	}
	head, tail := big[:cap/2], big[total-cap/2:]
	req, _ := http.NewRequest("GET", s.url("/api/v1/commands/"+rec.ID+"/output"), nil)
	req.Header.Set("Authorization", "Bearer "+s.userToken)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw bytes.Buffer
	if _, err := raw.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if raw.Len() != cap || !bytes.Equal(raw.Bytes()[:cap/2], head) || !bytes.Equal(raw.Bytes()[cap/2:], tail) {
		t.Fatalf("raw output: %d bytes; want the first and the last 2 MiB exactly", raw.Len())
	}
	if o, at := resp.Header.Get("X-Execq-Omitted"), resp.Header.Get("X-Execq-Omitted-At"); o != "37748736" || at != "2097152" {
		t.Fatalf("X-Execq-Omitted %q at %q", o, at)
	}
	marker := "\n[execq: 37748736 bytes omitted]\n"
	if i := strings.Index(got.Stdout, marker); i < 0 || strings.Count(got.Stdout, marker) != 1 {
		t.Fatalf("record stdout has no single marker line %q", marker)
	} else if want := strings.ToValidUTF8(string(head), "\uFFFD"); got.Stdout[:i] != want {
		t.Fatalf("record stdout before the marker is not the head")
	} else if want := strings.ToValidUTF8(string(tail), "\uFFFD"); got.Stdout[i+len(marker):] != want {
		t.Fatalf("record stdout after the marker is not the tail")
	}
}
