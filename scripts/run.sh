#!/usr/bin/env bash
# run.sh is `make run`: on a fresh Debian-like machine, as root, it brings up
# the whole local stack and shows one command going through it:
#
#   private PostgreSQL (scripts/devdb.sh) -> execq-coordinator on 127.0.0.1:8080
#   -> two busybox runc containers -> execq-agent -> a submitted command
#
# then prints ready-to-paste curl lines and waits. Ctrl-C stops the agent, the
# coordinator and the demo containers. The PostgreSQL cluster is left running
# (it keeps the demo database and is shared with `make test`); stop it with
# `make db-stop`.
#
#   scripts/run.sh          bring the stack up (stops leftovers of an earlier run first)
#   scripts/run.sh --stop   only stop leftovers of an earlier run
#
# Everything lives under .dev/: logs in .dev/log, pid files in .dev/run,
# bundles in .dev/containers, runc state in .dev/runc, the demo user's token
# in .dev/demo.env.
#
# Environment: EXECQ_RUN_LISTEN (default 127.0.0.1:8080) and, for the
# database, EXECQ_DEV_PG_PORT (see scripts/devdb.sh).
set -euo pipefail

# -P: pid files are matched against /proc/<pid>/exe, which has no symlinks.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DEV="$ROOT/.dev"
STATE="$DEV/run"
LOGS="$DEV/log"
CONTAINERS="$DEV/containers"
# A runc root of our own: the demo containers never mix with the host's, and
# everything in it is ours to delete.
RUNC_ROOT="$DEV/runc"
LISTEN="${EXECQ_RUN_LISTEN:-127.0.0.1:8080}"
API="http://$LISTEN"
COORDINATOR="$ROOT/bin/execq-coordinator"
AGENT="$ROOT/bin/execq-agent"
# shellcheck disable=SC2016 # $(hostname) is for the container's shell
DEMO_COMMAND='{"program":"/bin/sh","args":["-c","echo hello from $(hostname); uname -a"]}'

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
log() { printf 'run: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------- packages

ensure_packages() {
	local missing=()
	command -v runc >/dev/null || missing+=(runc)
	# The static build: the containers have no libc for a dynamic busybox.
	dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' ||
		missing+=(busybox-static)
	command -v curl >/dev/null || missing+=(curl)
	command -v make >/dev/null || missing+=(make)
	command -v jq >/dev/null || missing+=(jq)
	if ((${#missing[@]})); then
		log "installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
	command -v go >/dev/null || die "Go is not installed (expected in /usr/local/go); see go.mod for the version"
}

busybox_path() {
	dpkg-query -L busybox-static | grep -m1 -E '/bin/busybox$'
}

# ---------------------------------------------------------------- processes

# our_pid prints the pid in a pid file if that process is still the binary we
# started; a pid reused by an unrelated process after a reboot is not touched.
our_pid() {
	local pidfile="$1" binary="$2" pid exe
	[[ -f $pidfile ]] || return 1
	pid="$(cat "$pidfile")"
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
	# A rebuilt binary shows as "path (deleted)" in a process started before.
	[[ $exe == "$binary" || $exe == "$binary (deleted)" ]] || return 1
	printf '%s' "$pid"
}

# stop_process sends SIGTERM so the process can shut down cleanly (the agent
# drains its running commands), and SIGKILL only after a grace period.
stop_process() {
	local name="$1" binary="$2" grace="$3" pid i
	if pid="$(our_pid "$STATE/$name.pid" "$binary")"; then
		log "stopping $name (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < grace * 10; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$name did not stop within ${grace}s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$STATE/$name.pid"
}

# start_daemon runs a binary in the background in its own session, so the
# terminal's Ctrl-C reaches only this script, which then stops it in order.
start_daemon() {
	local name="$1"
	shift
	setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
	echo $! >"$STATE/$name.pid"
}

# ---------------------------------------------------------------- containers

# create_container makes a busybox bundle in $CONTAINERS/<id> and starts it
# detached under $RUNC_ROOT. The init loops on sleep and exits on SIGTERM
# (PID 1 ignores signals it does not handle).
create_container() {
	local id="$1" hostname="$2"
	local bundle="$CONTAINERS/$id" rootfs="$CONTAINERS/$id/rootfs"
	mkdir -p "$rootfs"/{bin,dev,etc,proc,root,sys,tmp} "$RUNC_ROOT" "$LOGS"
	chmod 1777 "$rootfs/tmp"
	install -m 0755 "$(busybox_path)" "$rootfs/bin/busybox"
	# chroot so the applet symlinks point at /bin/busybox inside the container.
	chroot "$rootfs" /bin/busybox --install -s /bin
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
	printf 'root:x:0:\n' >"$rootfs/etc/group"

	(cd "$bundle" && runc spec)
	jq --arg host "$hostname" '
		.process.args = ["/bin/sh", "-c", "trap \"exit 0\" TERM; while :; do sleep 3600 & wait $!; done"]
		| .process.terminal = false
		| .hostname = $host
		| .root.readonly = true
		| .mounts += [{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
		               "options": ["nosuid", "nodev", "mode=1777", "size=64m"]}]
	' "$bundle/config.json" >"$bundle/config.json.new"
	mv "$bundle/config.json.new" "$bundle/config.json"

	# Detached, the container's init keeps runc's stdio: it must not be a
	# terminal (terminal is false) nor this script's pipes.
	runc --root "$RUNC_ROOT" run --detach --bundle "$bundle" "$id" \
		</dev/null >/dev/null 2>>"$LOGS/container-$id.log"
}

# remove_containers deletes every container in our private runc root.
remove_containers() {
	local id
	if [[ -d $RUNC_ROOT ]]; then
		for id in $(runc --root "$RUNC_ROOT" list --quiet 2>/dev/null); do
			log "deleting container $id"
			runc --root "$RUNC_ROOT" delete --force "$id" || true
		done
	fi
	rm -rf "$CONTAINERS"
}

new_uuid() {
	cat /proc/sys/kernel/random/uuid
}

# ---------------------------------------------------------------- stack

stop_stack() {
	# Agent first: it finishes or fails its running commands while the
	# coordinator is still there to hear about it.
	stop_process agent "$AGENT" 30
	stop_process coordinator "$COORDINATOR" 15
	remove_containers
}

cleanup() {
	trap - EXIT INT TERM
	# Finish stopping even if the terminal or a pipe reading our output is
	# already gone (Ctrl-C also kills a `| tee`).
	trap '' PIPE
	set +e
	say "stopping the stack"
	stop_stack
	log "PostgreSQL is still running ($(scripts/devdb.sh url)); stop it with: make db-stop"
}

show_logs_and_die() {
	local name
	for name in coordinator agent; do
		if [[ -f $LOGS/$name.log ]]; then
			log "last lines of $LOGS/$name.log:"
			tail -n 15 "$LOGS/$name.log" >&2
		fi
	done
	die "$*"
}

# api METHOD PATH [BODY] calls the REST API as the demo user and sets
# HTTP_CODE and RESPONSE (globals: a $(...) subshell would lose the code).
api() {
	local method="$1" path="$2" out args=()
	[[ $# -ge 3 ]] && args=(--data "$3")
	out="$(mktemp)"
	HTTP_CODE="$(curl -sS -o "$out" -w '%{http_code}' -X "$method" \
		-H "Authorization: Bearer $USER_TOKEN" -H 'Content-Type: application/json' \
		"${args[@]}" "$API$path")" || HTTP_CODE=000
	RESPONSE="$(cat "$out")"
	rm -f "$out"
}

# saved VAR prints a value saved in .dev/demo.env by an earlier run.
saved() {
	[[ -f $DEV/demo.env ]] && sed -n "s/^$1=//p" "$DEV/demo.env" | tail -n1
}

# create_identity KIND NAME [FLAGS]: prints the JSON the CLI answers. A name
# taken by an earlier run whose token was lost makes it retry with a
# timestamped name, so re-runs never fail.
create_identity() {
	local kind="$1" name="$2" out
	shift 2
	if out="$("$COORDINATOR" "$kind" create --name "$name" "$@" 2>>"$LOGS/cli.log")"; then
		printf '%s' "$out"
		return
	fi
	name="$name-$(date +%Y%m%d-%H%M%S)"
	log "$kind name taken; creating $name instead"
	"$COORDINATOR" "$kind" create --name "$name" "$@" 2>>"$LOGS/cli.log" ||
		die "$kind create failed; see $LOGS/cli.log"
}

up() {
	[[ $EUID -eq 0 ]] || die "make run needs root (runc containers, apt-get); run it as root"
	ensure_packages
	mkdir -p "$STATE" "$LOGS"
	cd "$ROOT"

	say "stopping leftovers of an earlier run"
	stop_stack
	if curl -s -o /dev/null --max-time 2 "$API/healthz"; then
		die "something else already listens on $LISTEN; stop it or set EXECQ_RUN_LISTEN"
	fi
	trap cleanup EXIT
	trap 'exit 0' INT TERM HUP

	say "building"
	make --no-print-directory build

	say "starting PostgreSQL"
	local admin_url db_url
	admin_url="$(scripts/devdb.sh start)"
	if [[ -z "$(scripts/devdb.sh psql -Atqc "SELECT 1 FROM pg_database WHERE datname = 'execq'")" ]]; then
		scripts/devdb.sh psql -qc 'CREATE DATABASE execq'
	fi
	db_url="${admin_url/\/postgres\?/\/execq?}"
	export EXECQ_DATABASE_URL="$db_url"

	say "migrating $db_url"
	"$COORDINATOR" migrate

	say "starting the coordinator on $LISTEN (log: $LOGS/coordinator.log)"
	start_daemon coordinator "$COORDINATOR" serve --listen "$LISTEN" --database-url "$db_url"
	local i
	for ((i = 0; ; i++)); do
		curl -sf -o /dev/null --max-time 2 "$API/readyz" && break
		our_pid "$STATE/coordinator.pid" "$COORDINATOR" >/dev/null || show_logs_and_die "the coordinator exited"
		((i < 300)) || show_logs_and_die "the coordinator was not ready after 30s"
		sleep 0.1
	done

	say "the demo user and this host's node"
	local user node node_token
	# Reuse the identities of an earlier run while the database still knows
	# their tokens, so re-runs do not pile up users and nodes. The node probe
	# reports an empty inventory, which is true now (the old containers were
	# deleted) and clears them from the coordinator's view.
	USER_TOKEN="$(saved EXECQ_TOKEN)"
	node_token="$(saved EXECQ_NODE_TOKEN)"
	if [[ -n $USER_TOKEN ]] && api GET /api/v1/containers && [[ $HTTP_CODE == 200 ]]; then
		log "reusing the demo user of an earlier run"
	else
		user="$(create_identity users demo --admin)"
		USER_TOKEN="$(jq -r .token <<<"$user")"
		log "created user $(jq -r .user_id <<<"$user")"
	fi
	if [[ -n $node_token ]] && [[ "$(curl -sS -o /dev/null -w '%{http_code}' -X PUT \
		-H "Authorization: Bearer $node_token" -H 'Content-Type: application/json' \
		--data '{"containers":[]}' "$API/agent/v1/containers")" == 200 ]]; then
		log "reusing the node of an earlier run"
	else
		node="$(create_identity nodes "$(hostname)")"
		node_token="$(jq -r .token <<<"$node")"
		log "created node $(jq -r .node_id <<<"$node")"
	fi

	say "creating two busybox containers (runc root $RUNC_ROOT)"
	local c1 c2
	c1="$(new_uuid)" c2="$(new_uuid)"
	create_container "$c1" execq-demo-1
	create_container "$c2" execq-demo-2
	runc --root "$RUNC_ROOT" list

	# The token is a credential: readable by root only.
	(
		umask 077
		cat >"$DEV/demo.env" <<EOF
# Written by scripts/run.sh: source it to talk to the local stack.
EXECQ_API=$API
EXECQ_TOKEN=$USER_TOKEN
EXECQ_NODE_TOKEN=$node_token
EXECQ_CONTAINER_1=$c1
EXECQ_CONTAINER_2=$c2
EOF
	)

	say "starting the agent (log: $LOGS/agent.log)"
	EXECQ_AGENT_TOKEN="$node_token" start_daemon agent \
		"$AGENT" --coordinator "$API" --runc-root "$RUNC_ROOT"

	say "submitting a command to container $c1"
	local body id status
	# Until the agent's first inventory report the coordinator does not know
	# the container and answers 404.
	for ((i = 0; ; i++)); do
		api POST "/api/v1/containers/$c1/commands" "$DEMO_COMMAND"
		body="$RESPONSE"
		[[ $HTTP_CODE == 2* ]] && break
		our_pid "$STATE/agent.pid" "$AGENT" >/dev/null || show_logs_and_die "the agent exited"
		if [[ $HTTP_CODE != 404 ]] || ((i >= 60)); then
			show_logs_and_die "submit answered HTTP $HTTP_CODE: $body"
		fi
		sleep 0.5
	done
	id="$(jq -r .id <<<"$body")"
	jq . <<<"$body"

	say "waiting for command $id"
	for ((i = 0; ; i++)); do
		api GET "/api/v1/commands/$id"
		body="$RESPONSE"
		status="$(jq -r .status <<<"$body" 2>/dev/null || echo "?")"
		case "$status" in succeeded | failed | cancelled) break ;; esac
		((i < 120)) || show_logs_and_die "command $id still $status after 60s"
		sleep 0.5
	done
	jq . <<<"$body"

	say "the stack is up"
	cat <<EOF
Coordinator  $API  (log $LOGS/coordinator.log)
Agent        node "$(hostname)" (log $LOGS/agent.log)
Containers   $c1  $c2
Credentials  $DEV/demo.env

Try it (paste into another shell):

  export EXECQ_TOKEN=$USER_TOKEN

  curl -sS -H "Authorization: Bearer \$EXECQ_TOKEN" $API/api/v1/containers

  # submit, then wait (up to 30s) for the finished record in one more call
  cmd=\$(curl -sS -H "Authorization: Bearer \$EXECQ_TOKEN" -H 'Content-Type: application/json' \\
    -d '{"program":"/bin/ls","args":["-l","/"]}' $API/api/v1/containers/$c2/commands | jq -r .id)
  curl -sS -H "Authorization: Bearer \$EXECQ_TOKEN" "$API/api/v1/commands/\$cmd?wait=30s" | jq .

  curl -sS -H "Authorization: Bearer \$EXECQ_TOKEN" $API/api/v1/commands/$id

  curl -sS -H "Authorization: Bearer \$EXECQ_TOKEN" '$API/api/v1/commands/$id/output?stream=stdout'

  curl -sS $API/metrics | grep ^execq_

Press Ctrl-C to stop the agent, the coordinator and the containers.
EOF
	while our_pid "$STATE/coordinator.pid" "$COORDINATOR" >/dev/null &&
		our_pid "$STATE/agent.pid" "$AGENT" >/dev/null; do
		# Backgrounded so the INT trap runs at once instead of after the sleep.
		sleep 1 &
		wait $! || true
	done
	local name pid rc
	for name in coordinator agent; do
		pid="$(cat "$STATE/$name.pid")"
		if ! kill -0 "$pid" 2>/dev/null; then
			rc=0
			wait "$pid" || rc=$?
			if ((rc > 128)); then
				log "$name (pid $pid) was killed by signal $((rc - 128))"
			else
				log "$name (pid $pid) exited with status $rc"
			fi
		fi
	done
	show_logs_and_die "the coordinator or the agent exited"
}

main() {
	case "${1:-}" in
	"") up ;;
	--stop)
		[[ $EUID -eq 0 ]] || die "needs root"
		stop_stack
		;;
	*) die "usage: $0 [--stop]" ;;
	esac
}

# Sourcing the script (for tests of its functions) does not run it.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi
