package e2e_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/execq/execq/agent/runc/runctest"
	"github.com/execq/execq/shared"
)

// BenchmarkCancel measures cancel latency: from sending POST …/cancel for a
// running `sleep` to the moment its process is gone from the host (its
// /proc entry reaped). Quoted in the same run against the floors:
//
//   - bare runc exec: `runc exec <c> true`, start to exit;
//   - bare kill: SIGTERM sent directly to a `sleep` started with bare
//     `runc exec`, until its /proc entry is gone — what no cancel path can
//     beat.
//
// The cancel path is: API → row update + NOTIFY → the agent's parked control
// poll wakes → SIGTERM through the pid file. Fixed sample counts (run with
// -benchtime=1x); results as p50/p99 and ratios.
func BenchmarkCancel(b *testing.B) {
	const samples = 30
	s := newStack(b, stackOptions{leaseTTL: 15 * time.Second})
	c := s.container()
	s.startAgent()
	s.waitReported(c)
	runcBin := runctest.RuncBinary(b)

	bareExec := func() time.Duration {
		t0 := time.Now()
		if out, err := exec.Command(runcBin, "--root", c.Root, "exec", c.ID, "true").CombinedOutput(); err != nil {
			b.Fatalf("bare runc exec: %v: %s", err, out)
		}
		return time.Since(t0)
	}
	bareKill := func(i int) time.Duration {
		pidFile := filepath.Join(b.TempDir(), "pid")
		cmd := exec.Command(runcBin, "--root", c.Root, "exec", "--pid-file", pidFile, c.ID, "sleep", strconv.Itoa(7000+i))
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		var pid int
		s.eventually(10*time.Second, "bare sleep pid", func() bool {
			raw, err := os.ReadFile(pidFile)
			pid, _ = strconv.Atoi(strings.TrimSpace(string(raw)))
			return err == nil && pid > 0
		})
		t0 := time.Now()
		_ = syscall.Kill(pid, syscall.SIGTERM)
		waitGone(b, pid)
		d := time.Since(t0)
		_ = cmd.Wait()
		return d
	}
	viaCancel := func(i int) time.Duration {
		want := fmt.Sprintf("sleep %d", 8000+i)
		rec := s.submit(c.ID, "sleep", strconv.Itoa(8000+i))
		var pid int
		s.eventually(30*time.Second, "running "+want, func() bool {
			pid = containerPid(b, c.Root, c.ID, want)
			return pid > 0 && s.get(rec.ID).Status == shared.StatusRunning
		})
		t0 := time.Now()
		code, raw := s.call("POST", "/api/v1/commands/"+rec.ID+"/cancel", s.userToken, nil)
		if code != http.StatusAccepted {
			b.Fatalf("cancel: %d %s", code, raw)
		}
		waitGone(b, pid)
		d := time.Since(t0)
		if got := s.wait(rec.ID, 30*time.Second); shared.EndReason(endReason(got)) != shared.EndCancelled {
			b.Fatalf("cancelled command ended %s/%s", got.Status, endReason(got))
		}
		return d
	}
	for i := range 3 { // warm up every path
		bareExec()
		bareKill(100 + i)
		viaCancel(100 + i)
	}
	b.ResetTimer()
	for range b.N {
		var execs, kills, cancels []time.Duration
		for i := range samples { // interleaved, so machine noise hits all alike
			execs = append(execs, bareExec())
			kills = append(kills, bareKill(i))
			cancels = append(cancels, viaCancel(i))
		}
		exP50, exP99 := percentiles(execs)
		kP50, kP99 := percentiles(kills)
		cP50, cP99 := percentiles(cancels)
		b.ReportMetric(ms(cP50), "cancel-p50-ms")
		b.ReportMetric(ms(cP99), "cancel-p99-ms")
		b.ReportMetric(ms(exP50), "bare-exec-p50-ms")
		b.ReportMetric(ms(kP50), "bare-kill-p50-ms")
		b.ReportMetric(float64(cP50)/float64(exP50), "cancel/exec-p50")
		fmt.Printf("\ncancel latency (cancel request → process gone; same run, same container)\n"+
			"  execq cancel p50 %.1f ms p99 %.1f ms\n"+
			"  bare runc exec true p50 %.1f ms p99 %.1f ms | cancel p50 = %.2fx of it\n"+
			"  bare SIGTERM → gone p50 %.2f ms p99 %.2f ms (the floor)\n",
			ms(cP50), ms(cP99), ms(exP50), ms(exP99), float64(cP50)/float64(exP50), ms(kP50), ms(kP99))
	}
}

// waitGone polls until pid's /proc entry is gone (exited and reaped),
// failing after 30 s.
func waitGone(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); os.IsNotExist(err) {
			return
		}
		time.Sleep(200 * time.Microsecond)
	}
	t.Fatalf("pid %d still there after 30 s", pid)
}
