#!/usr/bin/env bash
# devdb.sh manages the private PostgreSQL cluster that `make test`, `make bench`
# and `make run` use. It never touches a system cluster: it has its own data
# directory, its own port and listens on loopback only.
#
#   scripts/devdb.sh start    start the cluster (creating it first if needed); idempotent
#   scripts/devdb.sh stop     stop it (data is kept)
#   scripts/devdb.sh status   say whether it runs; exit 0 if it does, 3 if not
#   scripts/devdb.sh url      print the admin connection URL
#   scripts/devdb.sh dir      print the data area (data/, run/, log)
#   scripts/devdb.sh psql ... run psql on its execq database (postgres until make
#                             run creates execq); -d DB or a DB argument wins
#   scripts/devdb.sh destroy  stop it and delete all its data
#
# Environment:
#   EXECQ_DEV_PG_PORT  TCP port on 127.0.0.1 (default 25432)
#                      Below the kernel's ephemeral range (32768-60999 on Linux), so
#                      a client socket left by an earlier run cannot hold it.
#   EXECQ_DEV_PG_FAST  1 = fsync and synchronous_commit off. A crash can lose
#                      or corrupt data, which tests do not care about. Applied
#                      when the server starts; a running server keeps its mode.
#
# Auth is `trust` for every local and loopback connection: this cluster holds
# nothing but throw-away dev and test data and is reachable only from this host.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
PORT="${EXECQ_DEV_PG_PORT:-25432}"
FAST="${EXECQ_DEV_PG_FAST:-0}"
URL="postgres://postgres@127.0.0.1:${PORT}/postgres?sslmode=disable"

