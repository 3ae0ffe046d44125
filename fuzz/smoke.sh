#!/usr/bin/env bash
# A short coverage-guided run of every fuzz target, on the stable toolchain: the targets are built
# the way `cargo fuzz build --sanitizer none` builds them (libFuzzer linked in, SanitizerCoverage
# instrumentation, `--cfg fuzzing`, debug assertions and overflow checks) but without needing
# nightly or cargo-fuzz, and with the `smoke` profile (fuzz/Cargo.toml, opt-level 1: about half
# the build time of `release`). Long runs, with AddressSanitizer, use `cargo +nightly fuzz run`
# (README, "Fuzzing").
#
#   fuzz/smoke.sh [seconds per target]     (default: $FUZZ_SECONDS or 30)
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-${FUZZ_SECONDS:-30}}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
# `--target` keeps these flags away from build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks \
-Dwarnings"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-target}"
cargo build --profile smoke --locked --bins --target "$triple"
python3 seed.py
failed=0
for target in fuzz_targets/*.rs; do
    name="$(basename "$target" .rs)"
    mkdir -p "artifacts/$name"
    echo "--- $name: ${seconds}s"
    if ! "$CARGO_TARGET_DIR/$triple/smoke/$name" "corpus/$name" \
        -max_total_time="$seconds" -rss_limit_mb=4096 -artifact_prefix="artifacts/$name/" \
        -print_final_stats=1 2>"artifacts/$name.log"; then
        failed=1
        tail -n 40 "artifacts/$name.log"
    fi
    grep -E '^(Done|stat::number_of_executed_units)' "artifacts/$name.log" || true
done
if [ "$failed" != 0 ]; then
    echo "a fuzz target failed; its input is in fuzz/artifacts/<target>/"
    exit 1
fi
