package worker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"

	"github.com/execq/execq/agent/client"
	"github.com/execq/execq/agent/metrics"
	"github.com/execq/execq/agent/runc"
	"github.com/execq/execq/shared"
)

// Controller is the optional control long-poll of a Coordinator
// (*client.Client has it). Without it cancels arrive with heartbeats only.
type Controller interface {
	Control(ctx context.Context, req shared.ControlRequest) (*shared.ControlResponse, error)
}

// controls tracks the running sessions by command ID, so a cancel order
// from the control long-poll finds its session.
type controls struct {
	mu   sync.Mutex
	live map[string]*session
	// known are the IDs whose cancel is being acted on: the coordinator
	// does not answer them again.
	known map[string]bool
	// early holds orders for commands not registered yet: the order can
	// cross the start's answer. Applied at register.
	early map[string]shared.CancelOrder
	wake  chan struct{} // a session registered: the poll may start
}

func (c *controls) init() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live == nil {
		c.live, c.known, c.early = map[string]*session{}, map[string]bool{}, map[string]shared.CancelOrder{}
		c.wake = make(chan struct{}, 1)
	}
}

// register makes s reachable by cancel orders until the returned func runs.
func (c *controls) register(s *session) func() {
	c.init()
	c.mu.Lock()
	c.live[s.cmd.ID] = s
	o, early := c.early[s.cmd.ID]
	delete(c.early, s.cmd.ID)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	if early && o.Attempt == s.cmd.Attempt {
		c.apply(s, o)
	}
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.live, s.cmd.ID)
		delete(c.known, s.cmd.ID)
	}
}

// apply stops s for a cancel order.
func (c *controls) apply(s *session, o shared.CancelOrder) {
	c.mu.Lock()
	c.known[o.CommandID] = true
	c.mu.Unlock()
	s.stopFor(shared.EndCancelled, time.Duration(o.GraceSeconds)*time.Second, "cancelled")
}

// deliver applies orders to their sessions; those for commands not
// registered yet are kept for register. It reports how many found a
// session.
func (c *controls) deliver(orders []shared.CancelOrder) int {
	found := 0
	for _, o := range orders {
		c.mu.Lock()
		s := c.live[o.CommandID]
		if s == nil {
			if len(c.early) < shared.MaxControlKnown {
				c.early[o.CommandID] = o
			}
			c.known[o.CommandID] = true // do not spin on it; the heartbeat is the backstop
		}
		c.mu.Unlock()
		if s != nil && s.cmd.Attempt == o.Attempt {
			c.apply(s, o)
			found++
		}
	}
	return found
}

func (c *controls) snapshot() (live int, known []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.known {
		if len(known) == shared.MaxControlKnown {
			break
		}
		known = append(known, id)
	}
	return len(c.live), known
}

// forgetEarly drops orders that found no session within a poll: their
// command is not (or no longer) run here.
func (c *controls) forgetEarly() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.early {
		if c.live[id] == nil {
			delete(c.known, id)
		}
	}
	clear(c.early)
}

// controlLoop long-polls the coordinator for cancel orders while commands
// run, so a cancel reaches its program within a round trip rather than a
// heartbeat interval. It ends with the worker's report context.
func (w *Worker) controlLoop() {
	ctl, ok := w.coord.(Controller)
	if !ok {
		return
	}
	w.ctl.init()
	ctx := w.reportCtx
	failures := 0
	for ctx.Err() == nil {
		live, known := w.ctl.snapshot()
		if live == 0 {
			w.ctl.forgetEarly()
			select {
			case <-w.ctl.wake:
			case <-ctx.Done():
				return
			}
			continue
		}
		began := time.Now()
		resp, err := ctl.Control(ctx, shared.ControlRequest{WaitMillis: int(w.cfg.LeaseWait / time.Millisecond), Known: known})
		var pause time.Duration
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			if client.IsRejected(err) {
				// A coordinator without the route (older), or one that
				// refuses this node: asking again will not help.
				w.log.Info("no control poll; cancels arrive with heartbeat answers", "error", err)
				return
			}
			failures++
			if failures == 1 || failures%30 == 0 {
				w.log.Warn("control poll failed; cancels arrive with heartbeats meanwhile", "error", err, "failed_calls", failures)
			}
			pause = min(time.Second<<min(failures-1, 4), 15*time.Second)
		default:
			failures = 0
			w.ctl.deliver(resp.Cancels)
			if len(resp.Cancels) == 0 && time.Since(began) < min(time.Second, w.cfg.LeaseWait/2) {
				pause = 500 * time.Millisecond // a coordinator that does not park must not make us spin
			}
		}
		if pause > 0 {
			t := time.NewTimer(pause/2 + rand.N(pause/2+1))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
	}
}

