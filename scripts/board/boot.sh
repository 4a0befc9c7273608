#!/usr/bin/env bash
# Boots the board and runs wren-board against it; run by board-test.sh in
# a network namespace of its own (unshare --net), where the host is
# 10.0.2.2 and the board 10.0.2.15 on a tap link, as on a LAN.
# Usage: boot.sh ARCH RUN_DIR IMAGE_DIR WREN_BOARD TARBALL
set -euo pipefail
arch="$1" run="$2" image="$3" wren_board="$4" tarball="$5"
. "$(dirname "$0")/arch.sh"
board_arch "$arch"

ip link set lo up
ip tuntap add dev tap0 mode tap
ip addr add 10.0.2.2/24 dev tap0
ip link set tap0 up

"$qemu" -M virt -cpu "$cpu" -accel tcg,thread=multi -smp 4 -m 1024 \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "console=ttyAMA0 rdinit=/init" \
    -drive file="$run/disk.img",format=raw,if=none,id=disk -device virtio-blk-pci,drive=disk \
    -netdev tap,id=net,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=net,romfile= \
    -device virtio-rng-pci -display none -serial file:"$run/console.log" </dev/null &
vm=$!
trap 'kill "$vm" 2>/dev/null; wait "$vm" 2>/dev/null || true' EXIT

booted=$(date +%s)
for _ in $(seq 1 120); do
    ssh -F "$run/ssh_config" board true 2>/dev/null && break
    kill -0 "$vm" 2>/dev/null || { echo "board: QEMU exited" >&2; exit 1; }
    sleep 5
done
ssh -F "$run/ssh_config" board true || { echo "board: no ssh after 10 minutes" >&2; exit 1; }
echo "board: booted, ssh up after $(($(date +%s) - booted)) s"
ssh -F "$run/ssh_config" board 'uname -srm; grep PRETTY /etc/os-release; nproc; grep MemTotal /proc/meminfo'

"$wren_board" --board 10.0.2.15 --peer-ip 10.0.2.2 --ssh-config "$run/ssh_config" --tarball "$tarball"
