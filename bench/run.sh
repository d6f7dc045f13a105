#!/usr/bin/env bash
# bench/run.sh: hookhouse's benchmark, in one command.
#
# It builds the release binaries, starts a private ClickHouse, the gateway (default durable
# settings: HOOKHOUSE_FSYNC=always) and `bare` (an actix-web endpoint that only answers: the
# baseline), all on 127.0.0.1 and free ports, in a temporary folder. Then, in phases:
#
#   1. throughput  wrk, 64 connections, 1 KiB JSON body, gateway and bare alternating A B A B;
#                  accepted (200) requests/s of each and their ratio; latency at full load; rows/s
#                  into ClickHouse while the gateway is under load.
#   2. fixed rate  oha, open loop at half the gateway's measured max, with latency correction
#                  (no coordinated omission); latency of both; landing lag of the gateway.
#   3. backlog     ClickHouse stopped, BENCH_BACKLOG requests sent, ClickHouse started again;
#                  time until every row is queryable; rows/s.
#   4. big backlog the same with BENCH_BIG_BACKLOG requests (opt-in: 10,000,000 is ~12 GB of log).
#   5. signed      the same gateway, a pipeline verifying GitHub signatures against one that does
#                  not, alternating A B, both sent GitHub's headers with a fresh delivery id each;
#                  the ratio of accepted requests/s (target: signed at least 0.9x unsigned).
#   6. notifications the same gateway and load pipeline, alternating A B: A with no active
#                  subscription, B with three on the load pipeline (events `*`): two live
#                  receivers (`bare`, 200 at once) and a dead one (accepts, never answers); the
#                  ratio of accepted requests/s (target: B at least 0.95x A). Fails if B delivered
#                  no notification, or if A delivered any.
#
# Peak RSS of the gateway is taken in each phase (VmHWM, reset between phases). The summary is
# printed and written to bench/results/latest.md, the raw numbers to bench/results/latest.json.
#
# Settings (environment):
#   BENCH_SECONDS=10         length of each load run
#   BENCH_ROUNDS=2           A B rounds in phase 1
#   BENCH_CONNECTIONS=64     connections of the load generator
#   BENCH_BACKLOG=1000000    requests written while ClickHouse is down (0 skips phase 3)
#   BENCH_BIG_BACKLOG=0      the same, larger, to see RSS with a big log (0 skips phase 4)
#   BENCH_LAG_RATE=20        requests/s of the landing-lag sampler
#   BENCH_TMPDIR=$TMPDIR     where the temporary folder goes (must not be tmpfs: fsync is measured)
#   BENCH_KEEP=0             1 keeps the temporary folder (logs, data); a failed run always keeps it
#   BENCH_PHASES=all         the phases to run, comma-separated: throughput, fixed-rate, backlog,
#                            big-backlog, signed, notifications (fixed-rate needs throughput)
#   CARGO_TARGET_DIR         honoured for the build
#
# Needs: cargo, python3, clickhouse-server, wrk and oha; the missing ones it installs (apt-get for
# wrk and clickhouse-server, `cargo install oha` into bench/.tools, which takes a few minutes once).

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
HELPER=(python3 "$BENCH_DIR/bench.py")

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_ROUNDS=${BENCH_ROUNDS:-2}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-64}
BENCH_BACKLOG=${BENCH_BACKLOG:-1000000}
BENCH_BIG_BACKLOG=${BENCH_BIG_BACKLOG:-0}
BENCH_LAG_RATE=${BENCH_LAG_RATE:-20}
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
BENCH_KEEP=${BENCH_KEEP:-0}
ALL_PHASES=throughput,fixed-rate,backlog,big-backlog,signed,notifications
BENCH_PHASES=${BENCH_PHASES:-all}
[[ "$BENCH_PHASES" == all ]] && BENCH_PHASES=$ALL_PHASES
OHA_VERSION=${OHA_VERSION:-}   # empty: the newest that `cargo install` finds

NPROC=$(nproc)
WRK_THREADS=$NPROC
DB=hookhouse
# Every accepted request lands in `events` or `rejected`: the two together are what is queryable.
LANDED_SQL="SELECT (SELECT count() FROM $DB.events) + (SELECT count() FROM $DB.rejected)"

# phase_on NAME: whether BENCH_PHASES asks for phase NAME.
phase_on() { [[ ",$BENCH_PHASES," == *",$1,"* ]]; }

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

# --- processes: everything we start is remembered by pid and stopped by pid on exit --------------

STARTED_PIDS=()

# spawn VAR LOGFILE COMMAND...: start COMMAND in the background, its pid in $VAR.
spawn() {
    local var=$1 logfile=$2
    shift 2
    "$@" >"$logfile" 2>&1 &
    local pid=$!
    STARTED_PIDS+=("$pid")
    printf -v "$var" '%s' "$pid"
}

