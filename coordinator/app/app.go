package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/execq/execq/coordinator/api"
	"github.com/execq/execq/coordinator/lease"
	"github.com/execq/execq/coordinator/liveness"
	"github.com/execq/execq/coordinator/metrics"
	"github.com/execq/execq/coordinator/reaper"
	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/internal/certreload"
	"github.com/execq/execq/internal/sdnotify"
	"github.com/execq/execq/shared"
)

// App is a coordinator replica.
type App struct {
	cfg      Config
	log      *slog.Logger
	Store    *store.Store
	Notifier *lease.Notifier
	// Poller runs the agents' lease long-polls.
	Poller *lease.Poller
	Reaper *reaper.Reaper
	// Contacts keeps the nodes' last contact (nodes.last_seen_at).
	Contacts *liveness.Tracker
	Pruner   *reaper.Pruner
	// Handler serves the whole HTTP surface.
	Handler  http.Handler
	draining chan struct{}
	// tlsConfig and certs are set when serving HTTPS (tls.go).
	tlsConfig *tls.Config
	certs     *certreload.Reloader
	// notify tells systemd when the replica serves, drains, and that its
	// reaper loop still turns (a no-op outside systemd).
	notify *sdnotify.Notifier
	// resume serves again the connections of parked lease polls once
	// answered (resume.go).
	resume *resumer
}

// New connects to the database, applies pending migrations and builds the
// handler. Call Close when done.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsConfig, certs, err := serverTLS(cfg.TLS, log)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: cfg.DBMaxConns, QueryTimeout: cfg.DBQueryTimeout,
		ReservedConns: cfg.reservedConns(), MaxWaiting: cfg.DBMaxWaiting})
	if err != nil {
		return nil, err
	}
	applied, err := st.Migrate(ctx)
	if err != nil {
		st.Close()
		return nil, err
	}
	if len(applied) > 0 {
		log.Info("applied migrations", "migrations", applied)
	}
	a := &App{cfg: cfg, log: log, Store: st, draining: make(chan struct{}), resume: &resumer{}}
	a.tlsConfig, a.certs = tlsConfig, certs
	a.notify = sdnotify.New(log)
	a.Notifier = lease.NewNotifier(cfg.DatabaseURL, []string{store.NotifyChannel, store.FinishedChannel, store.ControlChannel, store.OutputChannel, store.AuthChannel}, log)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.registerTLSMetrics(reg)
	a.Poller = &lease.Poller{Store: st, Notifier: a.Notifier, TTL: cfg.LeaseTTL, SafetyInterval: cfg.SafetyPoll, Draining: a.draining, Log: log}
	// After a listener reconnect, one query finds the nodes with work
	// instead of every parked poll claiming at once.
	a.Notifier.Delegate(store.NotifyChannel, a.Poller.CheckNow)
	m := metrics.New(reg, st, a.Poller.Parked, cfg.NodeDownAfter)
	st.OnEnded(func(status shared.Status, reason shared.EndReason, n int) {
		m.Ended.WithLabelValues(string(status), string(reason)).Add(float64(n))
	})
	// A quarter of the window: a live agent is stamped at least every 1.5
	// intervals, well within it (see liveness.Tracker).
	a.Contacts = &liveness.Tracker{Store: st, Interval: cfg.NodeDownAfter / 4, Log: log}
	a.Reaper = &reaper.Reaper{Store: st, Interval: cfg.ReapInterval, Metrics: m, Log: log,
		TimeoutSlack: cfg.DefaultGrace + cfg.LeaseTTL,
		// A heartbeat waits for the database at most the query timeout;
		// one stuck longer than a whole TTL finds its program already
		// stopped by the agent, so there is nothing left to wait for.
		LostGrace: min(cfg.DBQueryTimeout, cfg.LeaseTTL),
		Tick:      a.notify.Alive}
	a.Pruner = &reaper.Pruner{Store: st, Retention: cfg.Retention, Interval: cfg.PruneInterval, Metrics: m, Log: log}
	a.Handler = api.New(api.Config{
		LeaseTTL: cfg.LeaseTTL, Heartbeat: cfg.Heartbeat, MaxWait: cfg.MaxWait, OutputCap: cfg.OutputCap, OutputTail: cfg.outputTail(),
		AuthCacheTTL: cfg.AuthCacheTTL, AuthFailInterval: cfg.AuthFailInterval, AuthFailBurst: cfg.AuthFailBurst,
		Limits: api.Limits{DefaultTimeout: cfg.DefaultTimeout, MaxTimeout: cfg.MaxTimeout,
			DefaultQueueTimeout: cfg.DefaultQueueTimeout, MaxQueueTimeout: cfg.MaxQueueTimeout,
			DefaultGrace: cfg.DefaultGrace, MaxGrace: cfg.MaxGrace},
		ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout,
		MaxLargeReads: cfg.MaxLargeReads, MaxLargeReadQueue: cfg.MaxLargeReadQueue,
		Contacts: a.Contacts,
		Resumer:  a.resume,
	}, st, a.Poller, m, reg, log)
	return a, nil
}

