#!/usr/bin/env bash
# Checks what deploy/ holds, as far as one machine without a cluster or registry access can:
#
#   1. installs what is missing (Debian packages: podman, buildah, runc, nginx, caddy, systemd,
#      docker-compose; ClickHouse through scripts/install-clickhouse.sh; kubernetes-validate from
#      PyPI, pinned, in .cache/check-deploy-venv) and builds the gateway (cargo build --release);
#   2. validates each file with the tool that reads it: systemd-analyze verify, nginx -t,
#      caddy validate, kubernetes-validate --strict (bundled OpenAPI schemas, Kubernetes 1.30 and
#      the newest it knows), docker-compose config (the Compose schema and interpolation);
#   3. runs nginx and Caddy with the example configs on loopback in front of a stand-in upstream,
#      and checks that a token sent in the query string reaches neither their access nor their
#      error logs, and that bodies over 10 MiB pass while much larger ones get 413;
#   4. builds deploy/Containerfile with buildah and runs the image with podman (read-only root,
#      all capabilities dropped, a fresh named volume) against a private ClickHouse, then posts a
#      webhook and expects 200, the row in ClickHouse, and exit code 0 on `podman stop`.
#
# Registry images cannot be pulled here, so step 4 passes the Containerfile two local stand-ins:
# RUNTIME_IMAGE, a base made from scratch out of the host's glibc (what `ldd` lists, as
# distroless/cc holds), and BUILDER_IMAGE, busybox with a `cargo` that hands over the binary of
# `cargo build --release` on the host instead of compiling (the stage's steps run as written).
#
# Everything it starts listens on 127.0.0.1 and is stopped by pid (or container name) on exit;
# temporary files are under one mktemp folder, removed on exit (HOOKHOUSE_CHECK_DEPLOY_KEEP=1
# keeps it for a look). Exit status 0 when every check passed.
#
# Settings (environment):
#   HOOKHOUSE_CHECK_DEPLOY_NO_CONTAINERS=1  when podman cannot run containers on this machine, run
#       the same binary outside a container instead of failing (the image is still built and
#       inspected).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly ROOT=$PWD
readonly VENV=$ROOT/.cache/check-deploy-venv
# kubernetes-validate and what it needs, pinned: the schemas it bundles are the check.
readonly PY_REQUIREMENTS=(
    kubernetes-validate==1.37.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
    referencing==0.37.0 rpds-py==2026.9.1 attrs==26.1.0 PyYAML==6.0.3 packaging==26.3
    importlib_resources==7.1.0 typing_extensions==4.16.0
)
# A token that must never show up in a proxy's log.
readonly SECRET=SECRET123tokenNeverLogged
readonly started_at=$SECONDS

step() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

failures=()
pass() { printf 'PASS  %s\n' "$*"; }
fail() {
    printf 'FAIL  %s\n' "$*" >&2
    failures+=("$*")
}

# --- cleanup ----------------------------------------------------------------------------------

work=$(mktemp -d /tmp/hookhouse-check-deploy.XXXXXX)
readonly work
started_pids=()
readonly tag=$$
readonly image=localhost/hookhouse-check:$tag
readonly base_image=localhost/hookhouse-check-base:$tag
readonly toolchain_image=localhost/hookhouse-check-toolchain:$tag
readonly container=hookhouse-check-$tag
readonly volume=hookhouse-check-$tag
podman_used=false

stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317 # called by the trap below
cleanup() {
    local status=$?
    set +e
    if [[ "$podman_used" == true ]]; then
        podman rm -f -t 5 "$container" >/dev/null 2>&1
        podman volume rm -f "$volume" >/dev/null 2>&1
        podman rmi -f "$image" "$base_image" "$toolchain_image" >/dev/null 2>&1
    fi
    for pid in "${started_pids[@]}"; do
        stop_pid "$pid"
    done
    if [[ "${HOOKHOUSE_CHECK_DEPLOY_KEEP:-}" == 1 ]]; then
        step "kept $work"
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Free TCP ports on 127.0.0.1, distinct, one per line.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Copies FILE to OUT replacing each FROM with TO (pairs of arguments), and fails when a FROM does
# not occur: the copy differs from the file under test only where the check needs it to.
substitute() {
    python3 - "$@" <<'EOF'
import sys
src, out, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
text = open(src).read()
for old, new in zip(pairs[::2], pairs[1::2]):
    if old not in text:
        sys.exit(f"{src}: expected text not found: {old!r}")
    text = text.replace(old, new)
open(out, "w").write(text)
EOF
}

# Waits up to $2 seconds for URL $1 to answer (any HTTP status).
wait_http() {
    local url=$1 seconds=$2
    for _ in $(seq 1 $((seconds * 10))); do
        curl -sk --max-time 1 -o /dev/null "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# --- 1. prerequisites -------------------------------------------------------------------------

install_missing() {
    local packages=()
    command -v podman >/dev/null 2>&1 || packages+=(podman)
    command -v buildah >/dev/null 2>&1 || packages+=(buildah)
    # crun, podman's default, refuses hosts with cgroups v1 and v2 controllers both mounted
    # ("cgroups in hybrid mode not supported"); runc runs there, and everywhere else.
    command -v runc >/dev/null 2>&1 || packages+=(runc)
    command -v slirp4netns >/dev/null 2>&1 || packages+=(slirp4netns)
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || packages+=(nginx-light)
    command -v caddy >/dev/null 2>&1 || packages+=(caddy)
    command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
    command -v docker-compose >/dev/null 2>&1 || packages+=(docker-compose)
    [[ -x /bin/busybox ]] || packages+=(busybox-static)
    command -v openssl >/dev/null 2>&1 || packages+=(openssl)
    command -v curl >/dev/null 2>&1 || packages+=(curl)
    python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)
    if ((${#packages[@]} == 0)); then
        step "podman, buildah, runc, nginx, caddy, systemd-analyze, docker-compose are installed"
        return 0
    fi
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || die "installing ${packages[*]} needs root or sudo"
        sudo=(sudo)
    fi
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
    step "apt-get update"
    "${apt[@]}" update -qq
    # The nginx and caddy packages start their services (on port 80, all interfaces) where there
    # is an init system; the check runs its own on loopback. While installing, a temporary
    # policy-rc.d denies service starts, as scripts/install-clickhouse.sh does.
    local policy=/usr/sbin/policy-rc.d policy_added=false status=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# added by hookhouse scripts/check-deploy.sh while installing; removed after\nexit 101\n' |
            "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 0755 "$policy"
        policy_added=true
    fi
    step "apt-get install ${packages[*]}"
    "${apt[@]}" install -y -q --no-install-recommends "${packages[@]}" >"$work/apt.log" 2>&1 || status=$?
    [[ "$policy_added" == true ]] && "${sudo[@]}" rm -f "$policy"
    if ((status != 0)); then
        tail -n 20 "$work/apt.log" >&2
        die "apt-get install ${packages[*]} failed"
    fi
}

install_missing
PATH=$PATH:/usr/sbin:/sbin
scripts/install-clickhouse.sh >/dev/null

# (pip's output is read whole: `pip freeze | grep -q` under pipefail fails when grep stops early.)
if [[ ! -x "$VENV/bin/kubernetes-validate" ]] ||
    ! grep -qx "${PY_REQUIREMENTS[0]}" <<<"$("$VENV/bin/pip" freeze 2>/dev/null)"; then
    step "pip install ${PY_REQUIREMENTS[0]} (into ${VENV#"$ROOT"/})"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_REQUIREMENTS[@]}"
fi

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo >/dev/null 2>&1 || die "cargo is not installed (https://rustup.rs)"
# HOOKHOUSE_CHECK_DEPLOY_PROFILE=debug reuses the test suite's build (what scripts/test.sh does,
# to keep CI short): the image and unit are checked the same, only the binary is slower.
profile=${HOOKHOUSE_CHECK_DEPLOY_PROFILE:-release}
case "$profile" in
    release) step "cargo build --release --bin hookhouse"; cargo build --release --locked --bin hookhouse ;;
    debug) step "cargo build --bin hookhouse"; cargo build --locked --bin hookhouse ;;
    *) die "HOOKHOUSE_CHECK_DEPLOY_PROFILE must be release or debug, not $profile" ;;
esac
readonly hookhouse=$ROOT/${CARGO_TARGET_DIR:-target}/$profile/hookhouse
[[ -x "$hookhouse" ]] || die "the build did not produce $hookhouse"

# A self-signed certificate for the proxies.
mkdir -p "$work/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" >/dev/null 2>&1 ||
    die "openssl could not make a test certificate"

# --- 2. static checks -------------------------------------------------------------------------

