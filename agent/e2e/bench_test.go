package e2e_test

import (
	"fmt"
	"net/http"
	"os/exec"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/execq/execq/agent/runc/runctest"
	"github.com/execq/execq/shared"
)

// BenchmarkEndToEnd measures execq against the physical floor in the same
// run: bare `runc exec <c> true` on the same containers.
//
//   - latency: submit-and-wait (POST ?wait=) → terminal record for `true`,
//     one at a time, against one bare `runc exec` at a time; p50 and p99.
//   - throughput: 200 `true` commands submitted at once over two containers
//     (agent concurrency 8), until the last is terminal, against 200 bare
//     `runc exec` run 8 at a time.
//
// It uses fixed sample counts (run with -benchtime=1x) and reports ratios.
func BenchmarkEndToEnd(b *testing.B) {
	const (
		latencySamples = 60
		throughputN    = 200
		parallel       = 8
	)
	s := newStack(b, stackOptions{leaseTTL: 15 * time.Second})
	cs := []*runctest.Container{s.container(), s.container()}
	s.startAgent("--concurrency", fmt.Sprint(parallel))
	s.waitReported(cs...)
	runcBin := runctest.RuncBinary(b)
	// bareErr runs on worker goroutines too, so it returns its error
	// instead of failing the benchmark itself.
	bareErr := func(c *runctest.Container) error {
		if out, err := exec.Command(runcBin, "--root", c.Root, "exec", c.ID, "true").CombinedOutput(); err != nil {
			return fmt.Errorf("bare runc exec: %v: %s", err, out)
		}
		return nil
	}
	bare := func(c *runctest.Container) {
		if err := bareErr(c); err != nil {
			b.Fatal(err)
		}
	}
	// Where the time goes, from the record's own timestamps (same clock):
	// enqueue→start (dispatch), start→finish (exec as reported).
	var phases struct {
		sync.Mutex
		dispatch, exec []time.Duration
	}
	// waitDone waits (GET ?wait=) until got is terminal, checks it and
	// records its phases.
	waitDone := func(got shared.CommandExecutionRecord) {
		for !got.Status.Terminal() {
			id := got.ID
			if code := s.do("GET", "/api/v1/commands/"+id+"?wait=30s", s.userToken, nil, &got); code != http.StatusOK {
				b.Fatalf("wait: status %d", code)
			}
		}
		if got.Status != shared.StatusSucceeded {
			b.Fatalf("true: %s %q", got.Status, got.Stderr)
		}
		phases.Lock()
		phases.dispatch = append(phases.dispatch, got.StartedAt.Sub(got.CreatedAt))
		phases.exec = append(phases.exec, got.FinishedAt.Sub(*got.StartedAt))
		phases.Unlock()
	}
	// Latency uses submit-and-wait: one call, as an operator would.
	viaExecq := func(c *runctest.Container) {
		var rec shared.CommandExecutionRecord
		code := s.do("POST", "/api/v1/containers/"+c.ID+"/commands?wait=30s", s.userToken,
			shared.SubmitRequest{Program: "true"}, &rec)
		if code != http.StatusOK && code != http.StatusAccepted { // 200 once terminal
			b.Fatalf("submit-and-wait: status %d", code)
		}
		waitDone(rec) // terminal already unless the wait ran out
	}
	// Warm both paths (page cache, connections) before measuring.
	for range 5 {
		bare(cs[0])
		viaExecq(cs[0])
	}

	b.ResetTimer()
	for range b.N {
		// Interleave the two so machine noise hits both alike.
		var bareLat, execqLat []time.Duration
		phases.dispatch, phases.exec = nil, nil
		for i := range latencySamples {
			c := cs[i%2]
			t0 := time.Now()
			bare(c)
			bareLat = append(bareLat, time.Since(t0))
			t0 = time.Now()
			viaExecq(c)
			execqLat = append(execqLat, time.Since(t0))
		}
		bareP50, bareP99 := percentiles(bareLat)
		exP50, exP99 := percentiles(execqLat)
		dispatchP50, _ := percentiles(phases.dispatch)
		execP50, _ := percentiles(phases.exec)

		t0 := time.Now()
		if err := runN(throughputN, parallel, func(i int) error { return bareErr(cs[i%2]) }); err != nil {
			b.Fatal(err)
		}
		bareTput := float64(throughputN) / time.Since(t0).Seconds()

		// execq: submit all at once, as an operator fanning out would, and
		// time until the last is terminal; the agent runs `parallel` at once.
		t0 = time.Now()
		recs := make([]shared.CommandExecutionRecord, throughputN)
		for i := range recs {
			recs[i] = s.submit(cs[i%2].ID, "true")
		}
		for _, rec := range recs {
			waitDone(rec)
		}
		exTput := float64(throughputN) / time.Since(t0).Seconds()

		b.ReportMetric(ms(bareP50), "bare-p50-ms")
		b.ReportMetric(ms(exP50), "execq-p50-ms")
		b.ReportMetric(ms(exP50-bareP50), "overhead-p50-ms")
		b.ReportMetric(ms(exP99), "execq-p99-ms")
		b.ReportMetric(bareTput, "bare-cmd/s")
		b.ReportMetric(exTput, "execq-cmd/s")
		b.ReportMetric(exTput/bareTput, "tput-ratio")
		fmt.Printf("\nend-to-end `true` (same run, same containers)\n"+
			"  latency  bare runc exec p50 %.1f ms p99 %.1f ms | execq POST→terminal p50 %.1f ms p99 %.1f ms | overhead p50 %+.1f ms (%.2fx)\n"+
			"  execq phases p50: enqueue→started %.1f ms, started→finished %.1f ms\n"+
			"  throughput %d cmds, %d-way: bare %.1f/s | execq %.1f/s | ratio %.2f\n",
			ms(bareP50), ms(bareP99), ms(exP50), ms(exP99), ms(exP50-bareP50), float64(exP50)/float64(bareP50),
			ms(dispatchP50), ms(execP50),
			throughputN, parallel, bareTput, exTput, exTput/bareTput)
	}
}

// runN runs f(0..n-1) on `workers` goroutines and returns the first error.
func runN(n, workers int, f func(int) error) error {
	next := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], s[min(len(s)-1, len(s)*99/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