# stop_pid PID [GRACE_SECONDS]: SIGTERM, then SIGKILL if it has not exited within the grace.
stop_pid() {
    local pid=$1 grace=${2:-10} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid" 5
    done
    if [[ -n "${WORK:-}" && -d "$WORK" ]]; then
        # A failure keeps them for a look; an interruption (130) does not.
        if [[ "$BENCH_KEEP" == 1 || $status -eq 1 ]]; then
            log "kept $WORK (logs and data) for a look"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools ----------------------------------------------------------------------------------------

install_tools() {
    command -v python3 >/dev/null || fail "python3 is needed"
    command -v cargo >/dev/null || fail "cargo is needed"
    if ! command -v wrk >/dev/null; then
        log "installing wrk (Debian package)"
        apt-get update -qq && apt-get install -y -qq wrk >/dev/null
    fi
    CLICKHOUSE=$(clickhouse_binary) || {
        log "installing clickhouse-server (Debian package)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server >/dev/null
        CLICKHOUSE=$(clickhouse_binary) || fail "no clickhouse-server after installing it"
    }
    # oha is the open-loop generator (fixed rate with latency correction); wrk has no fixed rate.
    # Built once from crates.io into bench/.tools, which is ignored by git.
    OHA="$BENCH_DIR/.tools/bin/oha"
    if [[ ! -x "$OHA" ]]; then
        log "installing oha into bench/.tools (cargo install, a few minutes, once)"
        # Its own temporary target dir, not the project's: nothing of it is left behind.
        env -u CARGO_TARGET_DIR cargo install oha --locked --quiet --root "$BENCH_DIR/.tools" \
            ${OHA_VERSION:+--version "$OHA_VERSION"}
    fi
}

clickhouse_binary() {
    local candidate
    for candidate in /usr/sbin/clickhouse-server /usr/bin/clickhouse-server; do
        [[ -x "$candidate" ]] && { echo "$candidate"; return 0; }
    done
    command -v clickhouse-server
}

build() {
    log "building release binaries"
    (cd "$REPO" && cargo build --release --bins --quiet)
    local target=${CARGO_TARGET_DIR:-$REPO/target}
    HOOKHOUSE="$target/release/hookhouse"
    BARE="$target/release/bare"
    [[ -x "$HOOKHOUSE" && -x "$BARE" ]] || fail "release binaries not found in $target/release"
}

make_workdir() {
    mkdir -p "$BENCH_TMPDIR"
    WORK=$(mktemp -d "$BENCH_TMPDIR/hookhouse-bench.XXXXXX")
    RES="$WORK/results"
    mkdir -p "$RES" "$WORK/ch" "$WORK/data"
    # fsync on tmpfs costs nothing: the figure would not be the durable path's.
    local fs
    fs=$(stat -f -c %T "$WORK")
    [[ "$fs" == tmpfs ]] && log "WARNING: $WORK is on tmpfs; fsync costs nothing there. Set BENCH_TMPDIR to a disk."
    log "working in $WORK ($fs)"
}

# --- ClickHouse: a private server on free ports, started and stopped by its pid -------------------

write_clickhouse_config() {
    CH_HTTP_PORT=$("${HELPER[@]}" free-port)
    CH_TCP_PORT=$("${HELPER[@]}" free-port)
    CH_URL="http://127.0.0.1:$CH_HTTP_PORT"
    "$REPO/scripts/clickhouse-config.sh" "$WORK/ch" "$CH_HTTP_PORT" "$CH_TCP_PORT"
}

launch_clickhouse() {
    pushd "$WORK/ch" >/dev/null
    spawn CH_PID "$WORK/ch/stdout.log" "$CLICKHOUSE" --config-file="$WORK/ch/config.xml"
    popd >/dev/null
    "${HELPER[@]}" wait-http "$CH_URL/ping" 60 || fail "ClickHouse did not start; see $WORK/ch/log/error.log"
}

# An outage is abrupt: SIGKILL, as a crash or a pulled cable would be. What ClickHouse confirmed
# is already in its parts; the gateway must retry the rest.
kill_clickhouse() {
    kill -KILL "$CH_PID" 2>/dev/null || true
    wait "$CH_PID" 2>/dev/null || true
    # The drain figure means something only if ClickHouse really was gone.
    "${HELPER[@]}" ch "$CH_URL" "SELECT 1" >/dev/null 2>&1 && fail "ClickHouse still answers after SIGKILL to $CH_PID"
    return 0
}

# --- the gateway and the baseline -----------------------------------------------------------------

start_gateway() {
    GW_PORT=$("${HELPER[@]}" free-port)
    GW_URL="http://127.0.0.1:$GW_PORT"
    # The backlog phases keep everything on disk: the budget must hold the biggest one (a record
    # is the 1 KiB body plus ~130 bytes), with room to spare. Only the budget differs from the
    # defaults; it is not on the request path.
    local biggest=$((BENCH_BACKLOG > BENCH_BIG_BACKLOG ? BENCH_BACKLOG : BENCH_BIG_BACKLOG))
    local budget=$((biggest * 1400 + 2 * 1024 * 1024 * 1024))
    ((budget < 8589934592)) && budget=8589934592
    # env -i: only these settings, whatever the caller's shell holds.
    GATEWAY_ENV=(
        HOOKHOUSE_LISTEN="127.0.0.1:$GW_PORT"
        HOOKHOUSE_CLICKHOUSE_URL="$CH_URL"
        HOOKHOUSE_DATA_DIR="$WORK/data"
        HOOKHOUSE_FSYNC=always
        HOOKHOUSE_RATE_LIMIT_PER_KEY=0
        HOOKHOUSE_WAL_MAX_BYTES="$budget"
        HOOKHOUSE_SECRETS_KEY_FILE="$WORK/secrets.key"
    )
    spawn GW_PID "$WORK/gateway.log" env -i PATH="$PATH" "${GATEWAY_ENV[@]}" "$HOOKHOUSE" serve
    "${HELPER[@]}" wait-http "$GW_URL/readyz" 60 || fail "the gateway is not ready; see $WORK/gateway.log"
}

# wait_listen PORT LOGFILE: until something accepts connections on 127.0.0.1:PORT (10 s at most).
wait_listen() {
    local port=$1 logfile=$2 i
    for ((i = 0; i < 100; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    fail "nothing listens on $port; see $logfile"
}

start_bare() {
    BARE_PORT=$("${HELPER[@]}" free-port)
    BARE_URL="http://127.0.0.1:$BARE_PORT"
    spawn BARE_PID "$WORK/bare.log" "$BARE" --listen "127.0.0.1:$BARE_PORT"
    wait_listen "$BARE_PORT" "$WORK/bare.log"
}

# admin ARGS...: a `hookhouse` command against our ClickHouse.
admin() {
    env -i PATH="$PATH" HOOKHOUSE_CLICKHOUSE_URL="$CH_URL" HOOKHOUSE_SECRETS_KEY_FILE="$WORK/secrets.key" \
        "$HOOKHOUSE" "$@" 2>>"$WORK/admin.log"
}

# Three pipelines: one for the load, one of its own for the landing-lag sampler, and one that
# verifies GitHub signatures (phase 5).
create_credentials() {
    python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())' >"$WORK/secrets.key"
    admin migrate >/dev/null
    local name json
    for name in load lag signed; do
        json=$(admin pipeline create --name "bench-$name" --json)
        local pipeline
        pipeline=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["pipeline_id"])' <<<"$json")
        json=$(admin token create --name "bench-$name" --pipeline "$pipeline" --json)
        local query
        query=$(python3 -c 'import json,sys; t=json.load(sys.stdin); print("key=" + t["key"] + "&token=" + t["token"])' <<<"$json")
        printf -v "PIPELINE_${name^^}" '%s' "$pipeline"
        printf -v "QUERY_${name^^}" '%s' "/?pipeline_id=$pipeline&$query"
    done
    printf '%s' "bench-$RANDOM-$RANDOM" >"$WORK/github.secret"
    admin pipeline verify --id "$PIPELINE_SIGNED" --scheme github --secret-file "$WORK/github.secret" >/dev/null
}

make_body() {
    BODY="$WORK/body.json"
    # A real webhook (shared/ sits beside the repo), trimmed and padded to exactly 1024 bytes.
    BODY_SOURCE=$("${HELPER[@]}" body "$REPO/../shared/payloads/github" "$BODY" 1024 2>/dev/null) ||
        { printf '{"bench_padding":"%s"}' "$(head -c 1003 /dev/zero | tr '\0' x)" >"$BODY"; BODY_SOURCE=synthetic; }
    log "body: $(wc -c <"$BODY") bytes of JSON, from $BODY_SOURCE"
}

# --- measurements ---------------------------------------------------------------------------------

accepted_total() { "${HELPER[@]}" metric "$GW_URL/metrics" hookhouse_http_requests_total code=200; }
landed_total() { "${HELPER[@]}" ch "$CH_URL" "$LANDED_SQL"; }

# Waits until every request the gateway accepted is queryable, so a phase starts on a quiet
# machine and its rows are not counted in the next one.
wait_landed() {
    local expected result
    expected=$(accepted_total)
    result=$("${HELPER[@]}" wait-count "$CH_URL" "$LANDED_SQL" "$expected" 300)
    [[ "$result" == *'"reached": true'* ]] || fail "rows did not land within 300 s: $result"
}

# VmHWM is the process's peak RSS; writing 5 to clear_refs resets it to the current RSS, so each
# phase gets its own peak.
rss_reset() { echo 5 >"/proc/$GW_PID/clear_refs" 2>/dev/null || log "cannot reset VmHWM: peaks are since start"; }
rss_record() { "${HELPER[@]}" rss "$GW_PID" >"$RES/rss-$1.json"; }

# Series that explain a gateway round: group commit (fsyncs, records per fsync, fsync time) and
# batches into ClickHouse.
COMMIT_SERIES=(
    hookhouse_wal_group_records_count hookhouse_wal_group_records_sum
    hookhouse_wal_fsync_seconds_sum hookhouse_batch_rows_count hookhouse_batch_rows_sum
    hookhouse_insert_seconds_sum
)

# cpu_snapshot FILE: CPU used so far by each of our servers and by the machine.
cpu_snapshot() {
    "${HELPER[@]}" cpu gateway="$GW_PID" bare="$BARE_PID" clickhouse="$CH_PID" >"$1"
}

# run_wrk TARGET ROUND URL: a closed-loop run; its numbers go to results/wrk-TARGET-ROUND.json,
# the cores each process used to results/cpu-TARGET-ROUND.json, and for the gateway the
# group-commit and batch counters to results/commit-gateway-ROUND.json.
run_wrk() {
    local target=$1 round=$2 url=$3 out="$WORK/wrk-$1-$2.txt"
    cpu_snapshot "$WORK/cpu-before.json"
    "${HELPER[@]}" snap "$GW_URL/metrics" "${COMMIT_SERIES[@]}" >"$WORK/commit-before.json"
    BENCH_BODY="$BODY" BENCH_GITHUB="${BENCH_GITHUB:-0}" BENCH_SIGNATURE="${BENCH_SIGNATURE:-}" \
        BENCH_RUN_TAG="$target-$round-$RANDOM$RANDOM" \
        timeout $((BENCH_SECONDS + 60)) \
        wrk -t"$WRK_THREADS" -c"$BENCH_CONNECTIONS" -d"${BENCH_SECONDS}s" --timeout 10s --latency \
        -s "$BENCH_DIR/post.lua" "$url" >"$out"
    cpu_snapshot "$WORK/cpu-after.json"
    [[ "$round" == warmup ]] && return 0
    grep '^BENCH_JSON ' "$out" | cut -d' ' -f2- >"$RES/wrk-$target-$round.json"
    "${HELPER[@]}" cpu-delta "$WORK/cpu-before.json" "$WORK/cpu-after.json" >"$RES/cpu-$target-$round.json"
    if [[ "$target" == gateway ]]; then
        "${HELPER[@]}" snap "$GW_URL/metrics" "${COMMIT_SERIES[@]}" >"$WORK/commit-after.json"
        python3 -c 'import json,sys; b,a=(json.load(open(p)) for p in sys.argv[1:]); print(json.dumps({k: a[k]-b[k] for k in a}))' \
            "$WORK/commit-before.json" "$WORK/commit-after.json" >"$RES/commit-gateway-$round.json"
    fi
    log "$target round $round: $(grep 'Requests/sec' "$out" | tr -s ' ')"
}

# run_oha_rate TARGET URL RATE: an open-loop run at RATE requests/s, corrected for coordinated
# omission (latency counted from when each request was due, not when it was sent).
run_oha_rate() {
    local target=$1 url=$2 rate=$3 raw="$WORK/oha-rate-$1.json"
    timeout $((BENCH_SECONDS + 60)) "$OHA" --no-tui --output-format json -z "${BENCH_SECONDS}s" \
        -c "$BENCH_CONNECTIONS" -q "$rate" --latency-correction \
        -m POST -T application/json -D "$BODY" "$url" >"$raw"
    "${HELPER[@]}" oha "$raw" >"$RES/rate-$target.json"
    log "$target at $rate req/s: $(cat "$RES/rate-$target.json")"
}

phase_throughput() {
    log "phase 1: throughput, $BENCH_ROUNDS rounds of ${BENCH_SECONDS}s each, gateway and bare alternating"
    # Warm-up: first connections, page cache, ClickHouse's first parts; not counted.
    local saved=$BENCH_SECONDS
    BENCH_SECONDS=2
    run_wrk gateway warmup "$GW_URL$QUERY_LOAD"
    run_wrk bare warmup "$BARE_URL$QUERY_LOAD"
    BENCH_SECONDS=$saved
    local round before after started
    rss_reset
    for ((round = 1; round <= BENCH_ROUNDS; round++)); do
        wait_landed
        before=$(landed_total)
        started=$(date +%s.%N)
        run_wrk gateway "$round" "$GW_URL$QUERY_LOAD"
        after=$(landed_total)
        # Rows that became queryable while the gateway was under full load.
        python3 -c 'import json,sys,time; b,a,t=int(sys.argv[1]),int(sys.argv[2]),float(sys.argv[3]); print(json.dumps({"rows":a-b,"seconds":time.time()-t}))' \
            "$before" "$after" "$started" >"$RES/landing-gateway-$round.json"
        wait_landed
        run_wrk bare "$round" "$BARE_URL$QUERY_LOAD"
    done
    rss_record full-load
}

phase_signed() {
    log "phase 5: signed senders, $BENCH_ROUNDS rounds of ${BENCH_SECONDS}s each, unsigned and signed pipelines alternating"
    local signature
    signature=$(python3 -c 'import hashlib,hmac,sys; print("sha256=" + hmac.new(open(sys.argv[1],"rb").read(), open(sys.argv[2],"rb").read(), hashlib.sha256).hexdigest())' \
        "$WORK/github.secret" "$BODY")
    local round saved=$BENCH_SECONDS
    BENCH_SECONDS=2
    BENCH_GITHUB=1 BENCH_SIGNATURE="$signature" run_wrk signed warmup "$GW_URL$QUERY_SIGNED"
    BENCH_SECONDS=$saved
    # The check must have passed: a 401 is not a signed request accepted.
    [[ $(grep -c 'Non-2xx' "$WORK/wrk-signed-warmup.txt") == 0 ]] || fail "the signed pipeline refused its requests; see $WORK/wrk-signed-warmup.txt"
    rss_reset
    for ((round = 1; round <= BENCH_ROUNDS; round++)); do
        wait_landed
        BENCH_GITHUB=1 run_wrk unsigned "$round" "$GW_URL$QUERY_LOAD"
        wait_landed
        BENCH_GITHUB=1 BENCH_SIGNATURE="$signature" run_wrk signed "$round" "$GW_URL$QUERY_SIGNED"
    done
    rss_record signed
    wait_landed
    # Every signed request landed in `events` (none rejected: the writer checked them again).
    local rejected
    rejected=$("${HELPER[@]}" ch "$CH_URL" "SELECT count() FROM $DB.rejected WHERE pipeline_id = $PIPELINE_SIGNED")
    [[ "$rejected" == 0 ]] || fail "$rejected signed requests landed in rejected"
}

# --- phase 6: notifications ----------------------------------------------------------------------

# The gateway reloads subscriptions every HOOKHOUSE_CREDENTIALS_REFRESH_MS (its default, 2 s: the
# bench does not set it); after a change we wait that long and a margin before measuring.
GATEWAY_REFRESH_MS=2000
NOTIFY_SETTLE=$(((GATEWAY_REFRESH_MS + 2000) / 1000))

# What the notifier did in a round (counters summed over their labels; the gauge is its value).
NOTIFY_SERIES=(
    hookhouse_notifications_sent_total hookhouse_notifications_failed_total
    hookhouse_notification_retries_total hookhouse_notifications_dropped_total
    hookhouse_notifications_pending
)

# set_subscriptions disable|enable: every subscription of phase 6, then time for the gateway to
# have reloaded them.
set_subscriptions() {
    local id
    for id in "${SUBSCRIPTIONS[@]}"; do
        admin subscription "$1" --id "$id" >/dev/null || fail "subscription $1 --id $id failed; see $WORK/admin.log"
    done
    sleep "$NOTIFY_SETTLE"
}

# notify_round TARGET ROUND: a run_wrk on the load pipeline, with what the notifier did during it
# in results/notify-TARGET-ROUND.json.
notify_round() {
    local target=$1 round=$2
    "${HELPER[@]}" snap "$GW_URL/metrics" "${NOTIFY_SERIES[@]}" >"$WORK/notify-before.json"
    run_wrk "$target" "$round" "$GW_URL$QUERY_LOAD"
    "${HELPER[@]}" snap "$GW_URL/metrics" "${NOTIFY_SERIES[@]}" >"$WORK/notify-after.json"
    python3 -c 'import json,sys; b,a=(json.load(open(p)) for p in sys.argv[1:]); print(json.dumps({k: a[k] if k.endswith("_pending") else a[k]-b[k] for k in a}))' \
        "$WORK/notify-before.json" "$WORK/notify-after.json" >"$RES/notify-$target-$round.json"
    log "$target round $round, notifier: $(cat "$RES/notify-$target-$round.json")"
}

# notified TARGET ROUND: notifications delivered during that round.
notified() {
    python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["hookhouse_notifications_sent_total"]))' \
        "$RES/notify-$1-$2.json"
}

