package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/agent/runc/runctest"
	"github.com/execq/execq/shared"

	"github.com/lib/pq"
)

// BenchmarkOutput64MiB measures bulk output against the physical floor in
// the same run: `cat` of a 64 MiB file of random bytes in a container,
// through execq until the command is terminal (its record holds every
// byte, checked by SHA-256 of the raw output), against bare `runc exec
// <c> cat` of the same file into a pipe the benchmark drains. It reports
// MiB/s of each, their ratio, and how much the agent's and the
// coordinator's peak resident memory (VmHWM) grew while the output flowed.
//
// Two more figures say where the time goes: the coordinator's own time in
// heartbeats and in the start and finish (from its request-duration
// histogram), and what PostgreSQL alone takes to store the same bytes the
// way the coordinator must at least store them: 64 rows of 1 MiB, each
// committed, from one connection on the same database. Those rows are the
// record's output (its chunks, kept as they are when the command ends), so
// that is the whole of what PostgreSQL must do; its ratio to bare `runc
// exec` is pg-floor-ratio, the best execq could reach while PostgreSQL
// holds the record durably.
//
// The coordinator's output cap is raised to 128 MiB so all 64 MiB are
// stored (the default keeps a 16 MiB head and tail). The agent runs with
// its default buffer, chunk size and flush interval. Random bytes are the
// worst case for PostgreSQL's compression. Run with -benchtime=1x (each
// iteration is one run of each).
func BenchmarkOutput64MiB(b *testing.B) {
	const size = 64 << 20
	s := newStack(b, stackOptions{leaseTTL: 15 * time.Second, outputCap: 128 << 20})
	c := s.container()
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		b.Fatal(err)
	}
	want := sha256.Sum256(data)
	c.WriteFile(b, "/data/big", data, 0o644)
	data = nil // only the digest is needed from here on
	a := s.startAgent()
	s.waitReported(c)
	runcBin := runctest.RuncBinary(b)

	bare := func() time.Duration {
		cmd := exec.Command(runcBin, "--root", c.Root, "exec", c.ID, "cat", "/data/big")
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, out)
		if werr := cmd.Wait(); err != nil || werr != nil || n != size {
			b.Fatalf("bare runc exec cat: %d bytes, %v, %v", n, err, werr)
		}
		return time.Since(t0)
	}
	// viaExecq submits the cat and waits for the command to be terminal by
	// following its (empty) stderr: the follow ends only then, with no
	// polling, and without moving 64 MiB of JSON record each time.
	viaExecq := func() (time.Duration, string) {
		t0 := time.Now()
		rec := s.submit(c.ID, "cat", "/data/big")
		status, stderr := s.followStatus(rec.ID, shared.StreamStderr)
		elapsed := time.Since(t0)
		if status != string(shared.StatusSucceeded) || stderr != "" {
			b.Fatalf("cat via execq: status %s stderr %q", status, stderr)
		}
		return elapsed, rec.ID
	}
	// Warm up the page cache and both paths with a small command, not a
	// 64 MiB one: the peak memory measured below must be the flow's.
	for range 3 {
		if out, err := exec.Command(runcBin, "--root", c.Root, "exec", c.ID, "true").CombinedOutput(); err != nil {
			b.Fatalf("bare runc exec true: %v: %s", err, out)
		}
		if got := s.wait(s.submit(c.ID, "true").ID, time.Minute); got.Status != shared.StatusSucceeded {
			b.Fatalf("warm-up true: %s", got.Status)
		}
	}
	if _, err := exec.Command("cat", c.Rootfs+"/data/big").Output(); err != nil {
		b.Fatal(err)
	}
	agentBefore, coordBefore := peakRSS(b, a.cmd.Process.Pid), peakRSS(b, s.coord.cmd.Process.Pid)

	b.ResetTimer()
	for range b.N {
		bareTime := bare()
		// The agent sends its start and finish in report batches
		// (/agent/v1/reports): here one request each.
		hb0, fin0, finN := s.routeSeconds("/heartbeat"), s.routeSeconds("/reports"), s.routeCount("/reports")
		execqTime, id := viaExecq()
		// The follow ends when the finish commits, a moment before its
		// handler returns and is observed: wait for that, or the finish's
		// time reads as nothing.
		for deadline := time.Now().Add(10 * time.Second); s.routeCount("/reports") < finN+2 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		hb, fin := s.routeSeconds("/heartbeat")-hb0, s.routeSeconds("/reports")-fin0
		b.StopTimer()
		pgStore := pgFloor(b, s.dbURL, size)
		// The record's exact bytes, read back in the coordinator's bounded
		// pieces, are the file's.
		if got := s.rawOutputSum(id, shared.StreamStdout); got != want {
			b.Fatalf("stored stdout sha256 %x, want %x (the file's)", got, want)
		}
		b.StartTimer()
		agentAfter, coordAfter := peakRSS(b, a.cmd.Process.Pid), peakRSS(b, s.coord.cmd.Process.Pid)
		mib := float64(size) / (1 << 20)
		bareRate, execqRate := mib/bareTime.Seconds(), mib/execqTime.Seconds()
		b.ReportMetric(bareRate, "bare-MiB/s")
		b.ReportMetric(execqRate, "execq-MiB/s")
		b.ReportMetric(execqRate/bareRate, "ratio")
		b.ReportMetric(bareTime.Seconds()/pgStore.Seconds(), "pg-floor-ratio")
		b.ReportMetric(float64(agentAfter-agentBefore)/(1<<20), "agent-peak-rss-growth-MiB")
		b.ReportMetric(float64(coordAfter-coordBefore)/(1<<20), "coord-peak-rss-growth-MiB")
		fmt.Printf("\n64 MiB of stdout (cat of a random file, same run, same container; output cap 128 MiB so all is stored)\n"+
			"  bare runc exec cat %.2f s, %.0f MiB/s | execq submit→terminal %.2f s, %.0f MiB/s | ratio %.2f\n"+
			"  coordinator time: heartbeats %.2f s, start and finish %.2f s | PostgreSQL alone: 64 × 1 MiB rows committed %.2f s (%.2f of bare)\n"+
			"  peak RSS (VmHWM): agent %d → %d MiB, coordinator %d → %d MiB\n",
			bareTime.Seconds(), bareRate, execqTime.Seconds(), execqRate, execqRate/bareRate,
			hb, fin, pgStore.Seconds(), bareTime.Seconds()/pgStore.Seconds(),
			agentBefore>>20, agentAfter>>20, coordBefore>>20, coordAfter>>20)
	}
}

