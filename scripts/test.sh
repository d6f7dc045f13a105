#!/usr/bin/env bash
# Tests hookhouse: installs ClickHouse if missing (the tests start their own servers from Debian's
# clickhouse-server), then cargo fmt --check, cargo clippy -D warnings, the current-engine check
# (scripts/check-current-engine.sh: every statement on ClickHouse 26.9, 25.8 and 24.8 through chDB)
# the deploy/ check (scripts/check-deploy.sh, with the debug build), and the whole cargo test suite. Extra arguments go to cargo test, e.g.
# scripts/test.sh -- --nocapture.
# rustfmt and clippy are skipped with a warning when the toolchain lacks them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }

scripts/install-clickhouse.sh
# tests/cluster.rs starts its own ZooKeeper from Debian's package.
scripts/install-zookeeper.sh

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH=$HOME/.cargo/bin:$PATH
fi
if ! command -v cargo >/dev/null 2>&1; then
    rust_version=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)
    printf 'error: cargo is not installed; hookhouse needs Rust %s or newer (https://rustup.rs).\n' \
        "${rust_version:-stable}" >&2
    exit 1
fi
step "using $(cargo --version)"

if cargo fmt --version >/dev/null 2>&1; then
    step "cargo fmt --check"
    cargo fmt --check
else
    warn "rustfmt is not installed for this toolchain: skipping cargo fmt --check"
fi

if cargo clippy --version >/dev/null 2>&1; then
    step "cargo clippy --all-targets -- -D warnings"
    cargo clippy --all-targets -- -D warnings
else
    warn "clippy is not installed for this toolchain: skipping cargo clippy"
fi

step "scripts/check-current-engine.sh"
scripts/check-current-engine.sh

step "scripts/check-deploy.sh (deploy/: image, compose, Kubernetes, systemd, proxies)"
HOOKHOUSE_CHECK_DEPLOY_PROFILE=debug scripts/check-deploy.sh

step "scripts/install-receiver.sh (the notification tests' receiver: standardwebhooks from PyPI)"
scripts/install-receiver.sh

step "cargo test${*:+ $*}"
cargo test "$@"
