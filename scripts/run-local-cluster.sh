#!/usr/bin/env bash
# `scripts/run-local.sh --cluster`: hookhouse on a ClickHouse cluster on this machine, to try
# CONTRACT §10 by hand:
#
#   1. installs ClickHouse and ZooKeeper (Debian's packages) if missing;
#   2. starts, under .local/cluster/, a ZooKeeper and two ClickHouse nodes: one shard, two
#      replicas, cluster `hookhouse_local` (remote_servers, macros and zookeeper in each node's
#      config.d/cluster.xml);
#   3. builds the gateway, runs `migrate` with HOOKHOUSE_CLICKHOUSE_CLUSTER (replicated tables on
#      both nodes), creates a demo pipeline and token;
#   4. runs `hookhouse serve` in the foreground with HOOKHOUSE_CLICKHOUSE_URL listing both nodes,
#      and prints a curl line and how to stop a node to watch the gateway fail over.
#
# Ctrl-C stops the gateway, then both nodes, then ZooKeeper: everything this script started,
# each by its own pid. The data stays in .local/cluster/ for the next run. Loopback only.
#
# Settings (environment):
#   HOOKHOUSE_LOCAL_ZK_PORT       ZooKeeper's client port (default 2181)
#   HOOKHOUSE_LOCAL_CH_PORT       first node's HTTP port (default 8124; the second node +1);
#                                 native ports are HTTP + 877, interserver ports HTTP + 1000
#   HOOKHOUSE_LISTEN              the gateway's address (default 127.0.0.1:8080)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly ROOT=$PWD
readonly BASE=$ROOT/.local/cluster
readonly CLUSTER=hookhouse_local
readonly ZK_JAR=/usr/share/java/zookeeper.jar
readonly SLF4J_JAR=/usr/share/java/slf4j-simple.jar

step() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
is_port() { [[ "$1" =~ ^[0-9]{1,5}$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }

zk_port=${HOOKHOUSE_LOCAL_ZK_PORT:-2181}
is_port "$zk_port" || die "HOOKHOUSE_LOCAL_ZK_PORT must be a port number, not '$zk_port'"
ch_port=${HOOKHOUSE_LOCAL_CH_PORT:-8124}
is_port "$ch_port" || die "HOOKHOUSE_LOCAL_CH_PORT must be a port number, not '$ch_port'"
ch_port=$((10#$ch_port))
((ch_port + 1001 <= 65535)) || die "HOOKHOUSE_LOCAL_CH_PORT must be below 64535 (the nodes use ports up to it + 1001)"
# This script's own settings: not the gateway's (it would warn about them).
unset HOOKHOUSE_LOCAL_ZK_PORT HOOKHOUSE_LOCAL_CH_PORT
listen=${HOOKHOUSE_LISTEN:-127.0.0.1:8080}
gateway_url=http://${listen%:*}:${listen##*:}
[[ "${listen%:*}" == 0.0.0.0 ]] && gateway_url=http://127.0.0.1:${listen##*:}

http_port() { echo $((ch_port + $1)); }
tcp_port() { echo $((ch_port + $1 + 877)); }
node_url() { echo "http://127.0.0.1:$(http_port "$1")"; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in "$zk_port" "$(http_port 0)" "$(http_port 1)" "$(tcp_port 0)" "$(tcp_port 1)" \
    "$((ch_port + 1000))" "$((ch_port + 1001))" "${listen##*:}"; do
    port_busy "$port" && die "port $port is in use (another run, or another server): stop it or choose other ports"
done

scripts/install-clickhouse.sh
scripts/install-zookeeper.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo >/dev/null 2>&1 || die "cargo is not installed (see scripts/run-local.sh for how to get it)"
ch_binary=/usr/sbin/clickhouse-server
[[ -x "$ch_binary" ]] || ch_binary=$(command -v clickhouse-server) || die "clickhouse-server not found"

# --- what this script started, stopped in reverse order on exit -----------------------------

pids=()
# shellcheck disable=SC2317 # called by the trap below
stop_all() {
    local i pid
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
trap 'stop_all; step "stopped the gateway, both nodes and ZooKeeper; data kept in ${BASE#"$ROOT"/}"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- ZooKeeper ------------------------------------------------------------------------------

mkdir -p "$BASE/zookeeper/data"
cat >"$BASE/zookeeper/zoo.cfg" <<EOF
tickTime=500
initLimit=10
syncLimit=5
dataDir=$BASE/zookeeper/data
clientPort=$zk_port
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=srvr
EOF
classpath=$ZK_JAR
[[ -f "$SLF4J_JAR" ]] && classpath=$classpath:$SLF4J_JAR
step "starting ZooKeeper on 127.0.0.1:$zk_port"
(cd "$BASE/zookeeper" && exec java -Xmx256m -XX:+UseSerialGC -cp "$classpath" \
    org.apache.zookeeper.server.ZooKeeperServerMain "$BASE/zookeeper/zoo.cfg") \
    </dev/null >"$BASE/zookeeper/zookeeper.log" 2>&1 &
pids+=($!)
zk_serves() {
    local answer
    answer=$( (exec 3<>"/dev/tcp/127.0.0.1/$zk_port" && printf srvr >&3 && timeout 2 cat <&3) 2>/dev/null) || return 1
    [[ "$answer" == *"Mode: standalone"* ]]
}
for _ in $(seq 1 600); do
    zk_serves && break
    kill -0 "${pids[0]}" 2>/dev/null || die "ZooKeeper exited; see ${BASE#"$ROOT"/}/zookeeper/zookeeper.log"
    sleep 0.1
done
zk_serves || die "ZooKeeper did not answer within 60 s"

# --- two ClickHouse nodes -------------------------------------------------------------------

remote_servers="<remote_servers><$CLUSTER><shard><internal_replication>true</internal_replication>"
for n in 0 1; do
    remote_servers+="<replica><host>127.0.0.1</host><port>$(tcp_port "$n")</port></replica>"
done
remote_servers+="</shard></$CLUSTER></remote_servers>"

for n in 0 1; do
    dir=$BASE/ch$((n + 1))
    scripts/clickhouse-config.sh "$dir" "$(http_port "$n")" "$(tcp_port "$n")"
    mkdir -p "$dir/config.d"
    cat >"$dir/config.d/cluster.xml" <<EOF
<!-- Written by scripts/run-local-cluster.sh; edits are lost on the next start. -->
<yandex>
  $remote_servers
  <zookeeper><node><host>127.0.0.1</host><port>$zk_port</port></node><session_timeout_ms>5000</session_timeout_ms></zookeeper>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
  <macros><shard>1</shard><replica>r$((n + 1))</replica></macros>
  <interserver_http_port>$((ch_port + 1000 + n))</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
</yandex>
EOF
    step "starting ClickHouse node $((n + 1)) at $(node_url "$n") (data in ${dir#"$ROOT"/}/data)"
    (cd "$dir" && exec "$ch_binary" --config-file="$dir/config.xml") \
        </dev/null >"$dir/log/stdout.log" 2>"$dir/log/stderr.log" &
    pids+=($!)
done
for n in 0 1; do
    ready=false
    for _ in $(seq 1 600); do
        if curl -fsS --max-time 2 "$(node_url "$n")/" --data-binary \
            "SELECT count() FROM system.zookeeper WHERE path = '/'" >/dev/null 2>&1; then
            ready=true
            break
        fi
        sleep 0.1
    done
    [[ "$ready" == true ]] ||
        die "node $((n + 1)) did not answer with ZooKeeper within 60 s; see ${BASE#"$ROOT"/}/ch$((n + 1))/log/"
done

# --- the gateway ----------------------------------------------------------------------------

step "cargo build --release"
cargo build --release
hookhouse=${CARGO_TARGET_DIR:-target}/release/hookhouse

HOOKHOUSE_CLICKHOUSE_URL="$(node_url 0),$(node_url 1)"
export HOOKHOUSE_CLICKHOUSE_URL
export HOOKHOUSE_CLICKHOUSE_CLUSTER=$CLUSTER
export HOOKHOUSE_DATA_DIR=$BASE/gateway
export HOOKHOUSE_LISTEN=$listen
mkdir -p "$HOOKHOUSE_DATA_DIR"

step "hookhouse migrate (ON CLUSTER $CLUSTER)"
"$hookhouse" migrate
name="demo-$(date -u +%Y%m%dT%H%M%SZ)"
created=$("$hookhouse" pipeline create --name "$name" --json)
pipeline_id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["pipeline_id"])' <<<"$created")
created=$("$hookhouse" token create --name "$name" --pipeline "$pipeline_id" --json)
key=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])' <<<"$created")
token=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$created")

step "hookhouse serve (nodes $HOOKHOUSE_CLICKHOUSE_URL, log in ${HOOKHOUSE_DATA_DIR#"$ROOT"/})"
"$hookhouse" serve &
gateway=$!
pids+=("$gateway")
for _ in $(seq 1 300); do
    curl -fsS --max-time 2 -o /dev/null "$gateway_url/healthz" 2>/dev/null && break
    kill -0 "$gateway" 2>/dev/null || die "the gateway exited; see its output above"
    sleep 0.2
done

cat <<EOF

hookhouse is running at $gateway_url on a cluster of two replicas. Send a webhook:

  curl -X POST "$gateway_url/?pipeline_id=$pipeline_id&key=$key&token=$token" --data-binary '{"hello":"world"}'

Count the rows on each node (the same on both):

  curl '$(node_url 0)/' --data-binary 'SELECT count() FROM hookhouse.pipeline_$pipeline_id'
  curl '$(node_url 1)/' --data-binary 'SELECT count() FROM hookhouse.pipeline_$pipeline_id'

Stop node 1 (kill ${pids[1]}) and send again: the gateway fails over to node 2. (An insert node 1
took while it was shutting down is counted once, on node 1's disk: node 2 shows it once node 1
is back, at the next run of this script.)
Ctrl-C stops the gateway, both nodes and ZooKeeper.

EOF
wait "$gateway" || true