// followStatus follows one stream of a command to its end (the command is
// terminal then) and returns the final status (a trailer) and the bytes.
func (s *stack) followStatus(id, stream string) (string, string) {
	s.t.Helper()
	req, _ := http.NewRequest("GET", s.url("/api/v1/commands/"+id+"/output?follow=true&stream="+stream), nil)
	req.Header.Set("Authorization", "Bearer "+s.userToken)
	client := &http.Client{Timeout: 10 * time.Minute}
	resp, err := client.Do(req)
	if err != nil {
		s.t.Fatalf("follow %s: %v", id, err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	if _, err := out.ReadFrom(resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		s.t.Fatalf("follow %s: status %d, %v", id, resp.StatusCode, err)
	}
	return resp.Trailer.Get("X-Execq-Status"), out.String()
}

// rawOutputSum is the SHA-256 of a stream's exact stored bytes, read
// without holding them all.
func (s *stack) rawOutputSum(id, stream string) [sha256.Size]byte {
	s.t.Helper()
	resp := s.outputResponse(id, stream)
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		s.t.Fatalf("output %s: %v", id, err)
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// routeSeconds is the coordinator's total time so far in agent requests
// whose route ends with suffix (execq_http_request_duration_seconds_sum).
func (s *stack) routeSeconds(suffix string) float64 {
	return s.routeMetric("sum", suffix)
}

// routeCount is how many agent requests whose route ends with suffix the
// coordinator has answered (execq_http_request_duration_seconds_count).
func (s *stack) routeCount(suffix string) float64 {
	return s.routeMetric("count", suffix)
}

func (s *stack) routeMetric(kind, suffix string) float64 {
	total := 0.0
	for _, line := range strings.Split(s.metrics(), "\n") {
		if strings.HasPrefix(line, "execq_http_request_duration_seconds_"+kind+"{") && strings.Contains(line, suffix+`"}`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += v
		}
	}
	return total
}

// pgFloor times PostgreSQL alone storing size random bytes as execq must at
// least: 1 MiB rows, each committed, on a scratch table of the database at
// url (dropped after).
func pgFloor(b *testing.B, url string, size int) time.Duration {
	b.Helper()
	// Binary parameters, as the coordinator's store sends them: the bytes
	// go raw, not as hex text twice their size.
	cfg, err := pq.NewConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.BinaryParameters = true
	connector, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	for _, q := range []string{
		`DROP TABLE IF EXISTS bench_floor_chunks`,
		`CREATE TABLE bench_floor_chunks (off bigint PRIMARY KEY, data bytea NOT NULL)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	defer db.ExecContext(ctx, `DROP TABLE IF EXISTS bench_floor_chunks`)
	// One random MiB sent 64 times: incompressible all the same, and no
	// random number generation in the time measured.
	chunk := make([]byte, 1<<20)
	if _, err := rand.Read(chunk); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	for off := 0; off < size; off += len(chunk) {
		if _, err := db.ExecContext(ctx, `INSERT INTO bench_floor_chunks VALUES ($1, $2)`, off, chunk); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(t0)
}
