#!/bin/sh
# Installs wren from this folder (run as root on the board):
#   the binary to /usr/local/bin, the units to /etc/systemd/system,
#   the configuration to /etc/wren/wren.toml (kept if it exists),
#   a system user "wren"; then enables and starts one SFU and the signaling node.
set -eu
cd "$(dirname "$0")"
sha256sum -c SHA256SUMS
install -m 0755 wren /usr/local/bin/wren
install -m 0644 wren-signal.service wren-sfu@.service /etc/systemd/system/
mkdir -p /etc/wren
[ -e /etc/wren/wren.toml ] || install -m 0644 wren.toml /etc/wren/wren.toml
/usr/local/bin/wren check-config /etc/wren/wren.toml
id wren >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin wren
systemctl daemon-reload
systemctl enable --now wren-sfu@1.service wren-signal.service
echo "wren is running: open http://$(hostname -I | cut -d' ' -f1):8080/"