# systemd-analyze verify insists that ExecStart's binary exists: the copy points it at the one
# just built. Everything else in the unit is checked as written (verify exits 0 on unknown keys,
# so any output counts as a failure).
check_systemd() {
    mkdir -p "$work/systemd"
    substitute deploy/systemd/hookhouse.service "$work/systemd/hookhouse.service" \
        "ExecStart=/usr/local/bin/hookhouse serve" "ExecStart=$hookhouse serve"
    local out
    if out=$(systemd-analyze verify "$work/systemd/hookhouse.service" 2>&1) && [[ -z "$out" ]]; then
        pass "systemd-analyze verify deploy/systemd/hookhouse.service"
    else
        printf '%s\n' "$out" >&2
        fail "systemd-analyze verify deploy/systemd/hookhouse.service"
    fi
}

# The nginx example as an operator would include it, with its listen addresses, certificate,
# log and upstream paths moved to the check's loopback ports and folder.
write_nginx_config() {
    local http_port=$1 https_port=$2 upstream_port=$3 dir=$work/nginx
    mkdir -p "$dir/log" "$dir/tmp"
    substitute deploy/nginx/hookhouse.conf "$dir/hookhouse.conf" \
        "listen 80;" "listen 127.0.0.1:$http_port;" \
        "listen [::]:80;" "" \
        "listen 443 ssl;" "listen 127.0.0.1:$https_port ssl;" \
        "listen [::]:443 ssl;" "" \
        "/etc/letsencrypt/live/hooks.example.com/fullchain.pem" "$work/tls/cert.pem" \
        "/etc/letsencrypt/live/hooks.example.com/privkey.pem" "$work/tls/key.pem" \
        "/var/log/nginx/" "$dir/log/" \
        "server 127.0.0.1:8080;" "server 127.0.0.1:$upstream_port;"
    # Run as root, nginx would start its workers as nobody, who cannot enter the mktemp folder.
    local user=
    ((EUID == 0)) && user="user root root;"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
$user
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/log/main-error.log info;
events { worker_connections 64; }
http {
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    access_log $dir/log/default-access.log;
    include $dir/hookhouse.conf;
}
EOF
}

check_nginx_syntax() {
    local out
    if out=$(nginx -t -p "$work/nginx" -e "$work/nginx/log/startup.log" -c "$work/nginx/nginx.conf" 2>&1); then
        pass "nginx -t with deploy/nginx/hookhouse.conf"
    else
        printf '%s\n' "$out" >&2
        fail "nginx -t with deploy/nginx/hookhouse.conf"
    fi
}

# The Caddy example with its site moved to a loopback port and the test certificate, its logs
# into the check's folder, the admin API off, and no redirect listener on port 80.
write_caddy_config() {
    local https_port=$1 upstream_port=$2 dir=$work/caddy
    mkdir -p "$dir/home"
    substitute deploy/caddy/Caddyfile "$dir/Caddyfile" \
        $'\n{\n' $'\n{\n\tadmin off\n\tauto_https disable_redirects\n\tskip_install_trust\n' \
        "output stderr" "output file $dir/default.log" \
        "hooks.example.com {" $'https://127.0.0.1:'"$https_port"$' {\n\tbind 127.0.0.1\n\ttls '"$work/tls/cert.pem $work/tls/key.pem" \
        "/var/log/caddy/hookhouse-access.log" "$dir/access.log" \
        "reverse_proxy 127.0.0.1:8080" "reverse_proxy 127.0.0.1:$upstream_port"
}

# Caddy keeps state under HOME and XDG_* folders: the check's own. (An array, not a function: a
# function run in the background would leave $! pointing at a subshell, not at caddy.)
caddy_env=(env HOME="$work/caddy/home" XDG_DATA_HOME="$work/caddy/home/data"
    XDG_CONFIG_HOME="$work/caddy/home/config")

check_caddy_syntax() {
    local out
    if out=$("${caddy_env[@]}" caddy validate --config deploy/caddy/Caddyfile --adapter caddyfile 2>&1); then
        pass "caddy validate --config deploy/caddy/Caddyfile"
    else
        printf '%s\n' "$out" >&2
        fail "caddy validate --config deploy/caddy/Caddyfile"
    fi
    if grep -q 'not formatted' <<<"$out"; then
        fail "deploy/caddy/Caddyfile is not formatted (caddy fmt --overwrite deploy/caddy/Caddyfile)"
    fi
}