phase_notifications() {
    log "phase 6: notifications, $BENCH_ROUNDS rounds of ${BENCH_SECONDS}s each, no active subscription and three (one dead) alternating"
    # Two live receivers (bare answers 200 to a POST on any path) and a dead one, on loopback.
    local live1_port live2_port dead_port live1_pid live2_pid dead_pid
    live1_port=$("${HELPER[@]}" free-port)
    live2_port=$("${HELPER[@]}" free-port)
    dead_port=$("${HELPER[@]}" free-port)
    spawn live1_pid "$WORK/receiver-live1.log" "$BARE" --listen "127.0.0.1:$live1_port"
    spawn live2_pid "$WORK/receiver-live2.log" "$BARE" --listen "127.0.0.1:$live2_port"
    # Bounded: it exits by itself well after the phase would have ended.
    spawn dead_pid "$WORK/receiver-dead.log" "${HELPER[@]}" dead-receiver "$dead_port" \
        $((BENCH_ROUNDS * 2 * (BENCH_SECONDS + NOTIFY_SETTLE + 320) + 120))
    wait_listen "$live1_port" "$WORK/receiver-live1.log"
    wait_listen "$live2_port" "$WORK/receiver-live2.log"
    wait_listen "$dead_port" "$WORK/receiver-dead.log"
    SUBSCRIPTIONS=()
    local role name port json id
    for role in live1:$live1_port live2:$live2_port dead:$dead_port; do
        port=${role#*:}
        json=$(admin subscription create --url "http://127.0.0.1:$port/hookhouse" --pipeline "$PIPELINE_LOAD" --event '*' --json) ||
            fail "subscription create failed; see $WORK/admin.log"
        id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["subscription_id"])' <<<"$json")
        SUBSCRIPTIONS+=("$id")
        name=${role%%:*}
        printf -v "SUB_${name^^}" '%s' "$id"
    done
    local round sent
    rss_reset
    for ((round = 1; round <= BENCH_ROUNDS; round++)); do
        set_subscriptions disable
        wait_landed
        notify_round unsubscribed "$round"
        sent=$(notified unsubscribed "$round")
        ((sent == 0)) || fail "round $round without active subscriptions delivered $sent notifications: the gateway did not see them disabled"
        set_subscriptions enable
        wait_landed
        notify_round subscribed "$round"
        sent=$(notified subscribed "$round")
        ((sent > 0)) || fail "round $round with three subscriptions delivered no notification; see $WORK/gateway.log"
    done
    rss_record notifications
    # Each live receiver got notifications: a 2xx of its own in notification_attempts.
    local result
    for role in live1 live2; do
        id=SUB_${role^^}
        result=$("${HELPER[@]}" wait-count "$CH_URL" \
            "SELECT count() FROM $DB.notification_attempts WHERE subscription_id = '${!id}' AND status_code BETWEEN 200 AND 299" 1 30)
        [[ "$result" == *'"reached": true'* ]] || fail "receiver $role got no notification: $result"
    done
    "${HELPER[@]}" ch "$CH_URL" "SELECT multiIf(subscription_id = '$SUB_LIVE1', 'live1', subscription_id = '$SUB_LIVE2', 'live2', 'dead') AS receiver, countIf(status_code BETWEEN 200 AND 299) AS delivered, count() AS attempts, round(quantile(0.5)(duration_ms)) AS p50_ms, max(duration_ms) AS max_ms FROM $DB.notification_attempts WHERE subscription_id IN ('$SUB_LIVE1', '$SUB_LIVE2', '$SUB_DEAD') GROUP BY receiver ORDER BY receiver FORMAT JSONEachRow" |
        python3 -c 'import json,sys; print(json.dumps({r.pop("receiver"): {k: float(v) for k, v in r.items()} for r in map(json.loads, sys.stdin)}))' >"$RES/notify-receivers.json"
    log "notification attempts by receiver: $(cat "$RES/notify-receivers.json")"
    # Off again: the dead receiver is about to go, and nothing after this phase is measured with it.
    set_subscriptions disable
    stop_pid "$dead_pid"
    stop_pid "$live2_pid"
    stop_pid "$live1_pid"
}

