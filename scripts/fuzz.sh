#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, then stops.
#
#   FUZZ_SECONDS=60 scripts/fuzz.sh              all targets, 60 s each (the default)
#   FUZZ_SECONDS=20 scripts/fuzz.sh wal_record   one target
#
# The corpus lives in fuzz/corpus/<target>/ (seeds are committed; a run adds what it finds).
# When a target fails, its input is copied to fuzz/regressions/<target>/, where
# `cargo test --test fuzz_regressions` replays it from then on, and the script exits 1 after
# running the remaining targets. cargo-fuzz is installed from crates.io if missing.
#
# cargo-fuzz wants a nightly compiler for its -Z flags; RUSTC_BOOTSTRAP=1 lets a stable one
# accept them. The sanitizer is off by default (the code under test is safe Rust, and it keeps
# builds fast); set FUZZ_SANITIZER=address to turn AddressSanitizer on.
# Other knobs: FUZZ_TARGET_DIR (build folder, default fuzz/target), FUZZ_MAX_LEN (largest
# input, default 8192 bytes).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-none}
target_dir=${FUZZ_TARGET_DIR:-$root/fuzz/target}
max_len=${FUZZ_MAX_LEN:-8192}
all_targets=(query_params body_check wal_record segment_scan)
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=("${all_targets[@]}")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io (takes a few minutes)" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
fuzz_flags=(--sanitizer "$sanitizer" --target-dir "$target_dir")

echo "fuzz: building ${targets[*]}" >&2
for target in "${targets[@]}"; do
    (cd fuzz && cargo fuzz build "${fuzz_flags[@]}" "$target")
done

failed=()
for target in "${targets[@]}"; do
    corpus=fuzz/corpus/$target
    # Where cargo-fuzz has libFuzzer write a failing input. Left-overs were copied out already.
    artifacts=fuzz/artifacts/$target
    mkdir -p "$corpus" "$artifacts"
    rm -f "$artifacts"/crash-* "$artifacts"/timeout-* "$artifacts"/oom-* "$artifacts"/leak-*
    echo "fuzz: $target for ${seconds}s" >&2
    status=0
    # libFuzzer stops by itself after -max_total_time; `timeout` is the backstop should a single
    # input hang past it (each input is also bounded by -timeout).
    (cd fuzz && timeout --kill-after=30 $((seconds + 120)) \
        cargo fuzz run "${fuzz_flags[@]}" "$target" "$root/$corpus" -- \
        -max_total_time="$seconds" -timeout=10 -max_len="$max_len" \
        -print_final_stats=1) || status=$?
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        mkdir -p "fuzz/regressions/$target"
        found=0
        for input in "$artifacts"/crash-* "$artifacts"/timeout-* "$artifacts"/oom-* "$artifacts"/leak-*; do
            [ -e "$input" ] || continue
            cp "$input" "fuzz/regressions/$target/"
            echo "fuzz: $target failed on $input, kept in fuzz/regressions/$target/" >&2
            found=1
        done
        if [ "$found" -eq 0 ]; then
            echo "fuzz: $target exited with status $status and left no input" >&2
        fi
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}; replay with: cargo test --test fuzz_regressions" >&2
    exit 1
fi
echo "fuzz: ${targets[*]}: no failure in ${seconds}s each" >&2
