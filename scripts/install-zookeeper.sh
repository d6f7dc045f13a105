#!/usr/bin/env bash
# Installs ZooKeeper from Debian's archive (Debian 12: 3.8, package `zookeeper`, with a Java
# runtime), for the cluster tests (tests/cluster.rs) and `scripts/run-local.sh --cluster`.
# Safe to run again: it does nothing when the jar and java are there. Only the library package is
# installed, not `zookeeperd`: nothing is started as a service; the tests and run-local.sh start
# their own ZooKeeper with their own config.
set -euo pipefail

readonly JAR=/usr/share/java/zookeeper.jar

step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

have() { [[ -f "$JAR" ]] && command -v java >/dev/null 2>&1; }

if have; then
    step "ZooKeeper ($JAR) and java are installed: nothing to do"
    exit 0
fi

sudo=()
if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || die "installing zookeeper needs root: run this script as root or install sudo"
    sudo=(sudo)
fi
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ZooKeeper 3.x and a Java runtime with your system's package manager"

apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
step "apt-get update"
"${apt[@]}" update -qq || die "apt-get update failed"
step "apt-get install -y zookeeper"
"${apt[@]}" install -y zookeeper || die "apt-get install zookeeper failed"
have || die "zookeeper is installed but $JAR or java is missing"
step "ready: $JAR, $(java -version 2>&1 | sed -n 1p)"