// Close releases the pool.
func (a *App) Close() error { return a.Store.Close() }

// Background runs the notification listener, the reaper, the pruner and
// the flush of the nodes' contacts until ctx ends.
func (a *App) Background(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Notifier.Run(ctx) })
	g.Go(func() error { return a.Reaper.Run(ctx) })
	g.Go(func() error { return a.Pruner.Run(ctx) })
	g.Go(func() error { return a.Contacts.Run(ctx) })
	return g.Wait()
}

// HTTPServer returns the server Run serves a.Handler with, its timeouts set
// from the configuration. Tests serve with it too.
//
// Only the header read, idle and write bounds are the server's own: the
// body's read deadline and each write's deadline are set per request by
// the handler (api/deadlines.go), since a connection-wide ReadTimeout would
// cancel every long-poll when it passed. WriteTimeout here is the backstop
// for the first write (and bounds a TLS handshake's writes); the handler
// extends it per write, and long-polls and output follows extend theirs.
//
// The server also serves, from now on, the connections of parked lease
// polls handed back once answered (api/detach.go); closing or shutting it
// down ends that too.
func (a *App) HTTPServer() *http.Server {
	srv := &http.Server{
		Handler:           a.Handler,
		ReadHeaderTimeout: min(10*time.Second, a.cfg.ReadTimeout),
		IdleTimeout:       a.cfg.IdleTimeout,
		WriteTimeout:      a.cfg.WriteTimeout,
	}
	a.resume.serveWith(srv, resumedAddr{})
	return srv
}

// StopResuming closes, from now on, the connections of parked lease polls
// once answered instead of handing them back to the server from
// HTTPServer, and returns once those already handed back are the server's.
// Shutting down or closing that http.Server does it too; call it before
// stopping the server any other way (httptest.Server.Close waits for its
// connections and must not see a new one arrive meanwhile).
func (a *App) StopResuming() { a.resume.Stop() }

// resumedAddr is the address of the listener of handed-back connections.
type resumedAddr struct{}

func (resumedAddr) Network() string { return "resumed" }
func (resumedAddr) String() string  { return "resumed" }

// Run serves HTTP on cfg.Listen with the background loops until ctx ends,
// then drains: parked polls answer empty at once, other requests get
// ShutdownGrace to finish.
//
// Under systemd (Type=notify) it reports READY=1 once the listener is bound
// (New has applied the migrations), STOPPING=1 when the drain begins, and
// feeds the watchdog from the reaper's loop.
func (a *App) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.cfg.Listen, err)
	}
	if w := a.notify.WatchdogInterval(); w > 0 && a.cfg.ReapInterval >= w {
		a.log.Warn("the reaper interval is not shorter than half the systemd watchdog timeout; raise WatchdogSec or lower --reap-interval, or systemd will restart a healthy coordinator",
			"reap_interval", a.cfg.ReapInterval.String(), "watchdog_interval", w.String())
	}
	srv := a.HTTPServer()
	// Connections that arrive before Serve runs wait in the listen backlog,
	// so the replica answers from this moment.
	a.notify.Ready()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Background(gctx) })
	g.Go(func() error { return a.watchCertificate(gctx) })
	g.Go(func() error {
		if err := a.serve(srv, ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		a.notify.Stopping()
		close(a.draining)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownGrace)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	return g.Wait()
}