log() { printf 'devdb: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# PostgreSQL refuses to run as root, so as root every server-side binary runs
# as the `postgres` user; a non-root developer simply owns the cluster. `cd /`
# because the postgres user may not be allowed into the caller's directory.
as_owner() {
	if [[ $EUID -eq 0 ]]; then
		(cd / && runuser -u postgres -- "$@")
	else
		"$@"
	fi
}

# pg_bin finds the newest installed server; Debian keeps each major version
# under /usr/lib/postgresql/N/bin and puts none of them on PATH.
pg_bin() {
	local d
	# Glob order is lexical ("15" < "9"), so pick the highest version numerically.
	for d in /usr/lib/postgresql/*/bin; do
		if [[ -x $d/initdb ]]; then echo "$d"; fi
	done | sort -t/ -k5,5n | tail -n1
}

ensure_server_installed() {
	if [[ -n "$(pg_bin)" ]]; then
		return
	fi
	[[ $EUID -eq 0 ]] || die "PostgreSQL server binaries not found; install the Debian package 'postgresql' (as root)"
	log "installing PostgreSQL (apt-get install postgresql)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends postgresql >/dev/null
	[[ -n "$(pg_bin)" ]] || die "apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb appeared"
}

# choose_base picks the data area. The preferred place is $ROOT/.dev/pg, but as
# root the server runs as `postgres`, which must be able to walk every parent
# directory of the repository. A checkout under /root (mode 700) is not
# walkable, and we do not loosen permissions on someone's home. Unix socket
# paths are also limited to ~107 bytes. In either case the data area moves to
# /var/tmp/execq-dev-<hash of repo path>, which stays stable for this checkout.
choose_base() {
	local preferred="$ROOT/.dev/pg"
	local fallback
	fallback="/var/tmp/execq-dev-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
	# A fallback area already in use for this checkout wins, so a cluster never
	# silently "moves" (and loses its data) when permissions change.
	if [[ -d $fallback/data ]]; then
		BASE="$fallback"
		return
	fi
	if (( ${#preferred} + 30 > 100 )); then
		BASE="$fallback"
		return
	fi
	if [[ $EUID -eq 0 ]]; then
		mkdir -p "$ROOT/.dev"
		if ! (cd / && runuser -u postgres -- test -x "$ROOT/.dev"); then
			BASE="$fallback"
			return
		fi
	fi
	BASE="$preferred"
}

setup_paths() {
	choose_base
	DATA="$BASE/data"
	SOCKDIR="$BASE/run"
	LOGFILE="$BASE/server.log"
}

# server_pid prints the postmaster's pid if it is really our server. A
# postmaster.pid left by a crash or a machine restart can name a pid that now
# belongs to some other process; pg_ctl would then believe the server runs (or
# refuse to start), so ownership is checked by the process's working
# directory, which the postmaster sets to its data directory.
server_pid() {
	local pid
	[[ -f $DATA/postmaster.pid ]] || return 1
	pid="$(head -n1 "$DATA/postmaster.pid" 2>/dev/null || true)"
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ /proc/$pid/cwd -ef $DATA ]] || return 1
	printf '%s' "$pid"
}

remove_stale_lock_files() {
	if [[ -f $DATA/postmaster.pid ]] && ! server_pid >/dev/null; then
		log "removing stale $DATA/postmaster.pid"
		rm -f "$DATA/postmaster.pid"
	fi
	# The socket lock is checked the same way by the server, but only against
	# its pid being alive; drop it with the pid file so pid reuse cannot block us.
	rm -f "$SOCKDIR/.s.PGSQL.$PORT" "$SOCKDIR/.s.PGSQL.$PORT.lock"
}

init_cluster() {
	local bin="$1"
	log "creating cluster in $DATA"
	if [[ $BASE != "$ROOT/.dev/pg" ]]; then
		log "note: user postgres cannot reach $ROOT/.dev (or the path is too long for a socket), so the data lives in $BASE"
	fi
	mkdir -p "$BASE"
	if [[ $EUID -eq 0 ]]; then
		chown postgres:postgres "$BASE"
	fi
	chmod 700 "$BASE"
	as_owner mkdir -p "$DATA" "$SOCKDIR"
	as_owner "$bin/initdb" --pgdata="$DATA" --username=postgres \
		--auth-local=trust --auth-host=trust \
		--encoding=UTF8 --no-locale --no-instructions >/dev/null
	# Only this cluster's own settings file is ever rewritten; postgresql.conf
	# stays as initdb made it apart from this one include.
	as_owner sh -c "echo \"include_if_exists = 'execq-dev.conf'\" >> '$DATA/postgresql.conf'"
	as_owner sh -c "cat > '$DATA/pg_hba.conf'" <<'EOF'
# execq dev/test cluster: loopback only, no passwords. Never copy to production.
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    replication     all             127.0.0.1/32            trust
EOF
}

# write_settings regenerates the settings on every start so a change of port or
# mode takes effect without recreating the cluster.
write_settings() {
	local fast_settings=""
	if [[ $FAST == 1 ]]; then
		fast_settings="fsync = off
synchronous_commit = off
full_page_writes = off"
	fi
	as_owner sh -c "cat > '$DATA/execq-dev.conf'" <<EOF
# Written by scripts/devdb.sh on each start; edits are lost.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCKDIR'
# Tests run packages in parallel, each with its own pools, and the suite opens
# thousands of idle long-polls against coordinators that share this server.
max_connections = 400
shared_buffers = 256MB
log_min_messages = warning
log_connections = off
log_line_prefix = '%m [%p] %d '
$fast_settings
EOF
}

cmd_start() {
	local bin pid mode
	ensure_server_installed
	bin="$(pg_bin)"
	mkdir -p "$ROOT/.dev"
	# Two `make test` runs may start the cluster at once; serialise them.
	exec 9>"$ROOT/.dev/devdb.lock"
	flock 9
	setup_paths
	if pid="$(server_pid)"; then
		mode="$("$bin/psql" -XAtq -d "$URL" -c 'SHOW fsync' 2>/dev/null || echo unknown)"
		[[ $mode == off ]] && mode="fast (fsync off)" || mode="durable (fsync $mode)"
		log "already running (pid $pid, $mode, data $DATA)"
		echo "$URL"
		return
	fi
	if [[ ! -f $DATA/PG_VERSION ]]; then
		init_cluster "$bin"
	fi
	remove_stale_lock_files
	as_owner mkdir -p "$SOCKDIR"
	write_settings
	log "starting on 127.0.0.1:$PORT ($([[ $FAST == 1 ]] && echo 'fast mode: fsync off' || echo durable), data $DATA)"
	# 9>&-: the server must not inherit the lock, or it would hold it forever.
	if ! as_owner "$bin/pg_ctl" --pgdata="$DATA" --log="$LOGFILE" --wait --timeout=60 start >/dev/null 9>&-; then
		log "server did not start; last lines of $LOGFILE:"
		tail -n 20 "$LOGFILE" >&2 || true
		if ss -Htln "sport = :$PORT" 2>/dev/null | grep -q .; then
			log "port $PORT is taken by another process; set EXECQ_DEV_PG_PORT to use another"
		fi
		exit 1
	fi
	echo "$URL"
}

cmd_stop() {
	local bin
	setup_paths
	bin="$(pg_bin)"
	if ! server_pid >/dev/null; then
		log "not running"
		return
	fi
	as_owner "$bin/pg_ctl" --pgdata="$DATA" --mode=fast --wait --timeout=60 stop >/dev/null
	log "stopped"
}

cmd_status() {
	local pid
	setup_paths
	if pid="$(server_pid)"; then
		echo "running: pid $pid, $URL, data $DATA"
		return 0
	fi
	if [[ -f $DATA/PG_VERSION ]]; then
		echo "stopped: data $DATA"
	else
		echo "not created: would use $DATA"
	fi
	return 3
}

# cmd_psql opens the product's database, execq (created by `make run`), or
# postgres while execq does not exist yet. The connection is given through
# libpq's variables rather than a -d URL, so that arguments win: `psql -d
# other` or a database name keeps this cluster's host, port and user.
cmd_psql() {
	local bin db=execq
	bin="$(pg_bin)"
	[[ -n $bin ]] || die "PostgreSQL is not installed; run: $0 start"
	export PGHOST=127.0.0.1 PGPORT="$PORT" PGUSER=postgres PGSSLMODE=disable
	if [[ -z "$("$bin/psql" -XAtq -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'execq'" 2>/dev/null || true)" ]]; then
		db=postgres
		if [[ -t 0 ]]; then log "database execq does not exist yet (make run creates it); opening postgres"; fi
	fi
	PGDATABASE="$db" exec "$bin/psql" -X "$@"
}

cmd_destroy() {
	cmd_stop
	log "deleting $BASE"
	rm -rf "$BASE"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
url) echo "$URL" ;;
dir) setup_paths && echo "$BASE" ;;
psql) shift && cmd_psql "$@" ;;
destroy) cmd_destroy ;;
*)
	sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
	exit 2
	;;
esac