// stopControl is what a session knows about why execq stops it.
type stopControl struct {
	kind  shared.EndReason // cancelled, timed_out; "" for a stop at shutdown
	grace time.Duration
}

// stopFor asks for the program to be stopped on the coordinator's behalf
// (a cancel, a timeout): SIGTERM, SIGKILL after grace. The first stop wins.
func (s *session) stopFor(kind shared.EndReason, grace time.Duration, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopReason != "" {
		return
	}
	s.ctl = stopControl{kind: kind, grace: grace}
	s.stopReason, s.stopResult = reason, metrics.ResultStopped
	close(s.stopCh)
	s.log.Info("stopping the command", "why", kind, "grace", grace.String())
}

// killAfter is the grace between SIGTERM and SIGKILL for this session's stop.
func (s *session) killAfter() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctl.kind != "" {
		return s.ctl.grace
	}
	return s.w.cfg.KillAfter
}

// terminate ends the program for a stop: SIGTERM to the real process
// (through runc's pid file), SIGKILL after the grace, never by killing
// runc exec. Only if runc exec still has not exited KillAfter after that —
// a descendant that left the group holds the output open — does Stop kill
// runc itself. A cancel's grace may be 0 or far from KillAfter, so the
// signals are sent here and Stop is only the last resort.
func (s *session) terminate(proc *runc.Process) {
	s.mu.Lock()
	kind := s.ctl.kind
	s.mu.Unlock()
	if kind == "" {
		proc.Stop(s.w.cfg.KillAfter) // a shutdown stop: KillAfter is the grace
		return
	}
	select {
	case <-proc.Started():
	case <-s.quit:
		return
	}
	if proc.Pid() != 0 {
		_ = proc.Signal(syscall.SIGTERM)
		t := time.NewTimer(s.killAfter())
		select {
		case <-t.C:
			_ = proc.Signal(syscall.SIGKILL) // a no-op once runc exec has exited
		case <-s.quit:
			t.Stop()
			return
		}
	}
	proc.Stop(s.w.cfg.KillAfter)
}

// armTimeout stops the program once it has run for its timeout; call the
// returned func when it ended.
func (s *session) armTimeout() func() {
	if s.cmd.TimeoutSeconds <= 0 {
		return func() {}
	}
	grace := time.Duration(s.cmd.GraceSeconds) * time.Second
	t := time.AfterFunc(time.Duration(s.cmd.TimeoutSeconds)*time.Second, func() {
		s.stopFor(shared.EndTimedOut, grace, fmt.Sprintf("timed out after %d s", s.cmd.TimeoutSeconds))
	})
	return func() { t.Stop() }
}

// errNotExecuted marks a stop that came between start and exec.
var errNotExecuted = &runc.ExecError{Reason: "stopped before it was executed"}

// stoppedFinish fills the finish of a stopped command from the program's
// outcome (res, err as runc's Wait gave them). A cancel or timeout reports
// the exit status and the signal that ended the program, and the
// coordinator writes the execq line; a program that never ran reports
// neither (a cancel of it is then a plain "cancelled"); an unknown outcome
// says so in Error. A shutdown stop reports its reason.
func (s *session) stoppedFinish(fin *shared.FinishRequest, reason string, res runc.Result, err error) {
	s.mu.Lock()
	kind := s.ctl.kind
	s.mu.Unlock()
	if kind == "" {
		fin.Error, fin.EndReason = reason, shared.EndAgentLost
		return
	}
	fin.EndReason = kind
	var ee *runc.ExecError
	switch {
	case errors.As(err, &ee):
		return // never ran
	case err != nil:
		fin.Error = err.Error()
		return
	}
	code := res.ExitCode
	fin.ExitCode = &code
	switch code {
	case 128 + 9:
		fin.Signal = "SIGKILL"
	case 128 + 15:
		fin.Signal = "SIGTERM"
	}
}
