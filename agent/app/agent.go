package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/execq/execq/agent/client"
	"github.com/execq/execq/agent/inventory"
	"github.com/execq/execq/agent/metrics"
	"github.com/execq/execq/agent/runc"
	"github.com/execq/execq/agent/worker"
	"github.com/execq/execq/internal/sdnotify"
)

// Agent is one running agent.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	reg       *prometheus.Registry
	Client    *client.Client
	Runner    *runc.Runner
	Worker    *worker.Worker
	Inventory *inventory.Reporter
	Metrics   *metrics.Metrics
	// notify tells systemd when the agent has reported its containers,
	// when it drains, and that its lease loop still turns (a no-op
	// outside systemd).
	notify *sdnotify.Notifier
}

// New validates cfg and builds an agent. Its metrics are registered on reg
// (served on cfg.MetricsListen if set). logger must not be nil.
func New(cfg Config, logger *slog.Logger, reg *prometheus.Registry) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := exec.LookPath(cfg.RuncBinary); err != nil {
		return nil, fmt.Errorf("runc binary %q not found (install runc or set --runc): %w", cfg.RuncBinary, err)
	}
	if cfg.WorkDir != "" {
		if err := os.MkdirAll(cfg.WorkDir, 0o700); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
	}
	m := metrics.New(reg)
	tlsConfig, err := client.NewTLSConfig(cfg.TLS, logger)
	if err != nil {
		return nil, err
	}
	c, err := client.New(client.Config{
		TLS:            tlsConfig,
		BaseURL:        cfg.CoordinatorURL,
		Token:          cfg.Token,
		Logger:         logger.With("component", "client"),
		RetryMax:       cfg.RetryMax,
		RetryWaitMin:   cfg.RetryWaitMin,
		RetryWaitMax:   cfg.RetryWaitMax,
		RequestTimeout: cfg.RequestTimeout,
		MaxLeaseWait:   cfg.LeaseWait,
		UserAgent:      "execq-agent",
	})
	if err != nil {
		return nil, err
	}
	r := &runc.Runner{Binary: cfg.RuncBinary, Root: cfg.RuncRoot, TempDir: cfg.WorkDir}
	notify := sdnotify.New(logger)
	wcfg := cfg.workerConfig()
	wcfg.Alive, wcfg.AliveInterval = notify.Alive, notify.WatchdogInterval()
	// Starts and finishes of concurrent commands go to the coordinator
	// together (client.Batching).
	w, err := worker.New(wcfg, client.NewBatching(c), r, logger.With("component", "worker"), m)
	if err != nil {
		return nil, err
	}
	return &Agent{
		cfg:    cfg,
		log:    logger,
		reg:    reg,
		Client: c,
		Runner: r,
		Worker: w,
		Inventory: &inventory.Reporter{
			Lister:    r,
			Sender:    c,
			Logger:    logger.With("component", "inventory"),
			Metrics:   m,
			Interval:  cfg.InventoryInterval,
			Keepalive: cfg.InventoryKeepalive,
			// Ready once the coordinator knows this host's containers:
			// commands for them can be leased from then on.
			Reported: notify.Ready,
		},
		Metrics: m,
		notify:  notify,
	}, nil
}

// Run runs the agent until ctx is done, then drains (see worker.Worker.Run)
// and returns nil. It returns an error only if the metrics listener cannot
// be opened or fails.
func (a *Agent) Run(ctx context.Context) error {
	var ln net.Listener
	if a.cfg.MetricsListen != "" {
		var err error
		if ln, err = net.Listen("tcp", a.cfg.MetricsListen); err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
	}
	a.log.Info("execq agent starting", "coordinator", a.cfg.CoordinatorURL, "runc_root", a.cfg.RuncRoot,
		"concurrency", a.cfg.Concurrency, "drain_grace", a.cfg.DrainGrace.String(), "metrics_listen", a.cfg.MetricsListen,
		"ca_file", a.cfg.TLS.CAFile, "tls_client_cert", a.cfg.TLS.CertFile)

	if n := a.Runner.ReapOrphans(a.log.With("component", "runc")); n > 0 {
		a.log.Warn("ended programs an earlier agent left running; their commands were already failed as agent lost", "killed", n)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Inventory.Run(gctx) })
	workerDone := make(chan struct{})
	g.Go(func() error {
		defer close(workerDone)
		return a.Worker.Run(gctx)
	})
	g.Go(func() error {
		// The drain begins when ctx ends (the first SIGTERM).
		select {
		case <-gctx.Done():
			a.notify.Stopping()
		case <-workerDone:
		}
		return nil
	})
	if ln != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics server: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			// Metrics stay up through the drain, so the drain itself
			// can be watched.
			<-workerDone
			shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(shutCtx)
		})
	}
	err := g.Wait()
	a.log.Info("execq agent stopped")
	return err
}

// Abort stops running commands now rather than at the end of the drain
// grace period (the second signal).
func (a *Agent) Abort() { a.Worker.Abort() }
