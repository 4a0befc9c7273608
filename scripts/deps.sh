#!/usr/bin/env bash
# Installs what building (and, with "test", testing) wren needs on Debian.
# Idempotent: only missing packages are installed. Run as root.
set -euo pipefail

want=(gcc make pkg-config ca-certificates)
if [ "${1:-}" = "test" ]; then
    want+=(chromium fonts-liberation systemd jq)
    # The Firefox browser tests: Debian's Firefox, run in network namespaces (ip netns).
    want+=(firefox-esr iproute2)
    # The ARM stage: cross gcc and QEMU user emulation.
    want+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf
        libc6-dev-armhf-cross qemu-user)
    # Backtraces from the cores of processes that die under QEMU
    # (scripts/qemu-cores.sh).
    want+=(gdb-multiarch binutils)
    # The network lab (wren-testkit's netlab, docs/lab.md): namespaces,
    # qdiscs and routing rules with iproute2, random loss with nftables.
    want+=(iproute2 nftables)
    # The cluster tests (tests/cluster.rs): their own redis-server on
    # loopback, and openssl for the rediss:// test's certificates.
    want+=(redis-server openssl)
    # Node may come from elsewhere (nodesource, nvm): any node >= 18 will do.
    command -v node >/dev/null && command -v npm >/dev/null || want+=(nodejs npm)
fi
if [ "${1:-}" = "test" ] || [ "${1:-}" = "board" ]; then
    # The emulated board (scripts/board-test.sh): full-system QEMU, the
    # image's makings (debootstrap, the kernel's modules, an initramfs,
    # ext4), ssh into it, a tap link in a namespace.
    want+=(qemu-system-arm debootstrap kmod cpio xz-utils e2fsprogs curl
        openssh-client iproute2 util-linux)
fi

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Some images carry a newer qemu-utils (backports) that Debian 12's
    # qemu-system-* cannot be installed beside: it goes (wren needs neither).
    remove=()
    [[ " ${missing[*]} " == *" qemu-system-arm "* ]] && remove+=(qemu-utils-)
    apt-get install -y -qq --no-install-recommends "${missing[@]}" "${remove[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
    echo "deps: no Rust toolchain found. Install Rust >= 1.89 (rustup), then run again." >&2
    exit 1
fi
if [ "${1:-}" = "test" ]; then
    rustup component add rustfmt clippy >/dev/null
    rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf >/dev/null
fi
