#!/usr/bin/env bash
# Checks the shipped systemd units with systemd-analyze verify, and the
# shipped configuration with wren check-config. Usage: verify-units.sh WREN_BINARY
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath "${1:?usage: verify-units.sh WREN_BINARY}")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# verify insists that ExecStart's binary exists: point it at the one built.
for unit in systemd/*.service; do
    sed "s|/usr/local/bin/wren|$bin|" "$unit" >"$tmp/$(basename "$unit")"
done
cp "$tmp/wren-sfu@.service" "$tmp/wren-sfu@1.service"
# verify exits 0 on mere warnings (an unknown key, say): any output fails.
out="$(cd "$tmp" && systemd-analyze verify --man=no ./wren-signal.service ./wren-sfu@1.service 2>&1)" || true
if [ -n "$out" ]; then
    echo "$out" >&2
    exit 1
fi
echo "systemd units: ok"
"$bin" check-config systemd/wren.toml
