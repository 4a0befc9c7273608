#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs every test of wren: formatting and
# lints, unit tests, end-to-end tests against the real binary (WebSockets,
# str0m peers, SFU processes), and the headless-Chromium call test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh test

step() { printf '\n=== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --check
step "cargo clippy"
cargo clippy --all-targets -- -D warnings
step "cargo test"
cargo test
step "browser tests (chromium + playwright-core)"
cargo build --bin wren
(
    cd tests/browser
    npm ci --no-audit --no-fund --loglevel=error
    WREN_BIN="$PWD/../../target/debug/wren" npm test
)
