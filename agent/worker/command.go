package worker

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http/httptrace"
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
	ttl time.Duration // lease TTL the coordinator announced
	// sendLimit is the bytes per stream sent as they come: the head the
	// coordinator keeps (0: all). tail is what is kept of the rest and
	// sent when the program has ended (see output).
	sendLimit, tail int64
	out             *output

	// lastRenew is when the last accepted heartbeat or start was sent, in
	// unix nanos. The coordinator renewed the lease after it received the
	// request, so the lease runs at least until lastRenew + ttl.
	lastRenew atomic.Int64
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
	quit       chan struct{}   // closed when the session ends: stop the keeper
	cleaned    <-chan struct{} // the exec's scratch directory is gone (nil: no exec)
}

func (w *Worker) newSession(cmd shared.LeasedCommand, lease *shared.LeaseResponse, log *slog.Logger) *session {
	hb := time.Duration(lease.HeartbeatMillis) * time.Millisecond
	if hb <= 0 {
		hb = w.cfg.DefaultHeartbeat
	}
	// A coordinator asking for more than one heartbeat per 100ms is
	// misconfigured; do not let it turn the agent into a load generator.
	hb = max(hb, 100*time.Millisecond)
	// Without an announced TTL assume the coordinator's usual three
	// heartbeats; a TTL shorter than the interval leaves nothing to bound
	// a call by, so it is raised to it.
	ttl := time.Duration(lease.LeaseTTLMillis) * time.Millisecond
	if ttl <= 0 {
		ttl = 3 * hb
	}
	ttl = max(ttl, hb)
	var sendLimit, tail int64
	switch {
	case lease.OutputCapBytes > 0 && lease.OutputTailBytes > 0 && lease.OutputTailBytes < lease.OutputCapBytes:
		sendLimit, tail = lease.OutputCapBytes-lease.OutputTailBytes, lease.OutputTailBytes
	case lease.OutputCapBytes > 0:
		// The coordinator keeps only the first cap bytes: one more marks
		// the stream truncated.
		sendLimit = lease.OutputCapBytes + 1
	}
	return &session{
		w:         w,
		cmd:       cmd,
		log:       log,
		hb:        hb,
		ttl:       ttl,
		sendLimit: sendLimit,
		tail:      tail,
		stopCh:    make(chan struct{}),
		lostCh:    make(chan struct{}),
		quit:      make(chan struct{}),
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

// fence stops the program of a lease the agent could not renew for its TTL:
// the coordinator counts the command lost and records it failed, so it must
// not go on changing the container unseen — whether or not the coordinator
// can be told. Like a lost lease, it is not reported.
func (s *session) fence() {
	s.lostOnce.Do(func() {
		s.log.Error("lease not renewed for its TTL: the coordinator counts the command lost; stopping it without waiting to hear so",
			"ttl", s.ttl.String(), "last_renewed", s.renewedAt().UTC())
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
	// The exec's scratch directory is removed after the finish is sent
	// (runc.Process.Wait); the session ends once it is gone, so a stopping
	// agent leaves none behind.
	defer func() {
		if s.cleaned != nil {
			<-s.cleaned
		}
	}()
	defer close(s.quit)
	ctx := s.w.reportCtx
	w := s.w

	s.out = newOutput(w.cfg.MaxBufferBytes, int64(w.cfg.ChunkBytes), s.sendLimit, func(stream, n int) {
		w.metrics.OutputBytes.WithLabelValues(streamNames[stream]).Add(float64(n))
	})
	s.out.tail = s.tail
	// The exec is prepared (the container's process spec read, the exec's
	// own written) while the start is on its way: a millisecond or two of
	// disk and CPU work the program would otherwise wait for after the yes.
	// It begins once the start request is written, so on a busy host it
	// does not delay the request itself — or, should the request carry no
	// trace of ours (batched behind another command's), when the answer
	// comes. Nothing runs before the yes; a refused start discards it.
	wrote := make(chan struct{})
	var wroteOnce sync.Once
	markWrote := func() { wroteOnce.Do(func() { close(wrote) }) }
	prep := make(chan prepared, 1)
	go func() {
		<-wrote
		prepCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		pr, err := w.runner.Prepare(prepCtx, runc.ExecConfig{
			ContainerID: s.cmd.ContainerID,
			Program:     s.cmd.Program,
			Args:        s.cmd.Args,
			Stdout:      s.out.writer(stdout),
			Stderr:      s.out.writer(stderr),
		})
		prep <- prepared{pr, err}
	}()

	// At most once: execute only after the coordinator said yes.
	sent := time.Now()
	startCtx, cancel := context.WithTimeout(ctx, s.callTimeout())
	startCtx = httptrace.WithClientTrace(startCtx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) { markWrote() },
	})
	_, err := w.coord.Start(client.WithLogger(startCtx, s.log), s.cmd.ID, s.cmd.Attempt)
	cancel()
	markWrote()
	if err != nil {
		if p := <-prep; p.pr != nil {
			p.pr.Discard()
		}
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
	s.renewed(sent)
	defer w.ctl.register(s)()
	defer s.armTimeout()()
	w.metrics.CommandsRunning.Inc()
	defer w.metrics.CommandsRunning.Dec()

	go s.keep()

	fin, result := s.execute(ctx, <-prep)
	if s.isLost() {
		w.metrics.CommandsExecuted.WithLabelValues(metrics.ResultLeaseLost).Inc()
		return
	}
	if !s.finish(ctx, fin) {
		result = metrics.ResultLeaseLost
	}
	w.metrics.CommandsExecuted.WithLabelValues(result).Inc()
}

// prepared is the exec made ready while the start was on its way.
type prepared struct {
	pr  *runc.Prepared
	err error
}

// execute runs the prepared program while a sender streams its output, and
// returns the finish request (without chunks and lengths) and the metrics
// result.
func (s *session) execute(ctx context.Context, prep prepared) (shared.FinishRequest, string) {
	w := s.w
	fin := shared.FinishRequest{Attempt: s.cmd.Attempt}
	if reason, result := s.stopped(); reason != "" {
		// Stopped between start and exec (shutdown, cancel): never ran.
		if prep.pr != nil {
			prep.pr.Discard()
		}
		s.stoppedFinish(&fin, reason, runc.Result{}, errNotExecuted)
		return fin, result
	}
	s.log.Info("executing command", "program", s.cmd.Program, "args", len(s.cmd.Args))
	began := time.Now()
	proc, err := prep.pr, prep.err
	var p *runc.Process
	if err == nil {
		p, err = proc.Start()
	}
	if err != nil {
		fin.Error = err.Error()
		s.log.Info("command could not be started", "error", err)
		var ee *runc.ExecError
		if errors.As(err, &ee) {
			return fin, metrics.ResultExecError
		}
		return fin, metrics.ResultUnknown
	}

	s.cleaned = p.Cleaned()
	sendDone, stopSender := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sendDone)
		s.stream(ctx, stopSender)
	}()

	type waited struct {
		res runc.Result
		err error
	}
	waitCh := make(chan waited, 1)
	go func() {
		res, err := p.Wait()
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
			go s.terminate(p)
		case <-lostCh:
			lostCh = nil
			// Not ours any more: drop the output so the program is
			// never blocked on it, and end the program.
			s.out.abandon()
			go p.Stop(w.cfg.KillAfter)
		case <-ctxDone:
			// The shutdown's report deadline passed: nothing more will
			// be sent, so a full buffer must not keep the stopped
			// program (or runc) blocked on its pipe.
			ctxDone = nil
			s.out.abandon()
			go p.Stop(w.cfg.KillAfter)
		}
	}
	// The sender ends after the request it has in flight, if any: that
	// request carries output the finish needs, and cutting it short would
	// only make it fail and be sent again.
	close(stopSender)
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
// backlog, until stop is closed (the program ended: finish sends the rest)
// or ctx is done. The lease itself is kept alive by keep, so a slow upload
// never starves it.
func (s *session) stream(ctx context.Context, stop <-chan struct{}) {
	// A lost lease cuts the request in flight short: its output is
	// abandoned, and the session should not wait for it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.lostCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	flush := min(s.w.cfg.FlushInterval, s.hb)
	t := time.NewTicker(flush)
	defer t.Stop()
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.lostCh:
			return
		case <-stop:
			return
		case <-t.C:
		case <-s.out.ready:
		}
		for ctx.Err() == nil && !s.isLost() && !stopped() && s.out.pendingBytes() > 0 {
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
// silent or while a large chunk is on its way. A call that fails or hangs is
// abandoned in time to try again before the lease runs out. Should the lease
// run out all the same while the program runs, it fences the command.
func (s *session) keep() {
	ctx := s.w.reportCtx
	for {
		// Once the program has ended there is nothing to stop: the
		// finish goes on and its answer decides.
		if time.Since(s.renewedAt()) >= s.ttl && !s.finishing.Load() {
			s.fence()
			return
		}
		wait := time.Until(s.renewedAt().Add(s.hb))
		if wait <= 0 {
			if s.heartbeat(ctx, nil, true) {
				continue
			}
			// Failed (the client already retried): try again soon, but
			// do not hammer a coordinator that is down.
			pause := min(s.hb, time.Second, s.ttl/10)
			wait = pause + rand.N(pause/2+1)
		}
		// Wake at the expiry too, to fence on time.
		wait = max(min(wait, time.Until(s.renewedAt().Add(s.ttl))), time.Millisecond)
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

// renewed records that a request sent at sent renewed the lease. Answers can
// arrive out of order; the latest send wins.
func (s *session) renewed(sent time.Time) {
	for {
		old := s.lastRenew.Load()
		if sent.UnixNano() <= old || s.lastRenew.CompareAndSwap(old, sent.UnixNano()) {
			return
		}
	}
}

func (s *session) renewedAt() time.Time { return time.Unix(0, s.lastRenew.Load()) }

// callTimeout bounds one start or keeper heartbeat, the client's own retries
// included: a third of the lease TTL, so a call the network swallowed is
// abandoned and repeated while the lease still holds. (The coordinator's
// default heartbeat interval is a third of its TTL too.)
func (s *session) callTimeout() time.Duration { return max(s.ttl/3, 100*time.Millisecond) }

// transferTimeout bounds a heartbeat carrying output and a finish. Their time
// on the coordinator grows with the bytes they carry (a chunk, written and
// committed) and with the database's load, so a third of the TTL could cut
// every attempt short. The lease does not wait on them: the keeper
// renews it meanwhile with its own short calls.
func (s *session) transferTimeout() time.Duration {
	return max(2*s.hb+20*time.Second, s.callTimeout())
}

// callContext bounds a call that renews the lease: callTimeout, and never
// past the moment the lease runs out, when no answer can help any more.
func (s *session) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	now := time.Now()
	deadline := now.Add(s.callTimeout())
	// A little past the expiry, so an answer already on its way (the
	// coordinator's clock decides) is not thrown away. Once the lease has
	// run out by this clock a call still gets its full time: only the
	// coordinator's answer tells whether the lease is really gone.
	if expiry := s.renewedAt().Add(s.ttl + s.ttl/10); s.lastRenew.Load() != 0 && expiry.After(now) && expiry.Before(deadline) {
		deadline = expiry
	}
	return context.WithDeadline(ctx, deadline)
}

// heartbeat sends chunks (possibly none) and applies the answer. It reports
// whether the coordinator took the request. A keeper heartbeat refused while
// the finish is on its way is not taken as a lost lease: it may simply have
// arrived after the finish, and the finish's own answer decides.
func (s *session) heartbeat(ctx context.Context, chunks []shared.Chunk, keeper bool) bool {
	sent := time.Now()
	callCtx, cancel := context.WithTimeout(ctx, s.transferTimeout())
	if keeper {
		callCtx, cancel = s.callContext(ctx)
	}
	defer cancel()
	resp, err := s.w.coord.Heartbeat(client.WithLogger(callCtx, s.log), s.cmd.ID, shared.HeartbeatRequest{Attempt: s.cmd.Attempt, Chunks: chunks})
	if err == nil {
		s.renewed(sent)
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
	if s.isLost() {
		return false // nothing about this lease matters any more
	}
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
	// The program has ended: the tail kept past the cap goes out now.
	s.out.seal()
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
			callCtx, cancel := context.WithTimeout(ctx, s.transferTimeout())
			resp, err := s.w.coord.Finish(client.WithLogger(callCtx, s.log), s.cmd.ID, fin)
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
				if n := s.out.dropped(); n > 0 {
					attrs = append(attrs, "bytes_past_output_cap", n)
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