check_kubernetes() {
    local version out
    # 1.30: the oldest with the preStop sleep action on by default.
    for version in 1.30.0 1.37.0; do
        if out=$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" deploy/kubernetes/*.yaml 2>&1) &&
            ! grep -q 'ERROR\|WARN' <<<"$out"; then
            pass "kubernetes-validate --strict -k $version deploy/kubernetes/*.yaml"
        else
            printf '%s\n' "$out" >&2
            fail "kubernetes-validate --strict -k $version deploy/kubernetes/*.yaml"
        fi
    done
    # What CONTRACT §6 and §11 ask of the StatefulSet, beyond the schema.
    local problems
    problems=$("$VENV/bin/python" - deploy/kubernetes/statefulset.yaml <<'EOF'
import sys, yaml
problems = []
doc = yaml.safe_load(open(sys.argv[1]))
pod = doc["spec"]["template"]["spec"]
c = pod["containers"][0]
env = {e["name"]: e for e in c.get("env", [])}
grace = int(env.get("HOOKHOUSE_SHUTDOWN_GRACE_SECS", {}).get("value", 20))
pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
if pod.get("terminationGracePeriodSeconds", 30) <= grace + pre_stop:
    problems.append("terminationGracePeriodSeconds must exceed the grace plus the preStop pause")
if c["livenessProbe"]["httpGet"]["path"] != "/healthz":
    problems.append("liveness must probe /healthz")
if c["readinessProbe"]["httpGet"]["path"] != "/readyz":
    problems.append("readiness must probe /readyz")
if "valueFrom" not in env.get("HOOKHOUSE_CLICKHOUSE_PASSWORD", {}):
    problems.append("the password must come from a Secret")
sc = c["securityContext"]
if not (sc.get("readOnlyRootFilesystem") and sc["capabilities"]["drop"] == ["ALL"]
        and pod["securityContext"].get("runAsNonRoot")):
    problems.append("read-only root, no capabilities and a non-root user are expected")
mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
claims = {t["metadata"]["name"] for t in doc["spec"]["volumeClaimTemplates"]}
if mounts.get(env["HOOKHOUSE_DATA_DIR"]["value"]) not in claims:
    problems.append("the data folder must be on a volumeClaimTemplate")
print("\n".join(problems))
EOF
    )
    if [[ -z "$problems" ]]; then
        pass "deploy/kubernetes/statefulset.yaml: probes, grace period, Secret, securityContext, data volume"
    else
        printf '%s\n' "$problems" >&2
        fail "deploy/kubernetes/statefulset.yaml: $problems"
    fi
}

# docker-compose 1.29 validates against the Compose Specification schema it bundles and resolves
# the interpolation; it needs no Docker daemon for `config`.
check_compose() {
    local out
    if out=$(CLICKHOUSE_PASSWORD=check-only docker-compose --project-directory deploy \
        -f deploy/compose.yaml config 2>&1); then
        pass "docker-compose config (deploy/compose.yaml)"
    else
        printf '%s\n' "$out" >&2
        fail "docker-compose config (deploy/compose.yaml)"
    fi
    # The password comes from the environment (.env), never from the file itself.
    if out=$(env -u CLICKHOUSE_PASSWORD docker-compose --project-directory "$work" \
        -f deploy/compose.yaml config 2>&1); then
        fail "deploy/compose.yaml accepted a missing CLICKHOUSE_PASSWORD"
    elif grep -q 'CLICKHOUSE_PASSWORD' <<<"$out"; then
        pass "deploy/compose.yaml refuses to start without CLICKHOUSE_PASSWORD"
    else
        printf '%s\n' "$out" >&2
        fail "deploy/compose.yaml without CLICKHOUSE_PASSWORD: unexpected error"
    fi
}

step "static checks"
check_systemd
read -r nginx_http_port nginx_https_port caddy_port upstream_port <<<"$(free_ports 4 | tr '\n' ' ')"
write_nginx_config "$nginx_http_port" "$nginx_https_port" "$upstream_port"
check_nginx_syntax
check_caddy_syntax
write_caddy_config "$caddy_port" "$upstream_port"
check_kubernetes
check_compose

# --- 3. the proxies keep the token out of their logs --------------------------------------------

