// Command execq-agent runs commands from the execq coordinator in this
// host's runc containers. See package github.com/execq/execq/agent.
//
// Configuration is by flags, each with an EXECQ_* variable (execq-agent -h
// lists them). The node token is read from EXECQ_AGENT_TOKEN or the file
// named by --token-file, never from a flag.
//
// Signals: the first SIGTERM or SIGINT stops leasing and lets running
// commands finish within --grace; a second one stops them at once. The
// agent exits 0 after a drain and on -h, 1 on a configuration or start-up
// error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/execq/execq/agent/app"
)

func main() {
	cfg, err := app.ParseFlags(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "execq-agent: %v\n", err)
		os.Exit(1)
	}
	logger := cfg.Log.New(os.Stderr, os.Getenv)
	if err := run(context.Background(), cfg, logger); err != nil {
		logger.Error("execq agent failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg app.Config, logger *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	agent, err := app.New(cfg, logger, reg)
	if err != nil {
		return err
	}

	// Not signal.NotifyContext: the second signal means something else.
	ctx, drain := context.WithCancel(ctx)
	defer drain()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	go func() {
		sig := <-sigs
		logger.Info("signal received: draining", "signal", sig.String(), "grace", cfg.DrainGrace.String())
		drain()
		sig = <-sigs
		logger.Warn("second signal: stopping running commands now", "signal", sig.String())
		agent.Abort()
	}()
	return agent.Run(ctx)
}
