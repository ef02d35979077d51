package worker

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/execq/execq/agent/client"
	"github.com/execq/execq/agent/metrics"
	"github.com/execq/execq/agent/runc"
	"github.com/execq/execq/shared"
)

// session is one leased command, from start to finish.
type session struct {
	w   *Worker
	cmd shared.LeasedCommand
	log *slog.Logger
	hb  time.Duration // heartbeat interval the coordinator asked for
	out *output

	lastRenew atomic.Int64 // unix nanos of the last accepted heartbeat or start
	failures  atomic.Int64 // coordinator calls failed in a row, for quieter logs
	reported  atomic.Bool  // finish was accepted: later answers do not matter
	finishing atomic.Bool  // the program ended; finish is being sent

	mu         sync.Mutex
	stopReason string // set once by stop; the Error reported
	stopResult string
	ctl        stopControl   // set with stopReason by stopFor (control.go)
	stopCh     chan struct{} // closed by stop: end the program
	lostCh     chan struct{} // closed when the lease is gone: end it, report nothing
	lostOnce   sync.Once
	quit       chan struct{} // closed when the session ends: stop the keeper
}

func (w *Worker) newSession(cmd shared.LeasedCommand, hbMillis int, log *slog.Logger) *session {
	hb := time.Duration(hbMillis) * time.Millisecond
	if hb <= 0 {
		hb = w.cfg.DefaultHeartbeat
	}
	// A coordinator asking for more than one heartbeat per 100ms is
	// misconfigured; do not let it turn the agent into a load generator.
	hb = max(hb, 100*time.Millisecond)
	return &session{
		w:      w,
		cmd:    cmd,
		log:    log,
		hb:     hb,
		stopCh: make(chan struct{}),
		lostCh: make(chan struct{}),
		quit:   make(chan struct{}),
	}
}

// stop asks for the program to be ended and reported failed with reason.
// The first reason wins.
func (s *session) stop(reason, result string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopReason != "" {
		return
	}
	s.stopReason, s.stopResult = reason, result
	close(s.stopCh)
}

func (s *session) stopped() (string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopReason, s.stopResult
}

// lose records that the coordinator no longer holds our lease (reaped,
// taken over, forbidden): the command must not keep running unreported.
func (s *session) lose(err error) {
	if s.reported.Load() {
		// The keeper's last heartbeat crossed the finish; the
		// coordinator rightly says the lease is over.
		return
	}
	s.lostOnce.Do(func() {
		s.log.Warn("lease lost: stopping the command; it will not be reported", "error", err)
		close(s.lostCh)
	})
}

func (s *session) isLost() bool {
	select {
	case <-s.lostCh:
		return true
	default:
		return false
	}
}

// run drives the command. It always reports itself done to the worker.
func (s *session) run() {
	defer func() { s.w.done <- s }()
	defer close(s.quit)
	ctx := s.w.reportCtx
	w := s.w

	// At most once: execute only after the coordinator said yes.
	startCtx, cancel := context.WithTimeout(ctx, s.callTimeout())
	_, err := w.coord.Start(startCtx, s.cmd.ID, s.cmd.Attempt)
	cancel()
	if err != nil {
		reason := "error"
		level := slog.LevelWarn
		switch {
		case client.HasCode(err, shared.CodeLeaseLost):
			reason, level = shared.CodeLeaseLost, slog.LevelInfo
		case client.HasCode(err, shared.CodeCancelled):
			reason, level = shared.CodeCancelled, slog.LevelInfo
		case client.IsRejected(err):
			reason = "rejected"
		}
		w.metrics.StartRefused.WithLabelValues(reason).Inc()
		s.log.Log(context.Background(), level, "start not confirmed; command dropped without running", "error", err)
		return
	}
	s.renewed()
	defer w.ctl.register(s)()
	defer s.armTimeout()()
	w.metrics.CommandsRunning.Inc()
	defer w.metrics.CommandsRunning.Dec()

	s.out = newOutput(w.cfg.MaxBufferBytes, int64(w.cfg.ChunkBytes), func(stream, n int) {
		w.metrics.OutputBytes.WithLabelValues(streamNames[stream]).Add(float64(n))
	})
	go s.keep()

	fin, result := s.execute(ctx)
	if s.isLost() {
		w.metrics.CommandsExecuted.WithLabelValues(metrics.ResultLeaseLost).Inc()
		return
	}
	if !s.finish(ctx, fin) {
		result = metrics.ResultLeaseLost
	}
	w.metrics.CommandsExecuted.WithLabelValues(result).Inc()
}