phase_fixed_rate() {
    # Half of the gateway's median accepted rate over the rounds above.
    FIXED_RATE=$(python3 - "$RES" <<'EOF'
import glob, json, statistics, sys
rates = []
for path in glob.glob(f"{sys.argv[1]}/wrk-gateway-*.json"):
    w = json.load(open(path))
    rates.append((w["requests"] - w["non_2xx"]) / (w["duration_us"] / 1e6))
print(max(1, int(statistics.median(rates) / 2)))
EOF
)
    log "phase 2: fixed rate of $FIXED_RATE req/s (half the gateway's max), with the landing-lag sampler"
    wait_landed
    "${HELPER[@]}" hist "$GW_URL/metrics" hookhouse_landing_lag_seconds >"$WORK/lag-before.json"
    rss_reset
    local sampler
    spawn sampler "$RES/lag-sampler.json" "${HELPER[@]}" lag-sampler gateway="$GW_URL$QUERY_LAG" \
        ch="$CH_URL" db="$DB" pipeline="$PIPELINE_LAG" body="$BODY" seconds="$BENCH_SECONDS" \
        rate="$BENCH_LAG_RATE" poll=0.05 give_up=60
    run_oha_rate gateway "$GW_URL$QUERY_LOAD" "$FIXED_RATE"
    wait "$sampler" || fail "the landing-lag sampler failed: $(cat "$RES/lag-sampler.json")"
    rss_record fixed-rate
    wait_landed
    "${HELPER[@]}" hist "$GW_URL/metrics" hookhouse_landing_lag_seconds >"$WORK/lag-after.json"
    "${HELPER[@]}" hist-delta "$WORK/lag-before.json" "$WORK/lag-after.json" >"$RES/lag-histogram.json"
    log "landing lag: $(cat "$RES/lag-sampler.json")"
    run_oha_rate bare "$BARE_URL$QUERY_LOAD" "$FIXED_RATE"
}

