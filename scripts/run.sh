#!/usr/bin/env bash
# Sets up a fresh Debian machine and runs wren (signaling node + one SFU).
# Extra arguments go to wren, e.g. --listen 0.0.0.0:8080 --media-ip 192.168.1.20
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
cargo build --release
exec "${CARGO_TARGET_DIR:-target}/release/wren" "$@"
