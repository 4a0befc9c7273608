#!/usr/bin/env bash
# Builds the emulated board's boot files and disk into DIR (run as root):
#   vmlinuz      the kernel of Debian 12's own linux-image package
#   initrd.img   a small initramfs of our own (busybox + the virtio and ext4
#                modules of that kernel: see init)
#   disk.img     Debian 12, made by debootstrap from the Debian mirror of
#                this machine's apt sources: systemd, udev, dbus, sudo and
#                dropbear (sshd), an address on the tap link, our ssh key
#   id_ed25519   the key that logs in as root
# Usage: image.sh ARCH DIR     ARCH: arm64 or armhf
#
# debootstrap's first stage runs here; its second stage (the packages'
# configuration) needs the board's CPU, so it runs inside the emulator, in
# the initramfs, before the first real boot. Debian's own initramfs is not
# used: building it (initramfs-tools) in the emulated second stage took
# over 40 minutes under TCG, while the kernel only needs nine modules to
# find its disk and network.
set -euo pipefail
arch="${1:?usage: image.sh arm64|armhf DIR}"
dir="${2:?usage: image.sh arm64|armhf DIR}"
here="$(cd "$(dirname "$0")" && pwd)"
suite=bookworm

. "$here/arch.sh"
board_arch "$arch"

# The mirror this machine already uses (deb822 or one-line sources).
mirror="$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -v security | head -n1 || true)"
[ -n "$mirror" ] || mirror="$(awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)"
[ -n "$mirror" ] || { echo "image.sh: no Debian mirror in this machine's apt sources" >&2; exit 1; }

mkdir -p "$(dirname "$dir")"
work="$(mktemp -d "${dir%/}.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"

echo "board image: debootstrap $suite $arch, first stage (mirror $mirror)"
# sudo: README's install is `sudo ./install.sh`. dropbear-bin: the host's
# way in. busybox-static: the initramfs's shell (its .deb is also taken).
debootstrap --foreign --arch="$arch" --variant=minbase \
    --include=systemd,systemd-sysv,udev,dbus,sudo,dropbear-bin,busybox-static \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

echo "board image: kernel ($kernel_pkg)"
# The kernel's version: the dependency of the metapackage, in the index
# debootstrap has just downloaded.
index="$(ls "$root"/var/lib/apt/lists/*_dists_${suite}_main_binary-${arch}_Packages 2>/dev/null | head -n1 || true)"
if [ -z "$index" ]; then
    index="$work/Packages"
    curl -fsS "$mirror/dists/$suite/main/binary-$arch/Packages.xz" | xz -d >"$index"
fi
field() { # PACKAGE FIELD: the field of the package in the index
    awk -v p="$1" -v f="$2:" '$1 == "Package:" { on = ($2 == p) } on && $1 == f { print $2; exit }' "$index"
}
kernel="$(field "$kernel_pkg" Depends | sed 's/[ ,(].*//')"
[ -n "$kernel" ] || { echo "image.sh: no $kernel_pkg in $index" >&2; exit 1; }
curl -fsS -o "$work/kernel.deb" "$mirror/$(field "$kernel" Filename)"
dpkg-deb -x "$work/kernel.deb" "$work/kernel"
version="$(ls "$work/kernel/lib/modules")"
depmod -b "$work/kernel" "$version"

echo "board image: initramfs (busybox, modules of $version)"
initrd="$work/initrd"
mkdir -p "$initrd"/{bin,dev,proc,sys,newroot,modules}
dpkg-deb -x "$(ls "$root"/var/cache/apt/archives/busybox-static_*_"$arch".deb)" "$work/busybox"
cp "$work/busybox/bin/busybox" "$initrd/bin/busybox"
# Each module after the ones it needs; builtins print "builtin NAME".
for module in virtio_pci virtio_blk ext4 virtio_net virtio_rng; do
    modprobe -d "$work/kernel" -S "$version" --show-depends "$module"
done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' >"$work/modules"
while read -r ko; do
    cp "$ko" "$initrd/modules/"
    basename "$ko" >>"$initrd/modules/order"
done <"$work/modules"
install -m 0755 "$here/init" "$initrd/init"
(cd "$initrd" && find . | cpio -o -H newc --quiet | gzip -9) >"$work/initrd.img"
cp "$work/kernel/boot/vmlinuz-$version" "$work/vmlinuz"

echo "board image: root filesystem"
ssh-keygen -q -t ed25519 -N '' -C wren-board -f "$work/id_ed25519"
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$work/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
cp -r "$here/rootfs/." "$root/"
install -m 0755 "$here/setup.sh" "$root/root/board-setup.sh"
# Sparse: 3 GiB of room, a few hundred MB on disk.
mkfs.ext4 -q -L board -d "$root" "$work/disk.img" 3G

echo "board image: debootstrap's second stage, in the emulator (minutes under TCG)"
timeout 40m "$qemu" -M virt -cpu "$cpu" -accel tcg,thread=multi -smp 4 -m 1024 \
    -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
    -append "console=ttyAMA0 rdinit=/init" \
    -drive file="$work/disk.img",format=raw,if=none,id=disk -device virtio-blk-pci,drive=disk \
    -device virtio-rng-pci -nic none -display none -no-reboot \
    -serial file:"$work/second-stage.log" </dev/null || true
if ! grep -q BOARD-IMAGE-READY "$work/second-stage.log"; then
    tail -n 40 "$work/second-stage.log" >&2
    echo "image.sh: the second stage did not finish" >&2
    exit 1
fi

echo "$version" >"$work/kernel-version"
mkdir "$dir"
mv "$work"/{vmlinuz,initrd.img,disk.img,id_ed25519,id_ed25519.pub,kernel-version,second-stage.log} "$dir/"
echo "board image: ready in $dir (kernel $version)"
