package worker

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/execq/execq/agent/metrics"
	"github.com/execq/execq/agent/runc"
	"github.com/execq/execq/agent/runc/runctest"
	"github.com/execq/execq/shared"
)

type harness struct {
	fc     *fakeCoord
	c      *runctest.Container
	w      *Worker
	m      *metrics.Metrics
	logs   *testLog
	cancel context.CancelFunc
	done   chan error
}

// setup starts a worker against a fake coordinator and one real container.
// configure may adjust the fake before the worker starts.
func setup(t *testing.T, cfg Config, configure func(*fakeCoord)) *harness {
	t.Helper()
	h := &harness{fc: newFakeCoord(t), logs: newTestLog(t), done: make(chan error, 1)}
	if configure != nil {
		configure(h.fc)
	}
	h.c = runctest.Start(t, runctest.Options{})
	h.m = metrics.New(prometheus.NewRegistry())
	if cfg.LeaseWait == 0 {
		cfg.LeaseWait = 2 * time.Second
	}
	if cfg.KillAfter == 0 {
		cfg.KillAfter = time.Second
	}
	logger := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := New(cfg, h.fc.client(t, h.logs), h.c.Runner, logger, h.m)
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	var ctx context.Context
	ctx, h.cancel = context.WithCancel(context.Background())
	go func() { h.done <- w.Run(ctx) }()
	t.Cleanup(func() {
		h.cancel()
		w.Abort()
		select {
		case <-h.done:
		case <-time.After(time.Minute):
			t.Error("Run did not return after cancel and Abort")
		}
	})
	return h
}

