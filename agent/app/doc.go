// Package app assembles the agent from a Config: the coordinator client, the
// runc runner, the inventory reporter, the worker and the metrics endpoint.
// The execq-agent binary is a thin main around it; end-to-end tests start an
// agent in-process the same way:
//
//	cfg := app.Defaults()
//	cfg.CoordinatorURL, cfg.Token, cfg.RuncRoot = url, token, root
//	a, err := app.New(cfg, logger, prometheus.NewRegistry())
//	go a.Run(ctx) // cancel ctx to drain; a.Abort() to stop commands now
package app
