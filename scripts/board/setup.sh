#!/bin/sh
# Runs in the emulated board (chroot, in the initramfs) after debootstrap's
# second stage: what a board's own setup would have done.
set -eu
systemctl enable systemd-networkd.service board-ssh.service
# dropbear-bin leaves the host key to us (the dropbear package would make it).
mkdir -p /etc/dropbear
dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key >/dev/null
# Timers that would fetch package lists or scrub the disk in the middle of
# a test, on a board without Internet access.
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer 2>/dev/null || true
apt-get clean
rm -f /root/board-setup.sh
