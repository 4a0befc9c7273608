#!/usr/bin/env bash
# The emulated boards (run as root): for each ARCH (default: arm64 armhf),
# boots Debian 12 under full-system QEMU (virt; arm64: Cortex-A72 like the
# Pi 4's; armhf: Cortex-A15; 4 vCPUs, 1 GiB, TCG), installs that
# architecture's release tarball with its install.sh as README's "Install
# on a Raspberry Pi" says, and runs wren-board's checks from the host: the
# units under a real systemd, a call through the board, the journal, the
# exposure scores, an SFU killed and restarted, a second SFU, a clean stop,
# an upgrade, a reboot, and the memory the board uses
# (crates/wren-testkit/src/bin/wren-board.rs).
#
# Usage: scripts/board-test.sh [ARCH...]
#
# Each board's image (scripts/board/image.sh) is built once and kept in
# $WREN_BOARD_CACHE (default /var/cache/wren-board), keyed by the files that
# make it; each run boots a copy of it, so a run changes nothing there.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh board
. scripts/board/arch.sh
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
cache="${WREN_BOARD_CACHE:-/var/cache/wren-board}"
cargo build -p wren-testkit --bin wren-board

run="$(mktemp -d /tmp/wren-board.XXXXXX)"
trap 'rm -rf "$run"' EXIT

board() { # ARCH: builds (or finds) the image and the tarball, boots, checks
    local arch="$1" start target tarball key image status=0
    start=$(date +%s)
    board_arch "$arch"
    # The first target rustup can serve (armv7: musl, else glibc).
    for target in "${targets[@]}"; do
        rustup target add "$target" >/dev/null 2>&1 && break
    done
    echo "board $arch: the release tarball (cross/build-release.sh $target)"
    cross/build-release.sh "$target"
    tarball="$PWD/dist/wren-$version-${target/-unknown/}.tar.gz"

    key="$( (echo "$arch"; cat scripts/board/arch.sh scripts/board/image.sh scripts/board/init \
        scripts/board/setup.sh; find scripts/board/rootfs -type f | sort | xargs cat) |
        sha256sum | cut -c1-16)"
    image="$cache/$arch-$key"
    if [ -f "$image/disk.img" ]; then
        echo "board $arch: the image cached in $image"
    else
        rm -rf "$cache/$arch"-*
        local built
        built=$(date +%s)
        scripts/board/image.sh "$arch" "$image"
        echo "board $arch: image built in $(($(date +%s) - built)) s"
    fi

    rm -f "$run/disk.img" "$run/console.log"
    cp --sparse=always "$image/disk.img" "$run/disk.img"
    cat >"$run/ssh_config" <<CONFIG
Host board
    HostName 10.0.2.15
    User root
    IdentityFile $image/id_ed25519
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
    BatchMode yes
    ConnectTimeout 5
    ServerAliveInterval 5
    ServerAliveCountMax 6
CONFIG
    # A network namespace of our own: the board's link and addresses touch
    # nothing on this machine, and its ports cannot clash with anything.
    unshare --net -- scripts/board/boot.sh "$arch" "$run" "$image" \
        "$target_dir/debug/wren-board" "$tarball" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "board $arch: failed; the end of the board's console:" >&2
        tail -n 60 "$run/console.log" >&2 || true
        exit "$status"
    fi
    echo "board $arch: the whole stage took $(($(date +%s) - start)) s"
}

[ "$#" -gt 0 ] || set -- arm64 armhf
for arch in "$@"; do
    board "$arch"
done
