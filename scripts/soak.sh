#!/usr/bin/env bash
# Crash soak: runs the crash-loop test (tests/crash.rs) for many cycles against the release
# build. Concurrent keep-alive senders post to the real gateway while it is killed with SIGKILL
# at random moments and restarted; at the end every request answered 200 must be in ClickHouse
# exactly once. Everything runs on loopback and stops by itself.
#
#   scripts/soak.sh [CYCLES]        default 1000 cycles, at most HOOKHOUSE_CRASH_SECONDS (3600)
#
# The last line of the run (cycles, acknowledged, lost, duplicated) is kept in
# bench/results/soak.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cycles=${1:-1000}
seconds=${HOOKHOUSE_CRASH_SECONDS:-3600}
scripts/install-clickhouse.sh
mkdir -p bench/results
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "==> crash soak: ${cycles} cycles, at most ${seconds} s"
HOOKHOUSE_CRASH_CYCLES=$cycles HOOKHOUSE_CRASH_SECONDS=$seconds \
    cargo test --release --test crash crash_loop_loses_and_duplicates_nothing -- --exact --nocapture 2>&1 | tee "$log"
summary=$(grep '^crash loop:' "$log" | tail -n 1)
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "command: scripts/soak.sh ${cycles}"
    echo "$summary"
} > bench/results/soak.txt
echo "==> kept in bench/results/soak.txt: $summary"
