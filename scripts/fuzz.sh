#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) and fails on a
# finding. cargo-fuzz wants nightly for its sanitizer flags; on the stable
# toolchain it runs without a sanitizer (RUSTC_BOOTSTRAP lets stable take
# libFuzzer's -Z flags): Rust code needs none to find panics.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for target in $(cargo fuzz list); do
    extra=""
    # Each sfu_session input sets up a call (~100 runs/s): libFuzzer would
    # otherwise keep its inputs to a few bytes for minutes.
    if [ "$target" = sfu_session ]; then extra="-len_control=0"; fi
    # shellcheck disable=SC2086
    if ! cargo fuzz run -s none "$target" -- -max_total_time="$seconds" $extra >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz: $target found a crash (input saved under fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    echo "fuzz: $target: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log")"
done