// execute runs the program while a sender streams its output, and returns
// the finish request (without chunks and lengths) and the metrics result.
func (s *session) execute(ctx context.Context) (shared.FinishRequest, string) {
	w := s.w
	fin := shared.FinishRequest{Attempt: s.cmd.Attempt}
	if reason, result := s.stopped(); reason != "" {
		// Stopped between start and exec (shutdown, cancel): never ran.
		s.stoppedFinish(&fin, reason, runc.Result{}, errNotExecuted)
		return fin, result
	}
	s.log.Info("executing command", "program", s.cmd.Program, "args", len(s.cmd.Args))
	began := time.Now()
	prepCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	proc, err := w.runner.Exec(prepCtx, runc.ExecConfig{
		ContainerID: s.cmd.ContainerID,
		Program:     s.cmd.Program,
		Args:        s.cmd.Args,
		Stdout:      s.out.writer(stdout),
		Stderr:      s.out.writer(stderr),
	})
	cancel()
	if err != nil {
		fin.Error = err.Error()
		s.log.Info("command could not be started", "error", err)
		var ee *runc.ExecError
		if errors.As(err, &ee) {
			return fin, metrics.ResultExecError
		}
		return fin, metrics.ResultUnknown
	}

	sendDone := make(chan struct{})
	senderCtx, stopSender := context.WithCancel(ctx)
	go func() {
		defer close(sendDone)
		s.stream(senderCtx)
	}()

	type waited struct {
		res runc.Result
		err error
	}
	waitCh := make(chan waited, 1)
	go func() {
		res, err := proc.Wait()
		waitCh <- waited{res, err}
	}()

	var wr waited
	stopCh, lostCh, ctxDone := s.stopCh, s.lostCh, ctx.Done()
wait:
	for {
		select {
		case wr = <-waitCh:
			break wait
		case <-stopCh:
			stopCh = nil
			go s.terminate(proc)
		case <-lostCh:
			lostCh = nil
			// Not ours any more: drop the output so the program is
			// never blocked on it, and end the program.
			s.out.abandon()
			go proc.Stop(w.cfg.KillAfter)
		case <-ctxDone:
			// The shutdown's report deadline passed: nothing more will
			// be sent, so a full buffer must not keep the stopped
			// program (or runc) blocked on its pipe.
			ctxDone = nil
			s.out.abandon()
			go proc.Stop(w.cfg.KillAfter)
		}
	}
	stopSender()
	<-sendDone
	w.metrics.ExecDuration.Observe(time.Since(began).Seconds())

	var ee *runc.ExecError
	switch reason, result := s.stopped(); {
	case reason != "":
		s.stoppedFinish(&fin, reason, wr.res, wr.err)
		return fin, result
	case errors.As(wr.err, &ee):
		fin.Error = wr.err.Error()
		s.log.Info("command could not be started", "error", wr.err)
		return fin, metrics.ResultExecError
	case wr.err != nil:
		fin.Error = wr.err.Error()
		s.log.Warn("command outcome unknown", "error", wr.err)
		return fin, metrics.ResultUnknown
	default:
		code := wr.res.ExitCode
		fin.ExitCode = &code
		if code == 0 {
			return fin, metrics.ResultSucceeded
		}
		return fin, metrics.ResultFailed
	}
}

// stream sends buffered output at least every flush interval while there is
// any, at once when a full chunk is waiting, back to back while there is a
// backlog, until ctx is done. The lease itself is kept alive by keep, so a
// slow upload never starves it.
func (s *session) stream(ctx context.Context) {
	flush := min(s.w.cfg.FlushInterval, s.hb)
	t := time.NewTicker(flush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.lostCh:
			return
		case <-t.C:
		case <-s.out.ready:
		}
		for ctx.Err() == nil && !s.isLost() && s.out.pendingBytes() > 0 {
			chunks, _ := s.out.pending(s.w.cfg.ChunkBytes)
			before := s.out.ackedBytes()
			if !s.heartbeat(ctx, chunks, false) || s.out.ackedBytes() == before {
				break // failed, or took nothing: try again next tick
			}
		}
	}
}

