#!/usr/bin/env bash
# Builds wren's release artifacts for ARM boards on a Debian/Ubuntu machine
# (as root): installs the cross toolchain (Debian packages + rustup
# targets), builds, and packs into dist/ (only the TARGETs named, if any):
#   wren-VERSION-aarch64-linux-musl.tar.gz   static: any 64-bit ARM Linux
#   wren-VERSION-armv7-linux-musleabihf.tar.gz  static: any 32-bit ARMv7 Linux
# each with its .sha256. When the armv7 musl standard library cannot be
# installed (rustup has no copy of it for some toolchains), the armv7
# tarball is built for armv7-unknown-linux-gnueabihf instead, which needs
# glibc >= 2.34 (Raspberry Pi OS bookworm or later); the script says so.
# Usage: cross/build-release.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$#" -gt 0 ]; then
    # Only the targets named (the board test builds aarch64 musl alone).
    targets=("$@")
    rustup target add "${targets[@]}" >/dev/null
else
    targets=(aarch64-unknown-linux-musl)
    rustup target add aarch64-unknown-linux-musl >/dev/null
    if rustup target add armv7-unknown-linux-musleabihf >/dev/null 2>&1; then
        targets+=(armv7-unknown-linux-musleabihf)
    else
        echo "build-release: no armv7 musl standard library for this toolchain;" \
            "building armv7-unknown-linux-gnueabihf (glibc >= 2.34) instead" >&2
        rustup target add armv7-unknown-linux-gnueabihf >/dev/null
        targets+=(armv7-unknown-linux-gnueabihf)
    fi
fi

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
mkdir -p dist
for target in "${targets[@]}"; do
    cargo build --release --locked --target "$target"
    short="${target/-unknown/}"
    name="wren-$version-$short"
    stage="$(mktemp -d)/$name"
    mkdir -p "$stage"
    cp "target/$target/release/wren" "$stage/"
    cp systemd/wren-signal.service systemd/wren-sfu@.service systemd/wren.toml "$stage/"
    cp cross/INSTALL.txt cross/install.sh README.md "$stage/"
    (cd "$stage" && sha256sum wren ./*.service wren.toml INSTALL.txt install.sh README.md >SHA256SUMS)
    tar -C "$(dirname "$stage")" -czf "dist/$name.tar.gz" "$name"
    (cd dist && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
    rm -rf "$(dirname "$stage")"
    printf '%s: %s bytes (binary %s bytes)\n' "dist/$name.tar.gz" \
        "$(stat -c %s "dist/$name.tar.gz")" "$(stat -c %s "target/$target/release/wren")"
done
