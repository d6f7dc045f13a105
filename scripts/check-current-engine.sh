#!/usr/bin/env bash
# Checks that every statement hookhouse sends to ClickHouse runs unchanged, and means the same, on
# current ClickHouse engines (CONTRACT §4, §7), without a server: chDB from PyPI runs ClickHouse
# in-process. `hookhouse-statements` (src/bin/) drives the library's real code and prints each
# request; scripts/check_current_engine.py answers them from chDB and checks the tables after.
# Then scripts/check_readme_queries.py runs README.md's "Querying" SQL on the same engine.
#
# Each pinned chDB gets its own venv under .cache/chdb/ (created once, then reused):
#   4.4.0 = ClickHouse 26.9 (required), 3.7.2 = 25.8, 2.1.1 = 24.8.
# HOOKHOUSE_CHDB_VERSIONS="4.4.0" narrows the list. Safe to run again.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

read -r -a versions <<<"${HOOKHOUSE_CHDB_VERSIONS:-4.4.0 3.7.2 2.1.1}"
readonly cache=.cache/chdb

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo >/dev/null 2>&1 || die "cargo is not installed (https://rustup.rs)"
command -v python3 >/dev/null 2>&1 || die "python3 is not installed; chDB needs Python 3.8 or newer"

# Debian's python3 lacks venv until python3-venv is installed.
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        step "installing python3-venv"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
        die "python3 has no venv module; install python3-venv"
    fi
fi

# Makes $cache/$1 a venv with exactly chDB $1, unless it is one already.
ensure_venv() {
    local version=$1 venv=$cache/$1
    if "$venv/bin/python" -c "import sys, chdb; sys.exit(chdb.__version__ != '$version')" \
        2>/dev/null; then
        return
    fi
    step "installing chdb==$version into $venv"
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "chdb==$version" ||
        die "could not install chdb==$version from PyPI"
}

step "cargo build --bin hookhouse-statements"
cargo build --quiet --bin hookhouse-statements
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
statements=$target_dir/debug/hookhouse-statements

for version in "${versions[@]}"; do
    ensure_venv "$version"
    step "statements on chdb $version"
    "$cache/$version/bin/python" scripts/check_current_engine.py "$statements"
    step "README queries on chdb $version"
    "$cache/$version/bin/python" scripts/check_readme_queries.py README.md ../shared/payloads/github
done
