package main

import (
	"context"
	"crypto/tls"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/agent/client"
	"github.com/execq/execq/shared"
)

// recorder keeps the times of each command's life as the simulator saw them.
type recorder struct {
	mu        sync.Mutex
	submitted map[string]time.Time // submit request sent
	leased    map[string]time.Time // lease answer received
	finished  map[string]time.Time // finish answered
	done      atomic.Int64
	errs      sync.Map // error text → *atomic.Int64
	// notify, if set, is called with each finished command's ID.
	notify func(id string)
}

func newRecorder() *recorder {
	return &recorder{submitted: map[string]time.Time{}, leased: map[string]time.Time{}, finished: map[string]time.Time{}}
}

// reset forgets every command seen, for a second measured pass; the
// errors are kept (printed once, for the whole run).
func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.submitted)
	clear(r.leased)
	clear(r.finished)
	r.done.Store(0)
}

func (r *recorder) mark(m map[string]time.Time, id string, t time.Time) {
	r.mu.Lock()
	m[id] = t
	r.mu.Unlock()
}

func (r *recorder) fail(what string, err error) {
	// Grouped by kind: the IDs in messages would make each one unique.
	key := what + ": " + uuidPattern.ReplaceAllString(err.Error(), "<id>")
	if len(key) > 160 {
		key = key[:160]
	}
	v, _ := r.errs.LoadOrStore(key, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// latencies returns, for the commands submitted in [from, to), the dispatch
// (submit → leased) and end-to-end (submit → finished) durations.
func (r *recorder) latencies(from, to time.Time) (dispatch, e2e []time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, s := range r.submitted {
		if s.Before(from) || !s.Before(to) {
			continue
		}
		if l, ok := r.leased[id]; ok {
			dispatch = append(dispatch, l.Sub(s))
		}
		if f, ok := r.finished[id]; ok {
			e2e = append(e2e, f.Sub(s))
		}
	}
	return dispatch, e2e
}

// lastFinish is when the last command finished.
func (r *recorder) lastFinish() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var last time.Time
	for _, f := range r.finished {
		if f.After(last) {
			last = f
		}
	}
	return last
}

// finishedBetween counts the commands finished in [from, to).
func (r *recorder) finishedBetween(from, to time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, f := range r.finished {
		if !f.Before(from) && f.Before(to) {
			n++
		}
	}
	return n
}

// simAgent is one host's agent: the real protocol client, no runc.
type simAgent struct {
	// c is the agent's own client: starts and finishes of its commands go
	// together, as the agent sends them.
	c          *client.Batching
	containers []string
	slots      int
	exec       time.Duration
	heartbeat  bool
	rec        *recorder
	waitMillis int
}

var uuidPattern = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

var output = []byte("fleetsim: one line of output\n")

func newSimAgent(base, token string, containers int, rec *recorder, tlsConfig *tls.Config) (*simAgent, error) {
	// The agent's own transport, as the agent builds it from its flags.
	c, err := client.New(client.Config{BaseURL: base, Token: token, RetryMax: 8, UserAgent: "execq-fleetsim", TLS: tlsConfig})
	if err != nil {
		return nil, err
	}
	a := &simAgent{c: client.NewBatching(c), slots: containers, rec: rec, heartbeat: true, waitMillis: int(client.DefaultMaxLeaseWait.Milliseconds())}
	for range containers {
		a.containers = append(a.containers, uuid.NewString())
	}
	return a, nil
}

func (a *simAgent) reportInventory(ctx context.Context) error {
	var cs []shared.ContainerReport
	for i, id := range a.containers {
		cs = append(cs, shared.ContainerReport{ID: id, Name: "c" + string(rune('0'+i%10)), State: "running"})
	}
	_, err := a.c.ReportInventory(ctx, cs)
	return err
}

// run long-polls until ctx ends, running up to slots commands at once, as
// the real agent does: it leases only as many as it has room for.
func (a *simAgent) run(ctx context.Context) {
	free := make(chan struct{}, a.slots)
	for range a.slots {
		free <- struct{}{}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		select {
		case <-free:
		case <-ctx.Done():
			return
		}
		n := 1
	more:
		for n < a.slots {
			select {
			case <-free:
				n++
			default:
				break more
			}
		}
		resp, err := a.c.Lease(ctx, shared.LeaseRequest{Max: n, WaitMillis: a.waitMillis})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.rec.fail("lease", err)
			time.Sleep(100 * time.Millisecond)
		}
		now := time.Now()
		var cmds []shared.LeasedCommand
		if resp != nil {
			cmds = resp.Commands
		}
		for _, cmd := range cmds {
			a.rec.mark(a.rec.leased, cmd.ID, now)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { free <- struct{}{} }()
				a.execute(ctx, cmd)
			}()
		}
		for range n - len(cmds) {
			free <- struct{}{}
		}
	}
}

// execute is the agent's part of one command: start, a heartbeat with a
// line of output, the "execution", finish.
func (a *simAgent) execute(ctx context.Context, cmd shared.LeasedCommand) {
	if _, err := a.c.Start(ctx, cmd.ID, cmd.Attempt); err != nil {
		a.rec.fail("start", err)
		return
	}
	var chunks []shared.Chunk
	if a.heartbeat {
		if _, err := a.c.Heartbeat(ctx, cmd.ID, shared.HeartbeatRequest{Attempt: cmd.Attempt,
			Chunks: []shared.Chunk{{Stream: shared.StreamStdout, Data: output}}}); err != nil {
			a.rec.fail("heartbeat", err)
			return
		}
	} else {
		chunks = []shared.Chunk{{Stream: shared.StreamStdout, Data: output}}
	}
	if a.exec > 0 {
		select {
		case <-time.After(a.exec):
		case <-ctx.Done():
		}
	}
	exit := 0
	_, err := a.c.Finish(context.WithoutCancel(ctx), cmd.ID, shared.FinishRequest{Attempt: cmd.Attempt, Chunks: chunks,
		StdoutLength: int64(len(output)), ExitCode: &exit})
	if err != nil {
		a.rec.fail("finish", err)
		return
	}
	a.rec.mark(a.rec.finished, cmd.ID, time.Now())
	a.rec.done.Add(1)
	if a.rec.notify != nil {
		a.rec.notify(cmd.ID)
	}
}
