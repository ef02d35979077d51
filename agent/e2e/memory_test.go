package e2e_test

import (
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

// TestAgentMemoryBoundedByBuffer: one command writes 200 MiB as fast as it
// can through an agent whose output buffer is 8 MiB. The agent's peak
// resident memory (VmHWM) may grow by a small multiple of the buffer, not
// with the output: at most 4 × 8 MiB over its peak before the command.
func TestAgentMemoryBoundedByBuffer(t *testing.T) {
	t.Parallel()
	const buffer, chunk = 8 << 20, 256 << 10
	// The cap lets all 200 MiB through the agent's buffer to the
	// coordinator, as head: the tail the agent would hold in memory until
	// the end is made small, so only the buffer is measured.
	s := newStack(t, stackOptions{outputCap: 256 << 20, env: []string{"EXECQ_OUTPUT_TAIL_BYTES=1048576"}})
	c := s.container()
	a := s.startAgent("--max-buffer-bytes", strconv.Itoa(buffer), "--chunk-bytes", strconv.Itoa(chunk))
	s.waitReported(c)
	before := peakRSS(t, a.cmd.Process.Pid)

	rec := s.submit(c.ID, "sh", "-c", "yes | head -c 209715200; echo done >&2")
	// Polled through the stderr bytes (and their X-Execq-Status header), not
	// the record, which would carry the 200 MiB of stdout each time.
	var status, stderr string
	s.eventually(5*time.Minute, "the command to end", func() bool {
		status, stderr = s.outputStatus(rec.ID, shared.StreamStderr)
		return shared.Status(status).Terminal()
	})
	after := peakRSS(t, a.cmd.Process.Pid)
	t.Logf("agent peak RSS %d MiB before, %d MiB after", before>>20, after>>20)
	if status != string(shared.StatusSucceeded) || stderr != "done\n" {
		t.Fatalf("status %s stderr %q", status, stderr)
	}
	if after > before+4*buffer {
		t.Fatalf("agent peak RSS grew from %d to %d MiB with an %d MiB buffer; want at most %d MiB more",
			before>>20, after>>20, buffer>>20, 4*buffer>>20)
	}
}

// peakRSS reads a process's peak resident set size in bytes.
func peakRSS(t testing.TB, pid int) int64 {
	t.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// outputStatus reads one stream's bytes and the command's status.
func (s *stack) outputStatus(id, stream string) (string, string) {
	s.t.Helper()
	resp := s.outputResponse(id, stream)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("output %s: %v", id, err)
	}
	return resp.Header.Get("X-Execq-Status"), string(raw)
}

// outputResponse GETs one stream's exact stored bytes as the demo user, failing the
// test unless it answers 200; the caller reads and closes the body.
func (s *stack) outputResponse(id, stream string) *http.Response {
	s.t.Helper()
	req, _ := http.NewRequest("GET", s.url("/api/v1/commands/"+id+"/output?stream="+stream), nil)
	req.Header.Set("Authorization", "Bearer "+s.userToken)
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("output %s: %v", id, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		s.t.Fatalf("output %s: status %d", id, resp.StatusCode)
	}
	return resp
}