// keep sends an empty heartbeat whenever no heartbeat was accepted for an
// interval, so the lease is renewed on its own schedule while the command is
// silent or while a large chunk is on its way.
func (s *session) keep() {
	ctx := s.w.reportCtx
	for {
		wait := time.Until(time.Unix(0, s.lastRenew.Load()).Add(s.hb))
		if wait <= 0 {
			if s.heartbeat(ctx, nil, true) {
				continue
			}
			// Failed (the client already retried): try again soon, but
			// do not hammer a coordinator that is down.
			wait = min(s.hb, time.Second) + rand.N(500*time.Millisecond)
		}
		t := time.NewTimer(wait)
		select {
		case <-s.quit:
			t.Stop()
			return
		case <-s.lostCh:
			t.Stop()
			return
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (s *session) renewed() { s.lastRenew.Store(time.Now().UnixNano()) }

// callTimeout bounds one heartbeat/finish call, retries included, so a
// stuck request is abandoned and repeated well within the lease.
func (s *session) callTimeout() time.Duration { return 2*s.hb + 20*time.Second }

// heartbeat sends chunks (possibly none) and applies the answer. It reports
// whether the coordinator took the request. A keeper heartbeat refused while
// the finish is on its way is not taken as a lost lease: it may simply have
// arrived after the finish, and the finish's own answer decides.
func (s *session) heartbeat(ctx context.Context, chunks []shared.Chunk, keeper bool) bool {
	callCtx, cancel := context.WithTimeout(ctx, s.callTimeout())
	defer cancel()
	resp, err := s.w.coord.Heartbeat(callCtx, s.cmd.ID, shared.HeartbeatRequest{Attempt: s.cmd.Attempt, Chunks: chunks})
	if err == nil {
		s.renewed()
		if n := s.failures.Swap(0); n > 0 {
			s.log.Info("coordinator reachable again", "failed_calls", n)
		}
		if err := s.out.ack(resp.Offsets); err != nil {
			s.log.Error("inconsistent acknowledgement", "error", err)
		}
		if resp.Cancel {
			s.stopFor(shared.EndCancelled, time.Duration(resp.CancelGraceSeconds)*time.Second, "cancelled")
		}
		return true
	}
	if keeper && s.finishing.Load() && client.IsRejected(err) {
		return false
	}
	return s.handleError("heartbeat", err)
}

// handleError applies a refused or failed heartbeat/finish. It returns true
// when the request should be repeated at once (output_gap, offsets applied).
func (s *session) handleError(op string, err error) bool {
	if off, ok := client.GapOffsets(err); ok {
		if rerr := s.out.resendFrom(off); rerr != nil {
			s.log.Error("cannot resend output the coordinator no longer has", "error", rerr,
				"stdout_offset", off.Stdout, "stderr_offset", off.Stderr)
			s.lose(rerr)
			return false
		}
		s.log.Info("coordinator reported an output gap; resending", "op", op, "stdout_offset", off.Stdout, "stderr_offset", off.Stderr)
		return true
	}
	if client.IsRejected(err) {
		// lease_lost (reaped or taken over), forbidden, not found: no
		// later request about this lease can succeed.
		s.lose(err)
		return false
	}
	if s.w.reportCtx.Err() == nil && !s.reported.Load() {
		s.w.metrics.CoordinatorErrors.WithLabelValues(op).Inc()
		// The first failure of a streak, then every 30th: an outage
		// must not flood the log with one line per second per command.
		if n := s.failures.Add(1); n == 1 || n%30 == 0 {
			s.log.Warn(op+" failed; output stays buffered and is resent", "error", err, "failed_calls", n)
		}
	}
	return false
}

// finish sends what is left and the end of the command, repeating until the
// coordinator took it, refused it, or the shutdown deadline passed. A backlog
// larger than a chunk goes out in heartbeats first, so the finish carries at
// most one chunk's worth. It reports false when the lease was lost.
func (s *session) finish(ctx context.Context, fin shared.FinishRequest) bool {
	s.finishing.Store(true)
	pause := 500 * time.Millisecond
	for ctx.Err() == nil && !s.isLost() {
		chunks, rest := s.out.pending(s.w.cfg.ChunkBytes)
		before := s.out.ackedBytes()
		// Repeat at once only while requests make progress: a
		// coordinator that keeps answering without taking anything gets
		// the backoff below, not a busy loop.
		if rest > 0 {
			if s.heartbeat(ctx, chunks, false) && s.out.ackedBytes() > before {
				pause = 500 * time.Millisecond
				continue
			}
		} else {
			fin.Chunks = chunks
			fin.StdoutLength, fin.StderrLength = s.out.totals()
			fin.Error = finishError(fin.Error)
			callCtx, cancel := context.WithTimeout(ctx, s.callTimeout())
			resp, err := s.w.coord.Finish(callCtx, s.cmd.ID, fin)
			cancel()
			if err == nil {
				s.reported.Store(true)
				attrs := []any{"status", resp.Status, "stdout_bytes", fin.StdoutLength, "stderr_bytes", fin.StderrLength}
				if fin.ExitCode != nil {
					attrs = append(attrs, "exit_code", *fin.ExitCode)
				}
				if fin.Error != "" {
					attrs = append(attrs, "error", fin.Error)
				}
				s.log.Info("command reported", attrs...)
				return true
			}
			if s.handleError("finish", err) && s.out.ackedBytes() > before {
				continue
			}
		}
		if s.isLost() {
			break
		}
		t := time.NewTimer(pause + rand.N(pause/2))
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		pause = min(2*pause, 10*time.Second)
	}
	if !s.isLost() {
		s.log.Error("giving up reporting the command at shutdown; the coordinator will mark it lost")
	}
	return false
}

// finishError makes an error message safe to send: valid UTF-8, no NUL
// (PostgreSQL text), at most shared.MaxFinishErrorBytes.
func finishError(msg string) string {
	msg = strings.ToValidUTF8(strings.ReplaceAll(msg, "\x00", ""), "\uFFFD")
	if len(msg) <= shared.MaxFinishErrorBytes {
		return msg
	}
	cut := shared.MaxFinishErrorBytes - len("…")
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "…"
}
