#!/bin/sh
# Installs wren from this folder (run as root on the board):
#   the binary to /usr/local/bin, the units to /etc/systemd/system,
#   the configuration to /etc/wren/wren.toml (kept if it exists),
#   a system user "wren"; then enables and starts one SFU and the signaling node.
# Run again with a newer tarball to upgrade: the config is kept and the
# running units are restarted on the new binary.
set -eu
cd "$(dirname "$0")"
sha256sum -c SHA256SUMS
# An upgrade: the units running now are restarted at the end, so that they
# run the new binary (the old one would otherwise run until a reboot).
running="$(systemctl list-units --state=active --plain --no-legend \
    'wren-signal.service' 'wren-sfu@*.service' | awk '{ print $1 }')"
install -m 0755 wren /usr/local/bin/wren
install -m 0644 wren-signal.service wren-sfu@.service /etc/systemd/system/
mkdir -p /etc/wren
[ -e /etc/wren/wren.toml ] || install -m 0644 wren.toml /etc/wren/wren.toml
/usr/local/bin/wren check-config /etc/wren/wren.toml
id wren >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin wren
systemctl daemon-reload
systemctl enable --now wren-sfu@1.service wren-signal.service
if [ -n "$running" ]; then
    echo "restarting" $running
    systemctl restart $running
fi
echo "wren is running: open http://$(hostname -I | cut -d' ' -f1):8080/"
