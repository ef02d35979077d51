#!/usr/bin/env bash
# bench.sh runs the Go benchmarks against the private dev PostgreSQL cluster.
# It is the driver `make bench` calls; benchmarks themselves live beside the
# code they measure (Benchmark* functions) and use TEST_DATABASE_URL like tests.
#
# Environment:
#   BENCH          -bench regexp (default: all)
#   BENCHTIME      -benchtime, e.g. 5s or 1000x (default 2s)
#   BENCHCOUNT     -count, repeat runs for benchstat (default 1)
#   PKGS           packages (default ./...)
#   BENCH_OUT      also write the raw output here, e.g. for benchstat
#   EXECQ_DEV_PG_FAST=1  start PostgreSQL without fsync. Off by default: the
#                  numbers should reflect a durable database. A cluster that
#                  already runs keeps the mode it was started with (see below).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"

scripts/devdb.sh start >/dev/null
TEST_DATABASE_URL="$(scripts/devdb.sh url)"
export TEST_DATABASE_URL

# Say which mode the database is really in: it decides what the numbers mean.
fsync="$(scripts/devdb.sh psql -Atqc 'SHOW fsync')"
echo "bench: PostgreSQL fsync=$fsync, $(nproc) CPUs, $(go version)"

out="${BENCH_OUT:-/dev/null}"
# -run '^$' keeps tests out; -benchmem because allocation counts are part of
# what a benchmark should show.
# shellcheck disable=SC2086 # PKGS may name several packages
go test -run '^$' -bench "${BENCH:-.}" -benchtime "${BENCHTIME:-2s}" \
	-count "${BENCHCOUNT:-1}" -benchmem -timeout 60m ${PKGS:-./...} | tee "$out"