// exec runs a program in the test container directly (not through the
// worker), to look at its state.
func (h *harness) exec(t *testing.T, program string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	p, err := h.c.Runner.Exec(context.Background(), runc.ExecConfig{ContainerID: h.c.ID, Program: program, Args: args, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// assertNotRunning waits until no process in the container runs pattern.
func (h *harness) assertNotRunning(t *testing.T, pattern string) {
	t.Helper()
	var ps string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		ps = h.exec(t, "ps", "-o", "args")
		if !strings.Contains(ps, pattern) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%q still running:\n%s", pattern, ps)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// value reads a counter or gauge (testutil would pull in more modules).
func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func randomData(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRunsCommandAndReportsExactly(t *testing.T) {
	h := setup(t, Config{}, nil)
	id := h.fc.enqueue(h.c.ID, "sh", "-c", "echo out; echo err >&2; exit 3")
	c := h.fc.waitFinished(t, id, 30*time.Second)
	if string(c.out[0]) != "out\n" || string(c.out[1]) != "err\n" {
		t.Fatalf("stdout %q stderr %q", c.out[0], c.out[1])
	}
	if c.finish.ExitCode == nil || *c.finish.ExitCode != 3 || c.finish.Error != "" || c.starts != 1 || c.finishes != 1 {
		t.Fatalf("finish %+v starts %d", c.finish, c.starts)
	}
	if c.finish.StdoutLength != 4 || c.finish.StderrLength != 4 || c.finish.Attempt != 1 {
		t.Fatalf("finish %+v", c.finish)
	}
	waitUntil(t, "metrics", func() bool {
		return value(h.m.CommandsExecuted.WithLabelValues(metrics.ResultFailed)) == 1 &&
			value(h.m.OutputBytes.WithLabelValues("stdout")) == 4 &&
			value(h.m.CommandsRunning) == 0
	})
}

func TestExitCodesAndExecErrors(t *testing.T) {
	h := setup(t, Config{Concurrency: 4}, nil)
	h.c.WriteFile(t, "/bin/notexec", []byte("#!/bin/sh\n"), 0o644)
	exit255 := h.fc.enqueue(h.c.ID, "sh", "-c", "exit 255")
	exit0 := h.fc.enqueue(h.c.ID, "true")
	missing := h.fc.enqueue(h.c.ID, "no-such-program", "-x")
	notExec := h.fc.enqueue(h.c.ID, "/bin/notexec")
	noContainer := h.fc.enqueue("5f0c7a4e-7d6b-4b8e-9a7c-000000000000", "true")
	// The longest program a submit accepts: its error must still fit.
	longName := h.fc.enqueue(h.c.ID, "/"+strings.Repeat("n", shared.MaxProgramBytes-1))

	for id, want := range map[string]int{exit255: 255, exit0: 0} {
		c := h.fc.waitFinished(t, id, 30*time.Second)
		if c.finish.ExitCode == nil || *c.finish.ExitCode != want || c.finish.Error != "" {
			t.Errorf("want exit %d, got %+v", want, c.finish)
		}
	}
	for id, want := range map[string]string{
		missing:     `could not start "no-such-program" in container ` + h.c.ID + `: exec failed: unable to start container process: exec: "no-such-program": executable file not found in $PATH`,
		notExec:     "permission denied",
		noContainer: "container does not exist on this host",
		longName:    "could not start",
	} {
		c := h.fc.waitFinished(t, id, 30*time.Second)
		if c.finish.ExitCode != nil || !strings.Contains(c.finish.Error, want) {
			t.Errorf("want error containing %q and no exit code, got %+v", want, c.finish)
		}
		if len(c.out[0])+len(c.out[1]) != 0 {
			t.Errorf("runc's own message reached the output: %q %q", c.out[0], c.out[1])
		}
	}
	waitUntil(t, "metrics", func() bool {
		return value(h.m.CommandsExecuted.WithLabelValues(metrics.ResultExecError)) == 4
	})
}

// TestSameLeaseTwiceRunsOnce: a command handed out again under the same
// attempt while its session runs — a claim PostgreSQL lost in a crash and
// that was taken again, since claims commit asynchronously — is not run a
// second time: the coordinator would say yes to its start (the same lease),
// so the agent is where the second run is refused.
func TestSameLeaseTwiceRunsOnce(t *testing.T) {
	h := setup(t, Config{Concurrency: 2}, nil)
	id := h.fc.enqueue(h.c.ID, "sh", "-c", "echo ran >> /tmp/runs; sleep 1")
	waitUntil(t, "the command started", func() bool { return h.fc.snapshot(id).starts == 1 })
	h.fc.requeue(id)
	waitUntil(t, "the command leased again", func() bool { return h.fc.queued() == 0 })
	h.fc.waitFinished(t, id, 30*time.Second)
	waitUntil(t, "no session left", func() bool { return value(h.m.CommandsRunning) == 0 })
	runs, err := os.ReadFile(filepath.Join(h.c.Rootfs, "tmp", "runs"))
	if err != nil || string(runs) != "ran\n" {
		t.Fatalf("the program ran %d times (%q, %v), want once", strings.Count(string(runs), "ran"), runs, err)
	}
}

func TestStartNotConfirmedNeverRuns(t *testing.T) {
	var fc *fakeCoord
	h := setup(t, Config{Concurrency: 3}, func(f *fakeCoord) {
		fc = f
		f.onStart = func(id string) (int, any) {
			// The refusal is named by the command's last argument, known
			// before it is enqueued: the agent may start it at once.
			args := fc.snapshot(id).cmd.Args
			switch args[len(args)-1] {
			case "allowed":
				return 0, nil
			case "lease_lost":
				return http.StatusConflict, errBody(shared.CodeLeaseLost, "expired")
			case "cancelled":
				return http.StatusConflict, errBody(shared.CodeCancelled, "cancelled")
			case "forbidden":
				return http.StatusForbidden, errBody(shared.CodeForbidden, "not yours")
			default:
				return http.StatusServiceUnavailable, errBody("unavailable", "down")
			}
		}
	})
	var ids []string
	for _, how := range []string{"lease_lost", "cancelled", "forbidden", "down"} {
		ids = append(ids, h.fc.enqueue(h.c.ID, "sh", "-c", `touch "/tmp/ran-$0"`, how))
	}
	// A command that is allowed, to know the others had their chance.
	ok := h.fc.enqueue(h.c.ID, "sh", "-c", `touch "/tmp/ran-$0"`, "allowed")
	h.fc.waitFinished(t, ok, 30*time.Second)
	waitUntil(t, "all starts refused", func() bool {
		var n float64
		for _, r := range []string{"lease_lost", "cancelled", "rejected", "error"} {
			n += value(h.m.StartRefused.WithLabelValues(r))
		}
		return n == 4
	})
	time.Sleep(300 * time.Millisecond)
	for _, how := range []string{"lease_lost", "cancelled", "forbidden", "down"} {
		if _, err := os.Stat(filepath.Join(h.c.Rootfs, "tmp", "ran-"+how)); err == nil {
			t.Errorf("command whose start was refused (%s) ran", how)
		}
	}
	if _, err := os.Stat(filepath.Join(h.c.Rootfs, "tmp", "ran-allowed")); err != nil {
		t.Errorf("the allowed command did not run: %v", err)
	}
	for _, id := range ids {
		if c := h.fc.snapshot(id); len(c.heartbeats) != 0 || c.finish != nil {
			t.Errorf("refused command was reported: %+v", c)
		}
	}
	// Each was prepared while its start was asked for; a refused one's
	// preparation is discarded.
	waitUntil(t, "no exec scratch directory left", func() bool { return len(scratchDirs(h)) == 0 })
}

// scratchDirs lists the exec scratch directories in the runner's TempDir.
func scratchDirs(h *harness) []string {
	dirs, _ := filepath.Glob(filepath.Join(h.c.Runner.TempDir, "execq-exec-*"))
	return dirs
}

// TestExecPreparedWhileStartIsAsked: the exec's spec is written while the
// start is on its way, not after the yes — and the program runs only after
// it. The fake coordinator holds the start's answer until it sees the
// prepared spec, and looks for the program's trace before answering.
func TestExecPreparedWhileStartIsAsked(t *testing.T) {
	var h *harness
	var seen, ranEarly atomic.Bool
	h = setup(t, Config{Concurrency: 1}, func(f *fakeCoord) {
		f.onStart = func(id string) (int, any) {
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				specs, _ := filepath.Glob(filepath.Join(h.c.Runner.TempDir, "execq-exec-*", "process.json"))
				if len(specs) > 0 {
					seen.Store(true)
					break
				}
			}
			if _, err := os.Stat(filepath.Join(h.c.Rootfs, "tmp", "ran")); err == nil {
				ranEarly.Store(true)
			}
			return 0, nil
		}
	})
	id := h.fc.enqueue(h.c.ID, "touch", "/tmp/ran")
	h.fc.waitFinished(t, id, 30*time.Second)
	if c := h.fc.snapshot(id); c.finish == nil || c.finish.ExitCode == nil || *c.finish.ExitCode != 0 {
		t.Fatalf("finish %+v", c.finish)
	}
	if !seen.Load() {
		t.Fatal("the exec's spec was not written while the start was being answered")
	}
	if ranEarly.Load() {
		t.Fatal("the program ran before its start was answered")
	}
	waitUntil(t, "no exec scratch directory left", func() bool { return len(scratchDirs(h)) == 0 })
}

func TestLargeOutputInBoundedChunks(t *testing.T) {
	h := setup(t, Config{ChunkBytes: 256 << 10, MaxBufferBytes: 1 << 20}, nil)
	data := randomData(t, 5<<20)
	h.c.WriteFile(t, "/data", data, 0o644)
	id := h.fc.enqueue(h.c.ID, "sh", "-c", "cat /data & cat /data >&2; wait")
	c := h.fc.waitFinished(t, id, time.Minute)
	if !bytes.Equal(c.out[0], data) || !bytes.Equal(c.out[1], data) {
		t.Fatalf("output differs: %d and %d bytes, want %d each", len(c.out[0]), len(c.out[1]), len(data))
	}
	if c.maxRequest > 256<<10 {
		t.Fatalf("a request carried %d bytes of output, above the 256 KiB chunk size", c.maxRequest)
	}
	if *c.finish.ExitCode != 0 || c.finish.StdoutLength != int64(len(data)) {
		t.Fatalf("finish %+v", c.finish)
	}
}

func TestResendsWhatWasNotAcknowledged(t *testing.T) {
	for _, mode := range []string{"partial", "answers lost", "gap"} {
		t.Run(mode, func(t *testing.T) {
			var gaps atomic.Int32
			h := setup(t, Config{ChunkBytes: 64 << 10}, func(f *fakeCoord) {
				switch mode {
				case "partial":
					f.partial = true
				case "answers lost":
					f.dropAnswers = true
				case "gap":
					// Refuse the first few data heartbeats with a gap at
					// what is stored, as after a coordinator restart.
					f.onHeartbeat = func(id string, req shared.HeartbeatRequest) (int, any) {
						if len(req.Chunks) == 0 || gaps.Add(1) > 3 {
							return 0, nil
						}
						c := f.snapshot(id)
						return http.StatusConflict, shared.GapBody{Error: shared.ErrorDetail{Code: shared.CodeOutputGap, Message: "gap"}, Offsets: c.offsets()}
					}
					f.onFinish = func(id string, req shared.FinishRequest) (int, any) {
						if gaps.Add(1) > 5 {
							return 0, nil
						}
						c := f.snapshot(id)
						return http.StatusConflict, shared.GapBody{Error: shared.ErrorDetail{Code: shared.CodeOutputGap, Message: "gap"}, Offsets: c.offsets()}
					}
				}
			})
			data := randomData(t, 300<<10)
			h.c.WriteFile(t, "/data", data, 0o644)
			id := h.fc.enqueue(h.c.ID, "sh", "-c", "cat /data; sleep 1; cat /data >&2; cat /data")
			c := h.fc.waitFinished(t, id, time.Minute)
			if !bytes.Equal(c.out[0], append(bytes.Clone(data), data...)) || !bytes.Equal(c.out[1], data) {
				t.Fatalf("output differs: stdout %d bytes (want %d), stderr %d (want %d)", len(c.out[0]), 2*len(data), len(c.out[1]), len(data))
			}
		})
	}
}

func TestCoordinatorOutageBuffersWithBackPressure(t *testing.T) {
	var outage atomic.Bool
	h := setup(t, Config{ChunkBytes: 16 << 10, MaxBufferBytes: 64 << 10}, func(f *fakeCoord) {
		down := func() (int, any) {
			if outage.Load() {
				return http.StatusServiceUnavailable, errBody("unavailable", "coordinator down")
			}
			return 0, nil
		}
		f.onHeartbeat = func(string, shared.HeartbeatRequest) (int, any) { return down() }
		f.onFinish = func(string, shared.FinishRequest) (int, any) { return down() }
	})
	data := randomData(t, 1<<20)
	h.c.WriteFile(t, "/data", data, 0o644)
	id := h.fc.enqueue(h.c.ID, "sh", "-c", "echo go; sleep 0.5; cat /data; touch /tmp/wrote-all")
	waitUntil(t, "first output", func() bool { return len(h.fc.snapshot(id).out[0]) > 0 })
	outage.Store(true)
	time.Sleep(2 * time.Second)
	marker := filepath.Join(h.c.Rootfs, "tmp", "wrote-all")
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the program wrote 1 MiB past a 64 KiB buffer while the coordinator was down: no back-pressure")
	}
	if c := h.fc.snapshot(id); c.finish != nil {
		t.Fatal("finished during the outage")
	}
	outage.Store(false)
	c := h.fc.waitFinished(t, id, time.Minute)
	if want := append([]byte("go\n"), data...); !bytes.Equal(c.out[0], want) {
		t.Fatalf("stdout %d bytes after the outage, want %d exactly", len(c.out[0]), len(want))
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("program did not complete")
	}
}

func TestLeaseLostStopsTheProgram(t *testing.T) {
	var lost atomic.Bool
	h := setup(t, Config{Concurrency: 1}, func(f *fakeCoord) {
		f.onHeartbeat = func(id string, req shared.HeartbeatRequest) (int, any) {
			if lost.Load() {
				return http.StatusConflict, errBody(shared.CodeLeaseLost, "reaped")
			}
			return 0, nil
		}
	})
	id := h.fc.enqueue(h.c.ID, "sh", "-c", "echo started; exec sleep 4321")
	waitUntil(t, "output", func() bool { return string(h.fc.snapshot(id).out[0]) == "started\n" })
	lost.Store(true)
	h.assertNotRunning(t, "sleep 4321")
	waitUntil(t, "lease_lost metric", func() bool {
		return value(h.m.CommandsExecuted.WithLabelValues(metrics.ResultLeaseLost)) == 1
	})
	if c := h.fc.snapshot(id); c.finish != nil {
		t.Fatalf("a command whose lease was lost was reported: %+v", c.finish)
	}
	// The slot is free again.
	lost.Store(false)
	next := h.fc.enqueue(h.c.ID, "true")
	h.fc.waitFinished(t, next, 30*time.Second)
}

func TestUnrecoverableGapGivesUp(t *testing.T) {
	h := setup(t, Config{}, func(f *fakeCoord) {
		f.onHeartbeat = func(id string, req shared.HeartbeatRequest) (int, any) {
			if c := f.snapshot(id); len(c.out[0]) > 0 {
				// The coordinator "forgot" bytes it acknowledged.
				return http.StatusConflict, shared.GapBody{Error: shared.ErrorDetail{Code: shared.CodeOutputGap}, Offsets: shared.Offsets{}}
			}
			return 0, nil
		}
	})
	id := h.fc.enqueue(h.c.ID, "sh", "-c", "echo started; exec sleep 4322")
	waitUntil(t, "output", func() bool { return len(h.fc.snapshot(id).out[0]) > 0 })
	h.assertNotRunning(t, "sleep 4322")
	if c := h.fc.snapshot(id); c.finish != nil {
		t.Fatalf("reported after losing output: %+v", c.finish)
	}
}

func TestHeartbeatsKeepFlowing(t *testing.T) {
	var slow atomic.Bool
	h := setup(t, Config{}, func(f *fakeCoord) {
		f.hbMillis = 200
		f.onHeartbeat = func(id string, req shared.HeartbeatRequest) (int, any) {
			if len(req.Chunks) > 0 && slow.CompareAndSwap(false, true) {
				time.Sleep(2 * time.Second) // a chunk on a slow link
			}
			return 0, nil
		}
	})
	// Silent for 1.5s, then output whose first upload takes 2s, then
	// silent again.
	id := h.fc.enqueue(h.c.ID, "sh", "-c", "sleep 1.5; echo x; sleep 3")
	c := h.fc.waitFinished(t, id, 30*time.Second)
	if string(c.out[0]) != "x\n" {
		t.Fatalf("stdout %q", c.out[0])
	}
	if len(c.heartbeats) < 15 {
		t.Fatalf("only %d heartbeats in 4.5s at a 200ms interval", len(c.heartbeats))
	}
	for i := 1; i < len(c.heartbeats); i++ {
		if gap := c.heartbeats[i].Sub(c.heartbeats[i-1]); gap > 700*time.Millisecond {
			t.Fatalf("no heartbeat for %v (interval 200ms), even during a slow upload", gap)
		}
	}
}

func TestRepollsAtOnceAfterACommandFinishes(t *testing.T) {
	h := setup(t, Config{Concurrency: 2, LeaseWait: 10 * time.Second}, nil)
	waitUntil(t, "first poll", func() bool { return len(h.fc.leaseCalls()) == 1 })
	long := h.fc.enqueue(h.c.ID, "sleep", "3")
	short := h.fc.enqueue(h.c.ID, "sleep", "0.5")
	_ = long
	c := h.fc.waitFinished(t, short, 30*time.Second)
	// The short command's slot must be asked for again at once, although
	// a poll for the other slot... (both were leased together, so no poll
	// was parked; the freed slot polls by itself).
	waitUntil(t, "re-poll after finish", func() bool {
		for _, l := range h.fc.leaseCalls() {
			if !l.at.Before(c.finishedAt) && l.at.Sub(c.finishedAt) < 500*time.Millisecond && l.max == 1 {
				return true
			}
		}
		return false
	})
	lc := h.fc.leaseCalls()
	parkedAt := lc[len(lc)-1].at
	// That poll is parked for 10s. When the long command finishes, its
	// slot must not wait behind it: a second poll goes out at once.
	c = h.fc.waitFinished(t, long, 30*time.Second)
	waitUntil(t, "second parked poll", func() bool {
		for _, l := range h.fc.leaseCalls() {
			if l.at.After(parkedAt) && !l.at.Before(c.finishedAt) && l.at.Sub(c.finishedAt) < 500*time.Millisecond {
				return true
			}
		}
		return false
	})
	// Both slots are polling: two commands start together.
	a := h.fc.enqueue(h.c.ID, "sleep", "1")
	b := h.fc.enqueue(h.c.ID, "sleep", "1")
	ca := h.fc.waitFinished(t, a, 30*time.Second)
	cb := h.fc.waitFinished(t, b, 30*time.Second)
	if d := ca.finishedAt.Sub(cb.finishedAt).Abs(); d > 700*time.Millisecond {
		t.Fatalf("the two commands ran one after the other (finished %v apart)", d)
	}
}

func TestDrainLetsRunningCommandsFinish(t *testing.T) {
	h := setup(t, Config{Concurrency: 2, Grace: 30 * time.Second}, nil)
	id := h.fc.enqueue(h.c.ID, "sh", "-c", "sleep 1; echo done")
	waitUntil(t, "start", func() bool { return h.fc.snapshot(id).starts == 1 })
	h.cancel()
	select {
	case err := <-h.done:
		t.Fatalf("Run returned %v before the running command finished", err)
	case <-time.After(300 * time.Millisecond):
	}
	later := h.fc.enqueue(h.c.ID, "true")
	h.waitReturned(t, "Run did not return after the drain")
	c := h.fc.snapshot(id)
	if c.finish == nil || *c.finish.ExitCode != 0 || string(c.out[0]) != "done\n" {
		t.Fatalf("drained command: %+v stdout %q", c.finish, c.out[0])
	}
	if c := h.fc.snapshot(later); c.starts != 0 {
		t.Fatal("a command was started during the drain")
	}
}

func TestGraceEndStopsAndReports(t *testing.T) {
	h := setup(t, Config{Grace: 500 * time.Millisecond, KillAfter: 500 * time.Millisecond}, nil)
	id := h.fc.enqueue(h.c.ID, "sh", "-c", `trap "" TERM; echo hi; exec sleep 4323`)
	waitUntil(t, "output", func() bool { return string(h.fc.snapshot(id).out[0]) == "hi\n" })
	h.cancel()
	h.waitReturned(t, "Run did not return after the grace period")
	c := h.fc.snapshot(id)
	if c.finish == nil || c.finish.ExitCode != nil || c.finish.Error != "the agent stopped the command during shutdown after the grace period of 500ms" {
		t.Fatalf("finish %+v", c.finish)
	}
	if string(c.out[0]) != "hi\n" {
		t.Fatalf("stdout %q", c.out[0])
	}
	h.assertNotRunning(t, "sleep 4323")
}

func TestAbortStopsAtOnce(t *testing.T) {
	h := setup(t, Config{Grace: time.Hour}, nil)
	id := h.fc.enqueue(h.c.ID, "sh", "-c", "echo hi; exec sleep 4324")
	waitUntil(t, "output", func() bool { return string(h.fc.snapshot(id).out[0]) == "hi\n" })
	h.cancel()
	time.Sleep(200 * time.Millisecond)
	h.w.Abort()
	h.waitReturned(t, "Run did not return after Abort")
	c := h.fc.snapshot(id)
	if c.finish == nil || !strings.Contains(c.finish.Error, "second signal") {
		t.Fatalf("finish %+v", c.finish)
	}
	h.assertNotRunning(t, "sleep 4324")
}

func TestCancelInHeartbeatAnswer(t *testing.T) {
	h := setup(t, Config{}, func(f *fakeCoord) {
		f.onHeartbeat = func(id string, req shared.HeartbeatRequest) (int, any) {
			c := f.snapshot(id)
			if len(c.heartbeats) >= 3 {
				return http.StatusOK, shared.HeartbeatResponse{Offsets: c.offsets(), Cancel: true}
			}
			return 0, nil
		}
	})
	id := h.fc.enqueue(h.c.ID, "sleep", "4325")
	c := h.fc.waitFinished(t, id, 30*time.Second)
	if c.finish.EndReason != shared.EndCancelled || c.finish.ExitCode == nil || c.finish.Signal == "" {
		t.Fatalf("finish %+v: want end_reason cancelled with the exit status and the signal", c.finish)
	}
	h.assertNotRunning(t, "sleep 4325")
}

// TestLargeOutputWithDefaults pushes 24 MiB through default-sized chunks and
// buffers. (The runner's own test covers 50 MiB; through JSON under the race
// detector that would take half a minute.)
func TestLargeOutputWithDefaults(t *testing.T) {
	h := setup(t, Config{}, nil)
	data := randomData(t, 1<<20)
	h.c.WriteFile(t, "/data", data, 0o644)
	id := h.fc.enqueue(h.c.ID, "sh", "-c", `i=0; while [ $i -lt 12 ]; do cat /data; cat /data >&2; i=$((i+1)); done`)
	start := time.Now()
	c := h.fc.waitFinished(t, id, 2*time.Minute)
	t.Logf("24 MiB through the worker in %v", time.Since(start))
	want := bytes.Repeat(data, 12)
	if !bytes.Equal(c.out[0], want) || !bytes.Equal(c.out[1], want) {
		t.Fatalf("output differs: %d and %d bytes, want %d each", len(c.out[0]), len(c.out[1]), len(want))
	}
	if c.maxRequest > DefaultChunkBytes {
		t.Fatalf("request with %d bytes of output", c.maxRequest)
	}
}

// waitReturned waits for Run to return nil, failing with what if it does not
// within 30s. The result is put back for the harness's cleanup.
func (h *harness) waitReturned(t *testing.T, what string) {
	t.Helper()
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatal(err)
		}
		h.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatal(what)
	}
}
