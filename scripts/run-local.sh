#!/usr/bin/env bash
# Runs hookhouse on this machine, from a fresh Debian to a webhook you can POST:
#
#   1. installs ClickHouse if missing (scripts/install-clickhouse.sh) and checks for cargo;
#   2. starts a private ClickHouse with its config and data in .local/clickhouse/ (or reuses the
#      one already answering on its port);
#   3. builds the gateway (cargo build --release), applies the migrations, creates a demo pipeline
#      and token (kept in .local/demo.env and reused while they are valid);
#   4. runs `hookhouse serve` (log in .local/data) in the foreground and prints a curl line to try.
#
# Ctrl-C or SIGTERM stops the gateway gracefully; ClickHouse keeps running for the next run
# (scripts/stop-local.sh stops it if this script started it; a ClickHouse it merely reused is
# left alone, and the last line says which). Everything listens on loopback only.
#
# Settings (environment):
#   HOOKHOUSE_LOCAL_CH_PORT      ClickHouse HTTP port (default 8123)
#   HOOKHOUSE_LOCAL_CH_TCP_PORT  ClickHouse native port (default: HTTP port + 877, so 9000)
#   HOOKHOUSE_LISTEN             the gateway's address (default 127.0.0.1:8080)
#   other HOOKHOUSE_* settings reach the gateway unchanged, except HOOKHOUSE_CLICKHOUSE_URL and
#   HOOKHOUSE_DATA_DIR, which this script sets.
#
# `scripts/run-local.sh --cluster` runs the same on a local cluster instead: ZooKeeper and two
# ClickHouse replicas (scripts/run-local-cluster.sh, whose header says more).
set -euo pipefail

case "${1:-}" in
    --cluster) shift && exec "$(dirname "${BASH_SOURCE[0]}")/run-local-cluster.sh" "$@" ;;
    '') ;;
    *) printf 'usage: scripts/run-local.sh [--cluster]\n' >&2 && exit 2 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly ROOT=$PWD
readonly LOCAL=$ROOT/.local
readonly CH_DIR=$LOCAL/clickhouse
readonly CH_PID_FILE=$CH_DIR/pid
readonly GW_PID_FILE=$LOCAL/gateway.pid
readonly DEMO_FILE=$LOCAL/demo.env

step() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_port() { [[ "$1" =~ ^[0-9]{1,5}$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }

# True when the pid is alive and its command line contains the given text: a recorded pid is
# acted on only while it is still the process this script started.
pid_runs() {
    local pid=$1 text=$2
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$text"
}

recorded_pid() { [[ -f "$1" ]] && tr -dc '0-9' <"$1"; }

# --- settings ---------------------------------------------------------------------------------

ch_port=${HOOKHOUSE_LOCAL_CH_PORT:-8123}
is_port "$ch_port" || die "HOOKHOUSE_LOCAL_CH_PORT must be a port number, not '$ch_port'"
ch_port=$((10#$ch_port))
ch_tcp_port=${HOOKHOUSE_LOCAL_CH_TCP_PORT:-$((ch_port + 877))}
is_port "$ch_tcp_port" || die "HOOKHOUSE_LOCAL_CH_TCP_PORT must be a port number, not '$ch_tcp_port'"
[[ "$ch_tcp_port" != "$ch_port" ]] || die "ClickHouse's HTTP and native ports must differ (both $ch_port)"
readonly ch_url=http://127.0.0.1:$ch_port

listen=${HOOKHOUSE_LISTEN:-127.0.0.1:8080}
listen_host=${listen%:*}
listen_port=${listen##*:}
if [[ "$listen" != *:* ]] || ! is_port "$listen_port"; then
    die "HOOKHOUSE_LISTEN must be HOST:PORT, not '$listen'"
fi
case "$listen_host" in
    0.0.0.0 | '') gateway_host=127.0.0.1 ;;
    '[::]') gateway_host='[::1]' ;;
    *) gateway_host=$listen_host ;;
esac
readonly gateway_url=http://$gateway_host:$listen_port
readonly database=${HOOKHOUSE_CLICKHOUSE_DATABASE:-hookhouse}

if gw_old=$(recorded_pid "$GW_PID_FILE") && pid_runs "$gw_old" hookhouse; then
    die "a gateway started by run-local.sh is already running (pid $gw_old); stop it with scripts/stop-local.sh"
fi

# --- prerequisites ----------------------------------------------------------------------------

scripts/install-clickhouse.sh

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH=$HOME/.cargo/bin:$PATH
fi
if ! command -v cargo >/dev/null 2>&1; then
    rust_version=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)
    cat >&2 <<EOF
error: cargo is not installed; hookhouse needs the Rust toolchain ${rust_version:-(stable)} or newer.
  Install it with rustup (https://rustup.rs) on a machine that can reach static.rust-lang.org:
      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
  then open a new shell (or run: . "\$HOME/.cargo/env") and run scripts/run-local.sh again.
  (Debian 12's own cargo package is older than ${rust_version:-what hookhouse needs}.)
EOF
    exit 1
fi
step "using $(cargo --version)"

if curl -sS --max-time 2 -o /dev/null "$gateway_url/" 2>/dev/null || (($? != 7)); then
    die "something already listens on $listen: stop it or choose another HOOKHOUSE_LISTEN"
fi

# --- ClickHouse -------------------------------------------------------------------------------

ch_answers() { [[ "$(curl -sS --max-time 2 "$ch_url/ping" 2>/dev/null)" == "Ok." ]]; }

write_clickhouse_config() {
    "$ROOT/scripts/clickhouse-config.sh" "$CH_DIR" "$ch_port" "$ch_tcp_port"
}

clickhouse_binary() {
    if [[ -n "${HOOKHOUSE_TEST_CLICKHOUSE:-}" ]]; then
        printf '%s\n' "$HOOKHOUSE_TEST_CLICKHOUSE"
    elif [[ -x /usr/sbin/clickhouse-server ]]; then
        printf '%s\n' /usr/sbin/clickhouse-server
    else
        command -v clickhouse-server || die "clickhouse-server not found"
    fi
}

# Waits up to 60 s for the server with this pid to answer /ping.
wait_for_clickhouse() {
    local pid=$1
    for _ in $(seq 1 600); do
        ch_answers && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            warn "ClickHouse (pid $pid) exited; the end of its logs:"
            tail -n 20 "$CH_DIR/log/error.log" "$CH_DIR/log/stderr.log" >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.1
    done
    warn "ClickHouse (pid $pid) did not answer $ch_url/ping within 60 s; see $CH_DIR/log/"
    return 1
}

ch_pid=$(recorded_pid "$CH_PID_FILE" || true)
if ch_answers; then
    if [[ -n "$ch_pid" ]] && pid_runs "$ch_pid" "$CH_DIR/config.xml"; then
        step "reusing the local ClickHouse (pid $ch_pid) at $ch_url"
    else
        step "reusing the ClickHouse already answering at $ch_url (not started by this script: stop-local.sh leaves it alone)"
    fi
elif [[ -n "$ch_pid" ]] && pid_runs "$ch_pid" "$CH_DIR/config.xml"; then
    step "the local ClickHouse (pid $ch_pid) is running; waiting for it at $ch_url"
    wait_for_clickhouse "$ch_pid" ||
        die "the local ClickHouse (pid $ch_pid) does not answer at $ch_url (it may use other ports: see $CH_DIR/config.xml); stop it with scripts/stop-local.sh"
else
    rm -f "$CH_PID_FILE"
    ch_binary=$(clickhouse_binary)
    write_clickhouse_config
    step "starting ClickHouse at $ch_url (native port $ch_tcp_port, data in ${CH_DIR#"$ROOT"/}/data)"
    # Its own session, so Ctrl-C in this terminal reaches the gateway but not ClickHouse.
    (cd "$CH_DIR" && exec setsid "$ch_binary" --config-file="$CH_DIR/config.xml") \
        </dev/null >"$CH_DIR/log/stdout.log" 2>"$CH_DIR/log/stderr.log" &
    ch_pid=$!
    printf '%s\n' "$ch_pid" >"$CH_PID_FILE"
    wait_for_clickhouse "$ch_pid" || die "could not start ClickHouse"
    # setsid forks only when started as a process group leader (job control on): then $! is not
    # the server and the pid file would be wrong.
    pid_runs "$ch_pid" "$CH_DIR/config.xml" ||
        warn "pid $ch_pid in ${CH_PID_FILE#"$ROOT"/} is not the server; stop-local.sh cannot stop it"
    step "ClickHouse is up (pid $ch_pid, recorded in ${CH_PID_FILE#"$ROOT"/})"
fi

# What becomes of ClickHouse when this script ends, said truly: stop-local.sh stops only the
# server whose pid this script recorded, and leaves a ClickHouse it merely reused alone.
clickhouse_afterwards() {
    local pid
    pid=$(recorded_pid "$CH_PID_FILE" || true)
    if [[ -n "$pid" ]] && pid_runs "$pid" "$CH_DIR/config.xml"; then
        printf 'ClickHouse keeps running at %s (pid %s); scripts/stop-local.sh stops it' "$ch_url" "$pid"
    else
        printf 'ClickHouse at %s keeps running; this script did not start it, so scripts/stop-local.sh leaves it alone' "$ch_url"
    fi
}

# --- the gateway ------------------------------------------------------------------------------

step "cargo build --release"
cargo build --release
hookhouse=${CARGO_TARGET_DIR:-target}/release/hookhouse
[[ -x "$hookhouse" ]] || die "the build did not produce $hookhouse"

export HOOKHOUSE_CLICKHOUSE_URL=$ch_url
export HOOKHOUSE_DATA_DIR=$LOCAL/data
export HOOKHOUSE_LISTEN=$listen
mkdir -p "$HOOKHOUSE_DATA_DIR"

step "hookhouse migrate"
"$hookhouse" migrate

# Prints one field of a JSON object read from standard input.
json_field() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
    else
        sed -n -E "s/.*\"$1\":(\"([^\"]*)\"|([0-9]+)).*/\2\3/p"
    fi
}

# True when the demo credentials in .local/demo.env still work on this ClickHouse: the pipeline is
# active and the key is not revoked. Needs python3 to read the lists; without it, new ones are made.
demo_is_valid() {
    [[ -f "$DEMO_FILE" ]] && command -v python3 >/dev/null 2>&1 || return 1
    local pipeline_id key token
    pipeline_id=$(sed -n 's/^PIPELINE_ID=//p' "$DEMO_FILE")
    key=$(sed -n 's/^KEY=//p' "$DEMO_FILE")
    token=$(sed -n 's/^TOKEN=//p' "$DEMO_FILE")
    [[ "$pipeline_id" =~ ^[0-9]+$ && "$key" =~ ^[0-9a-f-]{36}$ && "$token" =~ ^[A-Za-z0-9]{8,256}$ ]] || return 1
    "$hookhouse" pipeline list --json | python3 -c '
import json, sys
sys.exit(0 if any(p["pipeline_id"] == int(sys.argv[1]) and p["active"] for p in json.load(sys.stdin)) else 1)
' "$pipeline_id" || return 1
    "$hookhouse" token list --json | python3 -c '
import json, sys
sys.exit(0 if any(t["key"] == sys.argv[1] and not t["revoked"] for t in json.load(sys.stdin)) else 1)
' "$key" || return 1
    PIPELINE_ID=$pipeline_id KEY=$key TOKEN=$token
}

if demo_is_valid; then
    step "reusing the demo pipeline $PIPELINE_ID and its token (${DEMO_FILE#"$ROOT"/})"
else
    # Pipeline names are unique: a demo pipeline of an earlier run (disabled, or its token
    # revoked) keeps its name, so each new one is named after the moment it was made.
    demo_name="demo-$(date -u +%Y%m%dT%H%M%SZ)"
    step "hookhouse pipeline create --name $demo_name --json"
    created=$("$hookhouse" pipeline create --name "$demo_name" --json)
    PIPELINE_ID=$(json_field pipeline_id <<<"$created")
    [[ "$PIPELINE_ID" =~ ^[0-9]+$ ]] || die "cannot read pipeline_id from: $created"
    step "hookhouse token create --name $demo_name --pipeline $PIPELINE_ID --json"
    created=$("$hookhouse" token create --name "$demo_name" --pipeline "$PIPELINE_ID" --json)
    KEY=$(json_field key <<<"$created")
    TOKEN=$(json_field token <<<"$created")
    [[ "$KEY" =~ ^[0-9a-f-]{36}$ && "$TOKEN" =~ ^[A-Za-z0-9]{8,256}$ ]] || die "cannot read key and token from the output of token create"
    (umask 077 && printf 'PIPELINE_ID=%s\nKEY=%s\nTOKEN=%s\n' "$PIPELINE_ID" "$KEY" "$TOKEN" >"$DEMO_FILE")
    step "demo credentials saved in ${DEMO_FILE#"$ROOT"/}"
fi

gateway_pid=
stopping=false

# First Ctrl-C or SIGTERM: ask the gateway to stop (it drains its requests and current batch).
# A second one kills it; its log keeps every answered request for the next start.
# shellcheck disable=SC2317 # called by the traps below
on_signal() {
    if [[ -z "$gateway_pid" ]]; then
        exit "$1"
    elif [[ "$stopping" == true ]]; then
        warn "stopping the gateway now (SIGKILL); its log keeps every answered request"
        kill -KILL "$gateway_pid" 2>/dev/null || true
    else
        stopping=true
        step "stopping the gateway (pid $gateway_pid); Ctrl-C again to kill it at once"
        kill -TERM "$gateway_pid" 2>/dev/null || true
    fi
}

# On any exit, the gateway goes with this script; ClickHouse stays.
# shellcheck disable=SC2317 # called by the trap below
on_exit() {
    if [[ -n "$gateway_pid" ]] && kill -0 "$gateway_pid" 2>/dev/null; then
        kill -TERM "$gateway_pid" 2>/dev/null || true
        wait "$gateway_pid" 2>/dev/null || true
    fi
    if [[ -n "$gateway_pid" && "$(recorded_pid "$GW_PID_FILE" || true)" == "$gateway_pid" ]]; then
        rm -f "$GW_PID_FILE"
    fi
}
trap on_exit EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

step "hookhouse serve (listening on $listen, write-ahead log in ${HOOKHOUSE_DATA_DIR#"$ROOT"/})"
"$hookhouse" serve &
gateway_pid=$!
printf '%s\n' "$gateway_pid" >"$GW_PID_FILE"

healthy=false
for _ in $(seq 1 300); do
    if curl -fsS --max-time 2 -o /dev/null "$gateway_url/healthz" 2>/dev/null; then
        healthy=true
        break
    fi
    kill -0 "$gateway_pid" 2>/dev/null || break
    sleep 0.2
done
if [[ "$healthy" != true ]]; then
    status=0
    kill -0 "$gateway_pid" 2>/dev/null || wait "$gateway_pid" || status=$?
    die "the gateway did not answer $gateway_url/healthz (exit status $status); see its output above"
fi

cat <<EOF

hookhouse is running at $gateway_url (pid $gateway_pid). Send a webhook:

  curl -X POST "$gateway_url/?pipeline_id=$PIPELINE_ID&key=$KEY&token=$TOKEN" -H 'Content-Type: application/json' --data-binary '{"hello":"world"}'

(For a body in a file use --data-binary @file.json: plain -d @file strips its newlines.)

See the rows (they land within about a second):

  curl '$ch_url/' --data-binary 'SELECT * FROM $database.pipeline_$PIPELINE_ID'
  clickhouse-client --port $ch_tcp_port --query 'SELECT * FROM $database.pipeline_$PIPELINE_ID'

Did a request land? $hookhouse request show <__kdd_request_id>
(the binary is $hookhouse; \`cargo install --path .\` puts hookhouse on your PATH)

Ctrl-C stops the gateway. $(clickhouse_afterwards).

EOF

# Wait for the gateway; a signal interrupts `wait`, so wait again until it has really exited.
status=0
while :; do
    status=0
    wait "$gateway_pid" || status=$?
    if ((status > 128)) && kill -0 "$gateway_pid" 2>/dev/null; then
        continue
    fi
    break
done
gateway_pid_done=$gateway_pid
gateway_pid=
rm -f "$GW_PID_FILE"
step "the gateway (pid $gateway_pid_done) exited with status $status"
if ch_answers; then
    step "$(clickhouse_afterwards)"
fi
exit "$status"
