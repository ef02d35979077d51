# execq — run `make` (or `make help`) for the list of targets.
#
# Targets that need PostgreSQL start the private dev cluster themselves
# (scripts/devdb.sh); nothing here touches a system-wide PostgreSQL.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# Go lives in /usr/local/go on the project's machines but is not always on a
# non-login shell's PATH (CI, sudo).
export PATH := $(PATH):/usr/local/go/bin

GO        ?= go
BIN       := bin
PKGS      ?= ./...
# Extra flags for go test, e.g. `make test GOTESTFLAGS='-v -run TestLease'`.
GOTESTFLAGS ?=
DEVDB     := scripts/devdb.sh

.PHONY: help build package test bench bench-fleet run lint fmt db-start db-stop db-status db-psql clean distclean

help: ## show this list of targets
	@awk 'BEGIN {FS = ":.*## "; print "Usage: make <target>\n"} \
		/^[a-zA-Z0-9_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/execq-coordinator, bin/execq-agent and bin/execq (the command line)
	$(GO) build -o $(BIN)/execq-coordinator ./coordinator/cmd/execq-coordinator
	$(GO) build -o $(BIN)/execq-agent ./agent/cmd/execq-agent
	$(GO) build -o $(BIN)/execq ./cli/cmd/execq

# VERSION=1.2.0 to set the packages' version (default: from git describe);
# packaging/build.sh lists the other settings.
DIST      ?= dist
package: ## build the .deb packages (execq-coordinator, execq-agent, execq-cli) into dist/
	packaging/build.sh $(DIST)

test: ## run the whole suite (race detector) against the dev PostgreSQL and real runc
	@EXECQ_DEV_PG_FAST=1 $(DEVDB) start >/dev/null
	TEST_DATABASE_URL="$$($(DEVDB) url)" $(GO) test -race -count=1 -timeout 30m $(GOTESTFLAGS) $(PKGS)

bench: ## run the benchmarks (scripts/bench.sh; BENCH=regexp BENCHTIME=5s to narrow)
	scripts/bench.sh

# FLEET_FLAGS are passed to the simulator, e.g. FLEET_FLAGS='-n 500 -rate 300
# -duration 30s' or '-idle -n 10000' (go run ./scripts/fleetsim -h lists them).
FLEET_FLAGS ?=
bench-fleet: build ## simulate a fleet of agents against the coordinator and compare with pgbench in the same run (FLEET_FLAGS='-n 2000 ...')
	@$(DEVDB) start >/dev/null
	$(GO) build -o $(BIN)/fleetsim ./scripts/fleetsim
	$(BIN)/fleetsim -admin-url "$$($(DEVDB) url)" -coordinator $(BIN)/execq-coordinator $(FLEET_FLAGS)

# ONCE=1: stop after the demo command, exit non-zero unless it succeeded (the
# default when stdin is not a terminal); ONCE=0: stay up even then.
run: ## bring up the whole local stack (PostgreSQL, coordinator, agent, demo containers) and show a command going through it; ONCE=1 to stop after it
	$(if $(ONCE),EXECQ_RUN_ONCE=$(ONCE) )scripts/run.sh

# .dev holds container root filesystems and PostgreSQL data: never Go sources.
GOFILES = $$(find . \( -path ./.dev -o -path ./.git \) -prune -o -name '*.go' -print)

lint: ## check formatting (gofmt) and run go vet
	@unformatted="$$(gofmt -l $(GOFILES))"; \
	if [[ -n "$$unformatted" ]]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

fmt: ## rewrite Go files with gofmt
	gofmt -w $(GOFILES)

db-start: ## start the dev PostgreSQL cluster (127.0.0.1, port EXECQ_DEV_PG_PORT or 25432)
	$(DEVDB) start

db-stop: ## stop the dev PostgreSQL cluster (data is kept)
	$(DEVDB) stop

db-status: ## say whether the dev PostgreSQL cluster runs
	$(DEVDB) status

db-psql: ## open psql on the dev cluster's execq database (the one make run uses)
	$(DEVDB) psql

clean: ## remove built binaries and packages and the Go test cache
	rm -rf $(BIN) $(DIST)
	$(GO) clean -testcache

distclean: clean ## also stop the dev stack and delete .dev/ (PostgreSQL data, demo containers)
	-scripts/run.sh --stop
	$(DEVDB) destroy
	rm -rf .dev