# phase_backlog NAME N: N requests while ClickHouse is down, then the time to land them all.
phase_backlog() {
    local name=$1 n=$2
    if ((n <= 0)); then
        echo '{"skipped": "set to 0"}' >"$RES/$name.json"
        return 0
    fi
    # The log holds ~1.15 KiB per request; the disk must hold it twice over to be safe.
    local need=$((n * 1200 * 2)) avail
    avail=$(($(df -Pk "$WORK" | awk 'NR==2 {print $4}') * 1024))
    if ((avail < need)); then
        log "skipping $name: needs ~$((need >> 30)) GiB free, $((avail >> 30)) GiB available"
        printf '{"skipped": "not enough disk: %d GiB needed, %d GiB free"}\n' $((need >> 30)) $((avail >> 30)) >"$RES/$name.json"
        return 0
    fi
    log "phase: $name of $n requests with ClickHouse stopped"
    wait_landed
    local accepted_before landed_before
    accepted_before=$(accepted_total)
    landed_before=$(landed_total)
    kill_clickhouse
    rss_reset
    local started loaded raw="$WORK/oha-$name.json"
    started=$(date +%s.%N)
    # Closed loop, as fast as the gateway takes them; bounded by count and, to be safe, by time.
    timeout $((n / 200 + 600)) "$OHA" --no-tui --output-format json -n "$n" -c "$BENCH_CONNECTIONS" \
        -m POST -T application/json -D "$BODY" "$GW_URL$QUERY_LOAD" >"$raw" ||
        log "oha ended early or with errors; the accepted count below is the gateway's"
    loaded=$(date +%s.%N)
    rss_record "$name-load"
    local accepted wal_bytes wal_gauge
    accepted=$(($(accepted_total) - accepted_before))
    # What is on disk, and what the gateway's gauge says (they should agree).
    wal_bytes=$(du -sb "$WORK/data" | cut -f1)
    wal_gauge=$("${HELPER[@]}" metric "$GW_URL/metrics" hookhouse_wal_bytes)
    log "$accepted accepted; the log holds $wal_bytes bytes (gauge: $wal_gauge); starting ClickHouse again"
    rss_reset
    local ch_started ch_ready drain
    ch_started=$(date +%s.%N)
    launch_clickhouse
    ch_ready=$(date +%s.%N)
    cpu_snapshot "$WORK/cpu-before.json"
    drain=$("${HELPER[@]}" drain "$CH_URL" "$LANDED_SQL" "$landed_before" $((landed_before + accepted)) $((n / 5000 + 600)))
    cpu_snapshot "$WORK/cpu-after.json"
    # Who is busy while draining: the gateway's writer or ClickHouse.
    "${HELPER[@]}" cpu-delta "$WORK/cpu-before.json" "$WORK/cpu-after.json" >"$RES/cpu-$name-drain.json"
    rss_record "$name-drain"
    python3 - "$n" "$accepted" "$started" "$loaded" "$ch_started" "$ch_ready" "$wal_bytes" "$wal_gauge" "$drain" \
        "$("${HELPER[@]}" oha "$raw" 2>/dev/null || echo null)" >"$RES/$name.json" <<'EOF'
import json, sys
n, accepted = int(sys.argv[1]), int(sys.argv[2])
started, loaded, ch_started, ch_ready = map(float, sys.argv[3:7])
wal_bytes, wal_gauge = float(sys.argv[7]), float(sys.argv[8])
drain, oha = json.loads(sys.argv[9]), json.loads(sys.argv[10])
secs = drain["seconds"]
after_first = secs - drain["first"] if drain.get("first") is not None else None
print(json.dumps({
    "n": n, "accepted": accepted, "load_seconds": loaded - started,
    "load_per_s": accepted / (loaded - started), "wal_bytes": wal_bytes,
    "wal_bytes_gauge": wal_gauge,
    "clickhouse_start_seconds": ch_ready - ch_started,
    "landed_all": drain["reached"], "drain_seconds": secs,
    "drain_rows_per_s": accepted / secs if secs and drain["reached"] else None,
    "writer_resumed_after_seconds": drain.get("first"),
    "rows_per_s_once_resumed": accepted / after_first if after_first and drain["reached"] else None,
    "load_generator": oha,
}))
EOF
    log "$name: $(cat "$RES/$name.json")"
    [[ "$drain" == *'"reached": true'* ]] || fail "$name did not land in time: $drain"
}

