#!/usr/bin/env bash
# run.sh is `make run`: on a fresh Debian-like machine, as root, it brings up
# the whole local stack and shows one command going through it:
#
#   private PostgreSQL (scripts/devdb.sh) -> execq-coordinator on 127.0.0.1:8080
#   -> two busybox runc containers -> execq-agent -> a submitted command
#
# then prints ready-to-paste curl lines and waits. Ctrl-C (SIGINT), SIGTERM or
# SIGHUP stops the agent, the coordinator and the demo containers. The
# PostgreSQL cluster is left running (it keeps the demo database and is shared
# with `make test`); stop it with `make db-stop`.
#
#   scripts/run.sh          bring the stack up (stops leftovers of an earlier run first)
#   scripts/run.sh --once   the same, then stop the stack and exit: 0 only if
#                           the demo command succeeded (for CI and scripts)
#   scripts/run.sh --stop   only stop leftovers of an earlier run
#
# Without --once, a run whose stdin is not a terminal (CI, a pipe, </dev/null)
# is a once run too: nobody could press Ctrl-C. EXECQ_RUN_ONCE=0 keeps such a
# run up anyway (for example under nohup); EXECQ_RUN_ONCE=1 is --once.
#
# Everything lives under .dev/: logs in .dev/log, pid files in .dev/run,
# bundles in .dev/containers, runc state in .dev/runc, the demo user's token
# in .dev/demo.env.
#
# Environment: EXECQ_RUN_LISTEN (default 127.0.0.1:8080); EXECQ_RUN_DIR, the
# state directory above (default .dev; a test uses its own so it never touches
# a developer's running stack); EXECQ_RUN_DB, the database (default execq) on
# the dev PostgreSQL cluster, whose port is EXECQ_DEV_PG_PORT (see
# scripts/devdb.sh).
set -Eeuo pipefail

# -P: pid files are matched against /proc/<pid>/exe, which has no symlinks.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DEV="${EXECQ_RUN_DIR:-$ROOT/.dev}"
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
DB_NAME="${EXECQ_RUN_DB:-execq}"
# The demo agent's drain grace: on Ctrl-C a running command gets this long to
# finish before the agent stops it (the production default is 30s).
AGENT_GRACE=5
AGENT_KILL_AFTER=2
# shellcheck disable=SC2016 # $(hostname) is for the container's shell
DEMO_COMMAND='{"program":"/bin/sh","args":["-c","echo hello from $(hostname); uname -a"]}'

# STEP names what the script is doing, STEP_LOGS the logs that explain a
# failure of that step; both are reported when the step fails.
STEP="starting"
STEP_LOGS=()
# UP is set once the demo command has finished and the stack is up: a signal
# after that is the normal way to stop, before it an interruption.
UP=0
ONCE=0
DEMO_STATUS=""
# A signal that arrives while a daemon's pid file is being written is held
# until the pid file exists, so cleanup can always find what was started.
CRITICAL=0
PENDING_SIGNAL=""
# SLEEPER is the wait loop's sleep, stopped with the stack.
SLEEPER=""

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
log() { printf 'run: %s\n' "$*" >&2; }

# step NAME [LOG...] starts a step: says so and names the logs to show if it fails.
step() {
	STEP="$1"
	shift
	STEP_LOGS=("$@")
	say "$STEP"
}

show_logs() {
	local f
	for f in "${STEP_LOGS[@]}"; do
		if [[ -s $f ]]; then
			log "last lines of $f:"
			tail -n 15 "$f" | sed 's/^/    /' >&2
		fi
	done
}

die() {
	log "FAILED at step \"$STEP\": $*"
	show_logs
	exit 1
}

# on_err is the ERR trap: a command that fails under set -e must never stop
# the script silently. Subshells (command substitutions) inherit the trap
# (set -E) but leave the report to the main shell, which sees the failure of
# the command that ran them.
on_err() {
	local rc=$? cmd="$1" line="$2"
	[[ $BASHPID == "$$" ]] || return "$rc"
	log "FAILED at step \"$STEP\": \`$cmd\` exited with status $rc (scripts/run.sh line $line)"
	show_logs
	exit "$rc"
}

on_signal() {
	local sig="$1"
	if ((CRITICAL)); then
		PENDING_SIGNAL="$sig"
		return
	fi
	# Ignore further signals at once: make forwards SIGTERM to us a second
	# time, and a terminal's Ctrl-C may be pressed twice; neither may cut the
	# cleanup short.
	trap '' INT TERM HUP
	if ((UP)); then
		log "got SIG$sig"
		exit 0
	fi
	log "interrupted by SIG$sig at step \"$STEP\""
	case "$sig" in INT) exit 130 ;; HUP) exit 129 ;; *) exit 143 ;; esac
}