# A stand-in for hookhouse: answers every request 200 with the number of body bytes it read.
start_upstream() {
    python3 - "$upstream_port" <<'EOF' >"$work/upstream.log" 2>&1 &
import http.server, json, sys

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            n -= len(self.rfile.read(min(n, 1 << 20)))
        body = json.dumps({"success": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET = answer
    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
EOF
    upstream_pid=$!
    started_pids+=("$upstream_pid")
    wait_http "http://127.0.0.1:$upstream_port/" 10 || die "the stand-in upstream did not start"
}

# Posts to the proxy at $1: a webhook with the token, the token's name percent-encoded, the token
# twice, bodies of 10.5 MiB (passes) and 12 MiB (413); then, with the upstream stopped, one more
# (502) so that the error log gets its say. Prints the HTTP codes.
exercise_proxy() {
    local base=$1 answers=() q="pipeline_id=1&key=6f1c1c0e-8f0e-4c47-9a43-0d3b5c1a2b3c"
    # HTTP/1.1, as webhook senders speak: over HTTP/2, Caddy 2.6 now and then resets the stream
    # of a 502 answered before the body was read (curl: 000, "Stream error").
    # No `Expect: 100-continue` (curl adds it past 1 MiB; webhook senders do not): Caddy may
    # pass the upstream's 100 on and then drop the connection, which curl reports as code 100.
    local curl_flags=(--http1.1 -sk -o /dev/null -H 'Expect:')
    answers+=("$(curl "${curl_flags[@]}" -w '%{http_code}' --data '{"a":1}' "$base/?$q&token=$SECRET")")
    answers+=("$(curl "${curl_flags[@]}" -w '%{http_code}' --data '{"a":1}' "$base/?%74oken=$SECRET&$q")")
    answers+=("$(curl "${curl_flags[@]}" -w '%{http_code}' --data '{"a":1}' "$base/?token=${SECRET}a&$q&token=${SECRET}b")")
    answers+=("$(curl "${curl_flags[@]}" -w '%{http_code}' --data-binary @"$work/body-10.5MiB" "$base/?$q&token=$SECRET")")
    answers+=("$(curl "${curl_flags[@]}" -w '%{http_code}' --data-binary @"$work/body-12MiB" "$base/?$q&token=$SECRET")")
    stop_pid "$upstream_pid"
    answers+=("$(curl "${curl_flags[@]}" -w '%{http_code}' --data '{"a":1}' "$base/?$q&token=$SECRET")")
    printf '%s\n' "${answers[*]}"
}

# Checks one proxy's run: codes as expected (a regular expression), logs written, no token in any
# of them.
judge_proxy() {
    local name=$1 codes=$2 expected=$3 access_log=$4
    shift 4
    if [[ "$codes" =~ ^$expected$ ]]; then
        pass "$name: answers $codes (token, %74oken, two tokens, 10.5 MiB, 12 MiB, upstream down)"
    else
        fail "$name: answers '$codes', expected '$expected'"
    fi
    if [[ -s "$access_log" ]] && grep -q REDACTED "$access_log"; then
        pass "$name: the access log has the requests, with token=REDACTED"
    else
        fail "$name: the access log $access_log is empty or shows no REDACTED token"
    fi
    local leaks
    leaks=$(grep -l -- "$SECRET" "$@" 2>/dev/null | tr '\n' ' ' || true)
    if [[ -z "$leaks" ]]; then
        pass "$name: no log contains the token ($(printf '%s ' "${@##*/}"))"
    else
        fail "$name: the token is in $leaks"
        grep -h -- "$SECRET" "$@" | head -n 3 >&2
    fi
}

python3 - "$work" <<'EOF'
import sys
for name, size in (("body-10.5MiB", 10 * 2**20 + 2**19), ("body-12MiB", 12 * 2**20)):
    with open(f"{sys.argv[1]}/{name}", "wb") as f:
        f.write(b'{"pad":"' + b"x" * (size - 10) + b'"}')
EOF

step "nginx on 127.0.0.1:$nginx_https_port in front of a stand-in upstream"
start_upstream
nginx -p "$work/nginx" -e "$work/nginx/log/startup.log" -c "$work/nginx/nginx.conf" \
    >"$work/nginx/log/stdout.log" 2>&1 &
nginx_pid=$!
started_pids+=("$nginx_pid")
if wait_http "https://127.0.0.1:$nginx_https_port/healthz" 10; then
    codes=$(exercise_proxy "https://127.0.0.1:$nginx_https_port")
    stop_pid "$nginx_pid" # flushes and closes the logs
    judge_proxy nginx "$codes" "200 200 200 200 413 502" "$work/nginx/log/hookhouse.access.log" \
        "$work"/nginx/log/*
else
    fail "nginx did not start: $(tail -n 5 "$work/nginx/log/"*.log 2>/dev/null)"
fi

step "caddy on 127.0.0.1:$caddy_port in front of a stand-in upstream"
start_upstream
"${caddy_env[@]}" caddy run --config "$work/caddy/Caddyfile" --adapter caddyfile \
    >"$work/caddy/stdout.log" 2>&1 &
caddy_pid=$!
started_pids+=("$caddy_pid")
if wait_http "https://127.0.0.1:$caddy_port/healthz" 15; then
    codes=$(exercise_proxy "https://127.0.0.1:$caddy_port")
    stop_pid "$caddy_pid"
    # Caddy 2.6 ends a body over request_body's max_size with 502 or by closing the connection
    # (curl: 000), not 413; either way it does not reach the upstream whole.
    judge_proxy caddy "$codes" "200 200 200 200 (413|502|000) 502" "$work/caddy/access.log" \
        "$work"/caddy/*.log
else
    fail "caddy did not start: $(tail -n 5 "$work/caddy/stdout.log" 2>/dev/null)"
fi
stop_pid "$upstream_pid"

# --- 4. the container image -------------------------------------------------------------------

# --runtime runc: see install_missing. The ulimits: podman raises RLIMIT_NOFILE and RLIMIT_NPROC
# by default, which a host without CAP_SYS_RESOURCE (a container running this check) refuses.
podman_flags=()
command -v runc >/dev/null 2>&1 && podman_flags+=(--runtime runc)
run_flags=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)

# A runtime base like distroless/cc, from scratch: the host's glibc and libgcc_s as the binary
# needs them (ldd), a passwd with nonroot (65532), and the CA bundle.
build_base_image() {
    local ctr lib
    ctr=$(buildah from scratch)
    while read -r lib; do
        buildah copy "$ctr" "$(readlink -f "$lib")" "$lib" >/dev/null
    done < <(ldd "$hookhouse" | grep -o '/[^ ]*' | sort -u)
    mkdir -p "$work/base/etc"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
        >"$work/base/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$work/base/etc/group"
    buildah copy "$ctr" "$work/base/etc" /etc >/dev/null
    if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
        buildah copy "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
    fi
    buildah config --user 65532:65532 "$ctr"
    buildah commit -q --rm "$ctr" "$base_image" >/dev/null
}

# A stand-in for rust:1-bookworm: busybox's sh, mkdir and cp, and a `cargo` that hands over the
# binary built on the host instead of compiling. The builder stage's RUN and COPYs run as written.
build_toolchain_image() {
    local ctr dir=$work/toolchain applet
    mkdir -p "$dir/bin" "$dir/usr/local/bin" "$dir/prebuilt"
    cp /bin/busybox "$dir/bin/busybox"
    for applet in sh mkdir cp; do
        ln -sf busybox "$dir/bin/$applet"
    done
    cp "$hookhouse" "$dir/prebuilt/hookhouse"
    cat >"$dir/usr/local/bin/cargo" <<'EOF'
#!/bin/sh
# scripts/check-deploy.sh: not cargo; hands over the binary cargo built on the host.
echo "stand-in cargo $*: copying the host's build"
mkdir -p target/release && cp /prebuilt/hookhouse target/release/hookhouse
EOF
    chmod 0755 "$dir/usr/local/bin/cargo"
    ctr=$(buildah from scratch)
    buildah copy "$ctr" "$dir" / >/dev/null
    buildah config --env PATH=/usr/local/bin:/bin "$ctr"
    buildah commit -q --rm "$ctr" "$toolchain_image" >/dev/null
}

check_image_config() {
    local config
    config=$(podman image inspect "$image" --format '{{json .Config}}')
    python3 - "$config" <<'EOF'
import json, sys
c = json.loads(sys.argv[1])
want = {
    "User": "65532:65532",
    "Entrypoint": ["/usr/local/bin/hookhouse"],
    "Cmd": ["serve"],
    "ExposedPorts": ["8080/tcp"],
    "Volumes": ["/var/lib/hookhouse"],
}
got = {
    "User": c.get("User"),
    "Entrypoint": c.get("Entrypoint"),
    "Cmd": c.get("Cmd"),
    "ExposedPorts": sorted(c.get("ExposedPorts") or {}),
    "Volumes": sorted(c.get("Volumes") or {}),
}
bad = [f"{k}: {got[k]!r}, expected {v!r}" for k, v in want.items() if got[k] != v]
env = c.get("Env") or []
for e in ("HOOKHOUSE_LISTEN=0.0.0.0:8080", "HOOKHOUSE_DATA_DIR=/var/lib/hookhouse"):
    if e not in env:
        bad.append(f"Env lacks {e}")
if bad:
    sys.exit("; ".join(bad))
EOF
}

# ClickHouse from Debian's package on free loopback ports, as scripts/run-local.sh starts it.
start_clickhouse() {
    read -r ch_port ch_tcp_port <<<"$(free_ports 2 | tr '\n' ' ')"
    scripts/clickhouse-config.sh "$work/clickhouse" "$ch_port" "$ch_tcp_port"
    (cd "$work/clickhouse" && exec /usr/sbin/clickhouse-server --config-file="$work/clickhouse/config.xml") \
        </dev/null >"$work/clickhouse/log/stdout.log" 2>&1 &
    started_pids+=("$!")
    for _ in $(seq 1 600); do
        [[ "$(curl -sS --max-time 2 "http://127.0.0.1:$ch_port/ping" 2>/dev/null)" == "Ok." ]] && return 0
        sleep 0.1
    done
    die "ClickHouse did not answer on 127.0.0.1:$ch_port; see $work/clickhouse/log/"
}

ch_query() { curl -sS --max-time 10 "http://127.0.0.1:$ch_port/" --data-binary "$1"; }

json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# Runs the gateway ($@ starts one that listens on 127.0.0.1:$gw_port and is stopped by
# stop_gateway) and the admin commands ($admin), then posts a webhook and follows it into
# ClickHouse.
webhook_round_trip() {
    local what=$1 created pipeline_id key token answer landed=0
    "${admin[@]}" migrate >"$work/migrate.log" 2>&1 || { cat "$work/migrate.log" >&2; fail "$what: migrate"; return; }
    created=$("${admin[@]}" pipeline create --name check-deploy --json)
    pipeline_id=$(json_field pipeline_id <<<"$created")
    created=$("${admin[@]}" token create --name check-deploy --pipeline "$pipeline_id" --json)
    key=$(json_field key <<<"$created")
    token=$(json_field token <<<"$created")
    start_gateway
    if ! wait_http "http://127.0.0.1:$gw_port/healthz" 60; then
        fail "$what: the gateway did not answer /healthz within 60 s"
        return
    fi
    pass "$what: /healthz $(curl -s "http://127.0.0.1:$gw_port/healthz"), /readyz $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$gw_port/readyz")"
    answer=$(curl -sS -w ' %{http_code}' -H 'Content-Type: application/json' --data '{"from":"check-deploy"}' \
        "http://127.0.0.1:$gw_port/?pipeline_id=$pipeline_id&key=$key&token=$token")
    if [[ "$answer" == *'"success":true'*' 200' ]]; then
        pass "$what: POST a webhook -> $answer"
    else
        fail "$what: POST a webhook -> $answer"
    fi
    for _ in $(seq 1 150); do
        landed=$(ch_query "SELECT count() FROM hookhouse.pipeline_$pipeline_id" 2>/dev/null || echo 0)
        [[ "$landed" == 1 ]] && break
        sleep 0.2
    done
    if [[ "$landed" == 1 ]]; then
        pass "$what: the row is in ClickHouse (hookhouse.pipeline_$pipeline_id)"
    else
        fail "$what: hookhouse.pipeline_$pipeline_id holds '$landed' rows after 30 s, expected 1"
    fi
    stop_gateway
}


step "container image: deploy/Containerfile with stand-ins for the two registry images"
podman_used=true
image_built=false
# --isolation chroot: the builder stage's RUN needs no OCI runtime (see install_missing).
if build_base_image && build_toolchain_image &&
    buildah bud --isolation chroot --layers=false --pull-never -f deploy/Containerfile \
        --build-arg "BUILDER_IMAGE=$toolchain_image" --build-arg "RUNTIME_IMAGE=$base_image" \
        -t "$image" . >"$work/bud.log" 2>&1; then
    image_built=true
    pass "buildah bud -f deploy/Containerfile (BUILDER_IMAGE: stand-in handing over the host's build; RUNTIME_IMAGE: glibc base from scratch): $(podman image inspect "$image" --format '{{.Size}}') bytes"
    if problems=$(check_image_config 2>&1); then
        pass "the image: user 65532, entrypoint hookhouse serve, port 8080, volume /var/lib/hookhouse, env"
    else
        fail "the image's config: $problems"
    fi
else
    cat "$work/bud.log" >&2 2>/dev/null || true
    fail "building deploy/Containerfile"
fi

start_clickhouse
gw_port=$(free_ports 1)
container_net=(--network slirp4netns:allow_host_loopback=true)
ch_from_container=http://10.0.2.2:$ch_port

can_run=false
if [[ "$image_built" == true ]]; then
    if out=$(podman "${podman_flags[@]}" run --rm "${run_flags[@]}" "${container_net[@]}" "$image" --version 2>&1); then
        can_run=true
        pass "podman ${podman_flags[*]} run $image --version: $out"
    elif [[ "${HOOKHOUSE_CHECK_DEPLOY_NO_CONTAINERS:-}" == 1 ]]; then
        warn "podman cannot run the image here: $out"
    else
        fail "podman cannot run the image here: $out"
    fi
fi

if [[ "$can_run" == true ]]; then
    admin=(podman "${podman_flags[@]}" run --rm "${run_flags[@]}" "${container_net[@]}"
        -e "HOOKHOUSE_CLICKHOUSE_URL=$ch_from_container" "$image")
    start_gateway() {
        podman volume create "$volume" >/dev/null
        podman "${podman_flags[@]}" run -d --name "$container" "${run_flags[@]}" "${container_net[@]}" \
            -p "127.0.0.1:$gw_port:8080" --read-only --cap-drop ALL --security-opt no-new-privileges \
            -v "$volume:/var/lib/hookhouse" \
            -e "HOOKHOUSE_CLICKHOUSE_URL=$ch_from_container" -e HOOKHOUSE_SHUTDOWN_GRACE_SECS=10 \
            "$image" >/dev/null
    }
    stop_gateway() {
        local status
        podman stop -t 30 "$container" >/dev/null
        status=$(podman inspect "$container" --format '{{.State.ExitCode}}')
        podman logs "$container" >"$work/container.log" 2>&1 || true
        if [[ "$status" == 0 ]]; then
            pass "container: podman stop -> exit code 0 (graceful shutdown)"
        else
            fail "container: podman stop -> exit code $status; its log: $(tail -n 5 "$work/container.log")"
        fi
    }
    webhook_round_trip container
elif [[ "${HOOKHOUSE_CHECK_DEPLOY_NO_CONTAINERS:-}" == 1 ]]; then
    warn "HOOKHOUSE_CHECK_DEPLOY_NO_CONTAINERS=1: running the same binary outside a container"
    admin=(env "HOOKHOUSE_CLICKHOUSE_URL=http://127.0.0.1:$ch_port" "$hookhouse")
    start_gateway() {
        HOOKHOUSE_CLICKHOUSE_URL=http://127.0.0.1:$ch_port HOOKHOUSE_LISTEN=127.0.0.1:$gw_port \
            HOOKHOUSE_DATA_DIR=$work/data HOOKHOUSE_SHUTDOWN_GRACE_SECS=10 \
            "$hookhouse" serve >"$work/gateway.log" 2>&1 &
        gateway_pid=$!
        started_pids+=("$gateway_pid")
    }
    stop_gateway() {
        local status=0
        kill -TERM "$gateway_pid"
        wait "$gateway_pid" || status=$?
        if [[ "$status" == 0 ]]; then
            pass "host binary: SIGTERM -> exit code 0"
        else
            fail "host binary: SIGTERM -> exit code $status"
        fi
    }
    webhook_round_trip "host binary (no container)"
fi

# --- summary ----------------------------------------------------------------------------------

failed=()
for f in "${failures[@]}"; do
    [[ -n "$f" ]] && failed+=("$f")
done
elapsed=$((SECONDS - started_at))
if ((${#failed[@]} == 0)); then
    step "check-deploy: all checks passed in ${elapsed} s"
else
    printf 'check-deploy: %d check(s) failed in %d s:\n' "${#failed[@]}" "$elapsed" >&2
    printf '  - %s\n' "${failed[@]}" >&2
    exit 1
fi