write_meta() {
    local commands=(
        "BENCH_BODY=body.json wrk -t$WRK_THREADS -c$BENCH_CONNECTIONS -d${BENCH_SECONDS}s --timeout 10s --latency -s bench/post.lua \$URL"
        "oha --no-tui --output-format json -z ${BENCH_SECONDS}s -c $BENCH_CONNECTIONS -q \$HALF_RATE --latency-correction -m POST -T application/json -D body.json \$URL"
        "oha --no-tui --output-format json -n \$BACKLOG -c $BENCH_CONNECTIONS -m POST -T application/json -D body.json \$GATEWAY_URL   (ClickHouse stopped)"
    )
    python3 - "$RES/meta.json" "$FIXED_RATE" "${GATEWAY_ENV[@]}" -- "${commands[@]}" <<EOF
import json, os, platform, subprocess, sys, time
out, rate = sys.argv[1], int(sys.argv[2])
rest = sys.argv[3:]
split = rest.index("--")
settings = dict(kv.split("=", 1) for kv in rest[:split])
for k in ("HOOKHOUSE_LISTEN", "HOOKHOUSE_CLICKHOUSE_URL", "HOOKHOUSE_DATA_DIR", "HOOKHOUSE_SECRETS_KEY_FILE"):
    settings[k] = "(temporary)"
settings.update({
    "BENCH_SECONDS": "$BENCH_SECONDS", "BENCH_ROUNDS": "$BENCH_ROUNDS",
    "BENCH_CONNECTIONS": "$BENCH_CONNECTIONS", "BENCH_BACKLOG": "$BENCH_BACKLOG",
    "BENCH_BIG_BACKLOG": "$BENCH_BIG_BACKLOG", "BENCH_LAG_RATE": "$BENCH_LAG_RATE",
    "BENCH_PHASES": "$BENCH_PHASES",
    "wrk threads": "$WRK_THREADS", "body": "1024 bytes from $BODY_SOURCE",
    "gateway workers": "$NPROC (one per core)", "bare workers": "$NPROC (one per core)",
})
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"
mem = int(open("/proc/meminfo").read().split()[1]) // 1024 // 1024
json.dump({
    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    "host": platform.node(), "nproc": os.cpu_count(), "mem": f"{mem} GiB",
    "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
    "commit": run("git", "-C", "$REPO", "rev-parse", "--short", "HEAD") + (" (dirty)" if run("git", "-C", "$REPO", "status", "--porcelain") else ""),
    "clickhouse_version": run("python3", "$BENCH_DIR/bench.py", "ch", "$CH_URL", "SELECT version()"),
    "wrk": run("wrk", "--version").splitlines()[0] if run("wrk", "--version") else "?",
    "oha": run("$OHA", "--version"),
    "fixed_rate": rate,
    "settings": settings,
    "commands": rest[split + 1:],
}, open(out, "w"), indent=2)
EOF
}

report() {
    mkdir -p "$BENCH_DIR/results"
    "${HELPER[@]}" report "$RES" "$BENCH_DIR/results/latest.md" "$BENCH_DIR/results/latest.json"
    log "written bench/results/latest.md and bench/results/latest.json"
}

main() {
    local phase
    for phase in ${BENCH_PHASES//,/ }; do
        [[ ",$ALL_PHASES," == *",$phase,"* ]] || fail "BENCH_PHASES: no phase $phase (phases: $ALL_PHASES)"
    done
    if phase_on fixed-rate && ! phase_on throughput; then
        fail "BENCH_PHASES: fixed-rate runs at half the rate that throughput measures; ask for both"
    fi
    install_tools
    build
    make_workdir
    write_clickhouse_config
    launch_clickhouse
    create_credentials
    start_gateway
    start_bare
    make_body
    FIXED_RATE=0
    if phase_on throughput; then phase_throughput; fi
    if phase_on fixed-rate; then phase_fixed_rate; fi
    write_meta
    if phase_on backlog; then phase_backlog backlog "$BENCH_BACKLOG"; fi
    if phase_on big-backlog; then phase_backlog big-backlog "$BENCH_BIG_BACKLOG"; fi
    if phase_on signed; then phase_signed; fi
    if phase_on notifications; then phase_notifications; fi
    report
}

main "$@"
