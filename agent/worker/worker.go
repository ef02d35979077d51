package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/execq/execq/agent/client"
	"github.com/execq/execq/agent/metrics"
	"github.com/execq/execq/agent/runc"
	"github.com/execq/execq/shared"
)

// Defaults for zero Config fields.
const (
	DefaultConcurrency    = 4
	DefaultLeaseWait      = 25 * time.Second
	DefaultGrace          = 30 * time.Second
	DefaultKillAfter      = 5 * time.Second
	DefaultReportTimeout  = 15 * time.Second
	DefaultMaxBufferBytes = 64 << 20
	DefaultChunkBytes     = 1 << 20
	DefaultFlushInterval  = 250 * time.Millisecond
	DefaultHeartbeat      = 5 * time.Second

	// MaxConcurrency is the most commands one lease request may ask for.
	MaxConcurrency = 100
)

// Config tunes a Worker. Zero fields take the defaults above.
type Config struct {
	// Concurrency is how many commands run at once (1..100).
	Concurrency int
	// LeaseWait is how long a lease request parks when nothing is queued.
	LeaseWait time.Duration
	// Grace is how long running commands may go on after Run's context is
	// done (first SIGTERM) before they are stopped.
	Grace time.Duration
	// KillAfter is the delay between SIGTERM and SIGKILL when a command is
	// stopped.
	KillAfter time.Duration
	// ReportTimeout is how long, once commands are being stopped at
	// shutdown, the worker keeps trying to report them before it gives up.
	ReportTimeout time.Duration
	// MaxBufferBytes bounds the output held per command while waiting for
	// the coordinator's acknowledgement; past it the program is blocked.
	// A command's output costs at most this plus 256 KiB and ChunkBytes.
	MaxBufferBytes int64
	// ChunkBytes bounds the output bytes in one heartbeat or finish.
	ChunkBytes int
	// FlushInterval is the longest output waits before it is sent; it is
	// lowered to the heartbeat interval if that is shorter.
	FlushInterval time.Duration
	// DefaultHeartbeat is used when a lease answer gives no interval.
	DefaultHeartbeat time.Duration
	// Alive, if set, is called from Run's loop every AliveInterval, so
	// systemd's watchdog is fed only while that loop turns: it handles
	// every lease answer, finished command and shutdown step.
	Alive         func()
	AliveInterval time.Duration
}

func (c *Config) setDefaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.LeaseWait <= 0 {
		c.LeaseWait = DefaultLeaseWait
	}
	if c.Grace <= 0 {
		c.Grace = DefaultGrace
	}
	if c.KillAfter <= 0 {
		c.KillAfter = DefaultKillAfter
	}
	if c.ReportTimeout <= 0 {
		c.ReportTimeout = DefaultReportTimeout
	}
	if c.MaxBufferBytes <= 0 {
		c.MaxBufferBytes = DefaultMaxBufferBytes
	}
	if c.ChunkBytes <= 0 {
		c.ChunkBytes = DefaultChunkBytes
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.DefaultHeartbeat <= 0 {
		c.DefaultHeartbeat = DefaultHeartbeat
	}
}

// Validate reports a configuration the worker cannot run with.
func (c Config) Validate() error {
	c.setDefaults()
	switch {
	case c.Concurrency > MaxConcurrency:
		return fmt.Errorf("concurrency %d: at most %d commands can run at once", c.Concurrency, MaxConcurrency)
	case c.ChunkBytes < 1024:
		return fmt.Errorf("chunk size %d bytes: at least 1024", c.ChunkBytes)
	case c.MaxBufferBytes < int64(c.ChunkBytes):
		return fmt.Errorf("output buffer %d bytes is smaller than the chunk size %d", c.MaxBufferBytes, c.ChunkBytes)
	}
	return nil
}

// Coordinator is the agent protocol; *client.Client implements it. Errors
// are interpreted with client.HasCode, client.GapOffsets and
// client.IsRejected.
type Coordinator interface {
	Lease(ctx context.Context, req shared.LeaseRequest) (*shared.LeaseResponse, error)
	Start(ctx context.Context, commandID string, attempt int) (*shared.StartResponse, error)
	Release(ctx context.Context, commandID string, attempt int) (*shared.ReleaseResponse, error)
	Heartbeat(ctx context.Context, commandID string, req shared.HeartbeatRequest) (*shared.HeartbeatResponse, error)
	Finish(ctx context.Context, commandID string, req shared.FinishRequest) (*shared.FinishResponse, error)
}

// Worker leases commands and runs them.
type Worker struct {
	cfg     Config
	coord   Coordinator
	runner  *runc.Runner
	log     *slog.Logger
	metrics *metrics.Metrics

	// reportCtx carries every coordinator call of a command. It is
	// cancelled only when the shutdown's report deadline passes, so a
	// drain keeps heartbeating and reporting after Run's context is done.
	reportCtx    context.Context
	cancelReport context.CancelFunc

	done      chan *session
	abort     chan struct{}
	abortOnce sync.Once
	draining  atomic.Bool
	running   sync.Once
	releases  sync.WaitGroup // release calls in flight
	ctl       controls       // running sessions, for cancel orders (control.go)
}

// New returns a worker. logger and m may be nil.
func New(cfg Config, coord Coordinator, runner *runc.Runner, logger *slog.Logger, m *metrics.Metrics) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = metrics.New(prometheus.NewRegistry())
	}
	w := &Worker{
		cfg:     cfg,
		coord:   coord,
		runner:  runner,
		log:     logger,
		metrics: m,
		done:    make(chan *session, cfg.Concurrency),
		abort:   make(chan struct{}),
	}
	w.reportCtx, w.cancelReport = context.WithCancel(context.Background())
	return w, nil
}

// Abort stops running commands now instead of at the end of the grace
// period (a second signal). It also stops leasing. Safe to call any time,
// more than once.
func (w *Worker) Abort() {
	w.abortOnce.Do(func() { close(w.abort) })
}

type pollResult struct {
	max     int
	resp    *shared.LeaseResponse
	err     error
	elapsed time.Duration
}

// Run leases and executes commands until ctx is done, then drains: it
// stops leasing and lets running commands finish and be reported. When
// Config.Grace passes (or Abort is called) it stops them and reports them
// failed with the reason. It returns nil once every command is accounted
// for, or an error if called twice.
//
// Leasing keeps at most one long-poll parked for the free slots. When a
// command finishes while it is parked, a second poll asks for the freed
// slots at once instead of cancelling the first: a cancelled poll could
// lose commands the coordinator leased in the same instant (they would only
// come back after the lease TTL).
func (w *Worker) Run(ctx context.Context) error {
	first := false
	w.running.Do(func() { first = true })
	if !first {
		return errors.New("worker: Run called twice")
	}
	defer w.cancelReport()
	w.ctl.init()
	go w.controlLoop()
	pollCtx, cancelPolls := context.WithCancel(ctx)
	defer cancelPolls()

	var (
		results    = make(chan pollResult)
		sessions   = make(map[*session]struct{})
		reserved   int  // slots asked for by polls in flight
		inflight   int  // polls in flight
		grew       bool // a slot was freed since the last poll started
		errStreak  int
		delay      time.Duration // before the next poll
		ctxDone    = ctx.Done()
		abortCh    = (<-chan struct{})(w.abort)
		graceTimer <-chan time.Time
		reportDead <-chan time.Time
		aborted    bool
		alive      <-chan time.Time
	)
	if w.cfg.Alive != nil && w.cfg.AliveInterval > 0 {
		t := time.NewTicker(w.cfg.AliveInterval)
		defer t.Stop()
		alive = t.C
	}
	startDrain := func(why string) {
		if w.draining.Swap(true) {
			return
		}
		cancelPolls()
		ctxDone = nil
		t := time.NewTimer(w.cfg.Grace)
		graceTimer = t.C
		w.log.Info("draining: no new commands; running commands may finish", "reason", why, "running", len(sessions), "grace", w.cfg.Grace.String())
	}
	stopAll := func(reason string) {
		if aborted {
			return
		}
		aborted = true
		graceTimer = nil
		w.log.Warn("stopping running commands", "running", len(sessions), "reason", reason)
		for s := range sessions {
			s.stop(reason, metrics.ResultStopped)
		}
		// Give the programs KillAfter to exit (twice: TERM then KILL)
		// and their reports ReportTimeout to get through.
		t := time.NewTimer(2*w.cfg.KillAfter + w.cfg.ReportTimeout)
		reportDead = t.C
	}

	for {
		if !w.draining.Load() {
			free := w.cfg.Concurrency - len(sessions) - reserved
			if free > 0 && (inflight == 0 || grew) {
				n := min(free, MaxConcurrency)
				reserved += n
				inflight++
				go w.poll(pollCtx, n, delay, results)
				delay = 0
			}
			grew = false
		}
		if w.draining.Load() && len(sessions) == 0 && inflight == 0 {
			w.releases.Wait() // each is bounded by its own timeout
			w.log.Info("drained: no command left running")
			return nil
		}
		select {
		case <-alive:
			w.cfg.Alive()
		case <-ctxDone:
			startDrain("shutdown requested")
		case <-abortCh:
			abortCh = nil
			startDrain("abort requested")
			stopAll(fmt.Sprintf("the agent stopped the command during shutdown (second signal before the %s grace period ended)", w.cfg.Grace))
		case <-graceTimer:
			stopAll(fmt.Sprintf("the agent stopped the command during shutdown after the grace period of %s", w.cfg.Grace))
		case <-reportDead:
			reportDead = nil
			w.log.Error("giving up reporting commands after shutdown deadline", "unreported", len(sessions))
			w.cancelReport()
		case s := <-w.done:
			delete(sessions, s)
			grew = true
		case r := <-results:
			inflight--
			reserved -= r.max
			delay = w.afterPoll(r, &errStreak)
			for i, cmd := range r.resp.Commands {
				log := w.log.With("command_id", cmd.ID, "container_id", cmd.ContainerID, "attempt", cmd.Attempt)
				w.metrics.Leased.Inc()
				if w.draining.Load() {
					// Not started, so not running: give the lease back
					// so another agent can take it now. Should that
					// fail, the lease simply expires.
					w.metrics.StartRefused.WithLabelValues("draining").Inc()
					w.releases.Add(1)
					go w.release(cmd, log)
					continue
				}
				if i >= r.max {
					log.Error("coordinator leased more commands than asked for; dropping the extra one", "asked", r.max)
					w.metrics.StartRefused.WithLabelValues("over_capacity").Inc()
					continue
				}
				if running(sessions, cmd.ID) {
					// The same command again while its session runs: a
					// claim PostgreSQL lost in a crash (claims commit
					// asynchronously, docs/protocol.md) and that was taken
					// again under the same attempt. The coordinator would
					// say yes to its start too, so it is refused here:
					// one session per command.
					log.Warn("command leased again while it runs here; not started a second time")
					w.metrics.StartRefused.WithLabelValues("duplicate").Inc()
					continue
				}
				s := w.newSession(cmd, r.resp, log)
				sessions[s] = struct{}{}
				go s.run()
			}
		}
	}
}

// running reports whether one of sessions is command id's.
func running(sessions map[*session]struct{}, id string) bool {
	for s := range sessions {
		if s.cmd.ID == id {
			return true
		}
	}
	return false
}

// release hands a lease it will not start back to the coordinator.
func (w *Worker) release(cmd shared.LeasedCommand, log *slog.Logger) {
	defer w.releases.Done()
	ctx, cancel := context.WithTimeout(w.reportCtx, 10*time.Second)
	defer cancel()
	if _, err := w.coord.Release(client.WithLogger(ctx, log), cmd.ID, cmd.Attempt); err != nil {
		log.Info("command leased during shutdown not released; it returns to the queue when its lease expires", "error", err)
		return
	}
	log.Info("command leased during shutdown released back to the queue")
}

// poll runs one lease request after waiting delay, and reports the result.
func (w *Worker) poll(ctx context.Context, n int, delay time.Duration, results chan<- pollResult) {
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	r := pollResult{max: n, resp: &shared.LeaseResponse{}}
	if ctx.Err() == nil {
		start := time.Now()
		resp, err := w.coord.Lease(ctx, shared.LeaseRequest{Max: n, WaitMillis: int(w.cfg.LeaseWait / time.Millisecond)})
		r.elapsed = time.Since(start)
		if err == nil {
			r.resp = resp
		} else if ctx.Err() == nil {
			r.err = err
		}
	}
	results <- r
}

// afterPoll logs a poll's failure and returns how long to wait before the
// next one: jittered exponential backoff after errors, a short jittered
// pause after an empty answer that came back much sooner than asked (a
// coordinator that does not park must not make the agent spin), else none.
func (w *Worker) afterPoll(r pollResult, errStreak *int) time.Duration {
	if r.err != nil {
		*errStreak++
		w.metrics.CoordinatorErrors.WithLabelValues("lease").Inc()
		d := min(time.Second<<min(*errStreak-1, 5), 30*time.Second)
		d = d/2 + rand.N(d/2+1)
		level := slog.LevelWarn
		if client.IsRejected(r.err) || client.IsTLS(r.err) {
			// A 4xx on lease is configuration (token, node), and so is
			// a certificate the agent or the coordinator refuses.
			level = slog.LevelError
		}
		w.log.Log(context.Background(), level, "lease commands", "error", r.err, "retry_in", d.String())
		return d
	}
	*errStreak = 0
	if len(r.resp.Commands) == 0 && r.elapsed < min(time.Second, w.cfg.LeaseWait/2) {
		return 500*time.Millisecond + rand.N(time.Second)
	}
	return 0
}
