#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs every test of wren, fast tier
# first (formatting, the declared rust-version, lints, docs, unit tests),
# then the slow one: end-to-end tests against the real binary (WebSockets,
# str0m peers, SFU processes), the headless Chromium and Firefox tests, the shipped
# systemd units and config, the whole Rust suite again for aarch64 and
# armv7 under QEMU user emulation, and last the emulated board: the aarch64
# release installed on Debian 12 arm64 under qemu-system-aarch64 and run
# by systemd (scripts/board-test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh test

step() { printf '\n=== %s\n' "$*"; }
# Where cargo puts binaries (a shared CARGO_TARGET_DIR is honoured).
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")"

# The fast tier: what a change breaks most often, in a few minutes.
step "fast: cargo fmt --check"
cargo fmt --all --check
step "fast: declared rust-version"
scripts/check-msrv.sh
step "fast: cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "fast: cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
step "fast: unit tests"
cargo test --workspace --lib --bins

# The slow tier: the real binary, real peers, browsers, fuzzing, ARM.
step "end-to-end tests (real wren, WebSockets, str0m peers)"
cargo test --workspace --test '*' -- --skip simulcast_through_shaped_links
step "network lab (tests/lab.rs: wren and str0m peers in namespaces, shaped links)"
# Its own step, its table printed.
cargo test --test lab -- --nocapture
step "browser tests (chromium + playwright-core, firefox-esr + puppeteer-core)"
# The Firefox tests run the browsers in a network lab (wren-netlab, from the test kit).
cargo build -p wren -p wren-testkit --bin wren --bin wren-netlab
(
    cd tests/browser
    npm ci --no-audit --no-fund --loglevel=error
    WREN_BIN="$target_dir/debug/wren" WREN_NETLAB="$target_dir/debug/wren-netlab" npm test
)
step "fuzzing (cargo-fuzz, ${FUZZ_SECONDS:-15}s a target)"
scripts/fuzz.sh "${FUZZ_SECONDS:-15}"
step "systemd units and shipped config"
scripts/verify-units.sh "$target_dir/debug/wren"
# aarch64 runs everything but the network lab's media cases; armv7 also
# leaves out the full-capacity test (512 sockets and 640 sessions take
# qemu-arm over ten minutes; aarch64 already proves the bounds hold on
# ARM). The lab's cases (tests/lab.rs) measure frame rates and freezes
# through the host's kernel: under QEMU they would measure the emulator,
# and they ran natively above.
# A process that dies of a signal under QEMU leaves its core (QEMU writes
# the guest's own), and a failed run prints where each of its threads was
# (scripts/qemu-cores.sh): an abort in C code says nothing by itself.
ulimit -c unlimited 2>/dev/null || echo "no cores: ulimit -c is capped at $(ulimit -Hc)"
for target in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    step "cargo test --target $target (under QEMU)"
    skip=(--skip simulcast_through_shaped_links)
    [ "$target" = armv7-unknown-linux-gnueabihf ] && skip+=(--skip at_full_capacity)
    start=$(date +%s)
    if ! cargo test --workspace --target "$target" -- "${skip[@]}"; then
        scripts/qemu-cores.sh "$target_dir/$target/debug" "$target_dir/$target/debug/deps"
        exit 1
    fi
    scripts/qemu-cores.sh --remove
    echo "$target: built and tested in $(($(date +%s) - start)) s"
done
ulimit -c 0
step "the emulated board (scripts/board-test.sh: Debian 12 arm64, qemu-system-aarch64, systemd)"
scripts/board-test.sh