# ---------------------------------------------------------------- packages

ensure_packages() {
	local missing=()
	command -v runc >/dev/null || missing+=(runc)
	# The static build: the containers have no libc for a dynamic busybox.
	# A comparison, not a pipe into grep -q, which can fail the pipeline under
	# pipefail by closing it early.
	[[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)" == *"install ok installed"* ]] ||
		missing+=(busybox-static)
	command -v curl >/dev/null || missing+=(curl)
	command -v make >/dev/null || missing+=(make)
	command -v jq >/dev/null || missing+=(jq)
	# The Go build fetches modules over HTTPS on a machine that has none yet.
	[[ -s /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
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
	local files
	# Not a pipe into grep -m1: an early close could fail it under pipefail.
	files="$(dpkg-query -L busybox-static)"
	grep -m1 -E '/bin/busybox$' <<<"$files"
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

# stop_process NAME BINARY GRACE [WHY] sends SIGTERM so the process can shut
# down cleanly (the agent drains its running commands), and SIGKILL only after
# GRACE seconds. A stop that takes more than a second is never silent: it says
# WHY, and what the process logs about its shutdown.
stop_process() {
	local name="$1" binary="$2" grace="$3" why="${4:-}" pid i logfile="$LOGS/$1.log" from=0 said=""
	if pid="$(our_pid "$STATE/$name.pid" "$binary")"; then
		log "stopping $name (pid $pid)"
		if [[ -f $logfile ]]; then from="$(stat -c %s "$logfile")"; fi
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 1; i <= grace * 10; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
			if ((i % 10 == 0)); then
				if ((i == 10)) && [[ -n $why ]]; then log "waiting for $name: $why"; fi
				said="$(waiting_for "$logfile" "$from" "$said")"
				if ((i % 50 == 0)); then
					log "still waiting for $name to stop ($((i / 10))s of at most ${grace}s)"
				fi
			fi
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$name did not stop within ${grace}s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		# The end of a story already begun: how the drain ended.
		if [[ -n $said ]]; then waiting_for "$logfile" "$from" "$said" >/dev/null; fi
	fi
	rm -f "$STATE/$name.pid"
}

# waiting_for prints (to stderr) the shutdown messages a daemon logged since
# byte FROM of its JSON log that were not said yet, and prints (to stdout)
# what has been said, so a drain is never a silent wait.
waiting_for() {
	local logfile="$1" from="$2" said="$3" msg
	[[ -f $logfile ]] || { printf '%s' "$said"; return 0; }
	while IFS= read -r msg; do
		[[ -n $msg ]] || continue
		case "$said" in *"|$msg|"*) continue ;; esac
		log "  $msg"
		said="$said|$msg|"
	done < <(tail -c +"$((from + 1))" "$logfile" 2>/dev/null |
		jq -Rr 'fromjson? | select(.msg | test("drain|stopping running")) |
			.msg + (if .running then " (\(.running) running" + (if .grace then ", grace \(.grace)" else "" end) + ")" else "" end)' 2>/dev/null || true)
	printf '%s' "$said"
}

# start_daemon runs a binary in the background in its own session, so the
# terminal's Ctrl-C reaches only this script, which then stops it in order.
start_daemon() {
	local name="$1"
	shift
	CRITICAL=1
	setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
	local pid=$! i
	echo "$pid" >"$STATE/$name.pid"
	# Until it execs, the child is a copy of this shell and then setsid, and
	# our_pid (which checks the binary) would take it for gone: a loaded
	# machine made "the coordinator exited" out of that. Wait for the exec.
	for ((i = 0; i < 200; i++)); do
		[[ "$(readlink "/proc/$pid/exe" 2>/dev/null || true)" == "$1"* ]] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	CRITICAL=0
	if [[ -n $PENDING_SIGNAL ]]; then on_signal "$PENDING_SIGNAL"; fi
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
	# coordinator is still there to hear about it. Its wait covers the demo
	# grace, the kill delay and its final reports.
	stop_process agent "$AGENT" 30 \
		"it lets running commands finish for up to ${AGENT_GRACE}s, then stops them and reports them"
	stop_process coordinator "$COORDINATOR" 15
	remove_containers
}

cleanup() {
	local rc=$?
	# Ignore, rather than reset, every signal from here on: make forwards a
	# SIGTERM the process group already delivered, and a second Ctrl-C must
	# not leave daemons running either. Finish stopping even if the terminal
	# or a pipe reading our output is already gone (Ctrl-C also kills a
	# `| tee`). Children inherit the ignored signals, so a stop in progress
	# (runc delete) is not cut short either.
	trap '' INT TERM HUP PIPE
	trap - EXIT ERR
	set +e
	if [[ -n $SLEEPER ]]; then kill "$SLEEPER" 2>/dev/null; fi
	say "stopping the stack"
	stop_stack
	log "PostgreSQL is still running ($(scripts/devdb.sh url)); stop it with: make db-stop"
	if ((ONCE)) && ((rc == 0)); then
		if [[ $DEMO_STATUS == succeeded ]]; then
			log "once: the demo command succeeded and the stack is stopped"
		else
			log "once: the demo command ended \"${DEMO_STATUS:-unknown}\", not succeeded"
			rc=1
		fi
	fi
	exit "$rc"
}

# api METHOD PATH [BODY] calls the REST API as the demo user and sets
# HTTP_CODE and RESPONSE (globals: a $(...) subshell would lose the code).
api() {
	local method="$1" path="$2" out args=()
	if [[ $# -ge 3 ]]; then args=(--data "$3"); fi
	out="$(mktemp)"
	HTTP_CODE="$(curl -sS -o "$out" -w '%{http_code}' -X "$method" \
		-H "Authorization: Bearer $USER_TOKEN" -H 'Content-Type: application/json' \
		"${args[@]}" "$API$path")" || HTTP_CODE=000
	RESPONSE="$(cat "$out")"
	rm -f "$out"
}

# saved VAR prints a value saved in .dev/demo.env by an earlier run, or
# nothing (successfully: a fresh checkout has no such file).
saved() {
	[[ -f $DEV/demo.env ]] || return 0
	sed -n "s/^$1=//p" "$DEV/demo.env" | tail -n1
}

# create_identity KIND NAME [FLAGS]: prints the JSON the CLI answers, with
# the name it got added as "name". A name taken by an earlier run whose
# token was lost makes it retry with a timestamped name, so re-runs never
# fail.
create_identity() {
	local kind="$1" name="$2" out
	shift 2
	if ! out="$("$COORDINATOR" "$kind" create --name "$name" "$@" 2>>"$LOGS/cli.log")"; then
		name="$name-$(date +%Y%m%d-%H%M%S)"
		log "$kind name taken; creating $name instead"
		# Not die: this runs in a command substitution, whose caller
		# reports the failure (with the logs) once.
		if ! out="$("$COORDINATOR" "$kind" create --name "$name" "$@" 2>>"$LOGS/cli.log")"; then
			log "$kind create --name $name failed"
			return 1
		fi
	fi
	jq -c --arg name "$name" '. + {name: $name}' <<<"$out"
}

up() {
	[[ $EUID -eq 0 ]] || die "make run needs root (runc containers, apt-get); run it as root"
	STEP="installing missing packages"
	ensure_packages
	mkdir -p "$STATE" "$LOGS"
	cd "$ROOT"

	step "stopping leftovers of an earlier run"
	stop_stack
	if curl -s -o /dev/null --max-time 2 "$API/healthz"; then
		die "something else already listens on $LISTEN; stop it or set EXECQ_RUN_LISTEN"
	fi
	trap cleanup EXIT
	trap 'on_signal INT' INT
	trap 'on_signal TERM' TERM
	trap 'on_signal HUP' HUP
	if ((ONCE)); then
		log "once mode: the stack stops after the demo command (stdin is not a terminal, or ONCE=1)"
	fi

	step "building" "$LOGS/build.log"
	make --no-print-directory build >"$LOGS/build.log" 2>&1

	local admin_url db_url
	step "starting PostgreSQL" "$(scripts/devdb.sh dir)/server.log"
	admin_url="$(scripts/devdb.sh start)"
	if [[ -z "$(scripts/devdb.sh psql -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]]; then
		scripts/devdb.sh psql -d postgres -qc "CREATE DATABASE \"$DB_NAME\""
	fi
	db_url="${admin_url/\/postgres\?//$DB_NAME?}"
	export EXECQ_DATABASE_URL="$db_url"

	step "migrating $db_url" "$LOGS/migrate.log"
	"$COORDINATOR" migrate >>"$LOGS/migrate.log" 2>&1

	step "starting the coordinator on $LISTEN (log: $LOGS/coordinator.log)" "$LOGS/coordinator.log"
	# JSON logs whatever EXECQ_LOG_FORMAT says: this script reads them with jq.
	start_daemon coordinator "$COORDINATOR" serve --listen "$LISTEN" --database-url "$db_url" --log-format json
	local i
	for ((i = 0; ; i++)); do
		if curl -sf -o /dev/null --max-time 2 "$API/readyz"; then break; fi
		our_pid "$STATE/coordinator.pid" "$COORDINATOR" >/dev/null || die "the coordinator exited"
		((i < 300)) || die "the coordinator was not ready after 30s"
		sleep 0.1
	done

	step "the demo user and this host's node" "$LOGS/cli.log" "$LOGS/coordinator.log"
	local user node node_token user_name node_name grant
	# Reuse the identities of an earlier run while the database still knows
	# their tokens, so re-runs do not pile up users and nodes. The node probe
	# reports an empty inventory, which is true now (the old containers were
	# deleted) and clears them from the coordinator's view. The demo user is
	# not an admin: a user whose token answers the admin-only grants route
	# (an earlier version made it one) is replaced.
	USER_TOKEN="$(saved EXECQ_TOKEN)"
	user_name="$(saved EXECQ_USER_NAME)"
	node_token="$(saved EXECQ_NODE_TOKEN)"
	node_name="$(saved EXECQ_NODE_NAME)"
	if [[ -n $USER_TOKEN && -n $user_name ]] && api GET /api/v1/grants && [[ $HTTP_CODE == 404 ]] &&
		api GET /api/v1/containers && [[ $HTTP_CODE == 200 ]]; then
		log "reusing the demo user of an earlier run"
	else
		user="$(create_identity users demo)"
		USER_TOKEN="$(jq -r .token <<<"$user")"
		user_name="$(jq -r .name <<<"$user")"
		log "created user $user_name ($(jq -r .user_id <<<"$user"))"
	fi
	if [[ -n $node_token && -n $node_name ]] && [[ "$(curl -sS -o /dev/null -w '%{http_code}' -X PUT \
		-H "Authorization: Bearer $node_token" -H 'Content-Type: application/json' \
		--data '{"containers":[]}' "$API/agent/v1/containers")" == 200 ]]; then
		log "reusing the node of an earlier run"
	else
		node="$(create_identity nodes "$HOSTNAME")"
		node_token="$(jq -r .token <<<"$node")"
		node_name="$(jq -r .name <<<"$node")"
		log "created node $node_name ($(jq -r .node_id <<<"$node"))"
	fi
	# The demo user may use this node's containers, and only those: a grant
	# on the "node" label, which the coordinator sets from the node's
	# identity. Adding it again on a re-run answers the same grant.
	grant="$("$COORDINATOR" grants add --user "$user_name" --selector "node=$node_name" 2>>"$LOGS/cli.log")"
	log "granted $user_name the containers of node $node_name (grant $(jq -r .grant_id <<<"$grant"))"

	local c1 c2
	c1="$(new_uuid)" c2="$(new_uuid)"
	step "creating two busybox containers (runc root $RUNC_ROOT)" \
		"$LOGS/container-$c1.log" "$LOGS/container-$c2.log"
	create_container "$c1" execq-demo-1
	create_container "$c2" execq-demo-2
	runc --root "$RUNC_ROOT" list

	# The token is a credential: readable by root only.
	(
		umask 077
		cat >"$DEV/demo.env" <<EOT
# Written by scripts/run.sh: source it to talk to the local stack.
EXECQ_API=$API
EXECQ_SERVER=$API
EXECQ_TOKEN=$USER_TOKEN
EXECQ_USER_NAME=$user_name
EXECQ_NODE_TOKEN=$node_token
EXECQ_NODE_NAME=$node_name
EXECQ_CONTAINER_1=$c1
EXECQ_CONTAINER_2=$c2
EOT
	)

	step "starting the agent (log: $LOGS/agent.log)" "$LOGS/agent.log"
	EXECQ_AGENT_TOKEN="$node_token" start_daemon agent \
		"$AGENT" --coordinator "$API" --runc-root "$RUNC_ROOT" \
		--grace "${AGENT_GRACE}s" --kill-after "${AGENT_KILL_AFTER}s" --log-format json

	step "submitting a command to container $c1" "$LOGS/agent.log" "$LOGS/coordinator.log"
	local body id
	# Until the agent's first inventory report the coordinator does not know
	# the container and answers 404.
	for ((i = 0; ; i++)); do
		api POST "/api/v1/containers/$c1/commands" "$DEMO_COMMAND"
		body="$RESPONSE"
		if [[ $HTTP_CODE == 2* ]]; then break; fi
		our_pid "$STATE/agent.pid" "$AGENT" >/dev/null || die "the agent exited"
		if [[ $HTTP_CODE != 404 ]] || ((i >= 60)); then
			die "submit answered HTTP $HTTP_CODE: $body"
		fi
		sleep 0.5
	done
	id="$(jq -r .id <<<"$body")"
	jq . <<<"$body"

	step "waiting for command $id" "$LOGS/agent.log" "$LOGS/coordinator.log"
	for ((i = 0; ; i++)); do
		api GET "/api/v1/commands/$id"
		body="$RESPONSE"
		DEMO_STATUS="$(jq -r .status <<<"$body" 2>/dev/null || echo "?")"
		case "$DEMO_STATUS" in succeeded | failed | cancelled) break ;; esac
		((i < 120)) || die "command $id still $DEMO_STATUS after 60s (last answer: HTTP $HTTP_CODE $body)"
		sleep 0.5
	done
	jq . <<<"$body"
	if [[ $DEMO_STATUS != succeeded ]]; then
		die "the demo command ended $DEMO_STATUS, not succeeded"
	fi
	UP=1

	if ((ONCE)); then
		# cleanup (the EXIT trap) stops the stack and sets the exit status.
		exit 0
	fi

	step "the stack is up" "$LOGS/coordinator.log" "$LOGS/agent.log"
	cat <<EOT
Coordinator  $API  (log $LOGS/coordinator.log)
Agent        node "$HOSTNAME" (log $LOGS/agent.log)
Containers   $c1  $c2
Credentials  $DEV/demo.env

Try it with the execq command line (paste into another shell):

  export EXECQ_SERVER=$API EXECQ_TOKEN=$USER_TOKEN
  alias execq=$ROOT/bin/execq

  execq containers
  execq exec execq-demo-2 -- ls -l /          # output live, exits with the program's status
  execq exec execq-demo-2 -- sh -c 'echo out; echo err >&2; exit 7'; echo "exit status \$?"
  execq exec execq-demo-1 -- sh -c 'for i in 1 2 3 4 5; do echo \$i; sleep 1; done'
  execq exec execq-demo-1 -- sleep 600        # Ctrl-C cancels it
  execq get $id
  execq logs $id
  execq ls

  curl -sS $API/metrics | grep ^execq_

  # $user_name is not an admin: it may use the containers its grants select
  # (here node=$node_name). Grants are managed with the CLI (or, as an admin,
  # /api/v1/grants):
  EXECQ_DATABASE_URL='$EXECQ_DATABASE_URL' $COORDINATOR grants list

Press Ctrl-C to stop the agent, the coordinator and the containers (a running
command gets ${AGENT_GRACE}s to finish).
EOT
	while our_pid "$STATE/coordinator.pid" "$COORDINATOR" >/dev/null &&
		our_pid "$STATE/agent.pid" "$AGENT" >/dev/null; do
		# Backgrounded so the INT trap runs at once instead of after the
		# sleep; cleanup kills it (an asynchronous command ignores SIGINT).
		sleep 1 &
		SLEEPER=$!
		wait "$SLEEPER" || true
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
	UP=0
	die "the coordinator or the agent exited"
}

# once_wanted says whether this run stops after the demo command:
# EXECQ_RUN_ONCE (make run ONCE=…) decides when set, else a stdin that is not
# a terminal does, since nobody could press Ctrl-C there.
once_wanted() {
	case "${EXECQ_RUN_ONCE:-}" in
	1 | true | yes) return 0 ;;
	0 | false | no) return 1 ;;
	"") [[ ! -t 0 ]] ;;
	*) die "EXECQ_RUN_ONCE (ONCE=) must be 1 or 0, not \"$EXECQ_RUN_ONCE\"" ;;
	esac
}

main() {
	trap 'on_err "$BASH_COMMAND" "$LINENO"' ERR
	case "${1:-}" in
	"")
		if once_wanted; then ONCE=1; fi
		up
		;;
	--once)
		ONCE=1
		up
		;;
	--stop)
		[[ $EUID -eq 0 ]] || die "needs root"
		stop_stack
		;;
	*) die "usage: $0 [--once | --stop]" ;;
	esac
}

# Sourcing the script (for tests of its functions) does not run it.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi
