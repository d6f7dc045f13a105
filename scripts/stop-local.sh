#!/usr/bin/env bash
# Stops what scripts/run-local.sh started, and only that: the gateway whose pid is in
# .local/gateway.pid, then the ClickHouse whose pid is in .local/clickhouse/pid. A recorded pid is
# signalled only while it is still that program; a ClickHouse that run-local.sh merely reused is
# left alone. The data in .local/ stays.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly ROOT=$PWD
readonly LOCAL=$ROOT/.local
readonly CH_DIR=$LOCAL/clickhouse

step() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }

# Stops the process recorded in pid_file if its command line contains `text`: SIGTERM, then up to
# `timeout` seconds for it to exit, then SIGKILL.
stop_recorded() {
    local what=$1 pid_file=$2 text=$3 timeout=$4 pid
    if [[ ! -f "$pid_file" ]]; then
        step "$what: no ${pid_file#"$ROOT"/}, nothing to stop"
        return 0
    fi
    pid=$(tr -dc '0-9' <"$pid_file")
    if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
        step "$what: not running (removing the stale ${pid_file#"$ROOT"/})"
        rm -f "$pid_file"
        return 0
    fi
    if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$text"; then
        warn "$what: pid $pid is no longer the process run-local.sh started; leaving it alone"
        rm -f "$pid_file"
        return 0
    fi
    step "$what: stopping pid $pid (SIGTERM)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((timeout * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$what: pid $pid still runs after ${timeout} s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
    step "$what: stopped"
}

# The gateway first, so it can hand its current batch to ClickHouse; its grace period is 20 s.
grace=${HOOKHOUSE_SHUTDOWN_GRACE_SECS:-20}
[[ "$grace" =~ ^[0-9]{1,5}$ ]] || grace=20
stop_recorded gateway "$LOCAL/gateway.pid" hookhouse "$((10#$grace + 10))"
stop_recorded ClickHouse "$CH_DIR/pid" "$CH_DIR/config.xml" 60
