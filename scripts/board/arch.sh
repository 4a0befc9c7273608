# The two emulated boards, sourced by the board scripts:
#   board_arch ARCH   sets kernel_pkg, qemu, cpu and targets for ARCH
# arm64: a Pi 4-class board (Cortex-A72) on 64-bit Debian, the static
# aarch64 musl release. armhf: a 32-bit ARMv7 board (Cortex-A15: QEMU's
# virt board has no A53/A72 in 32-bit mode) on Debian's armhf port, the
# armv7 release (musl when rustup has its standard library, else glibc).
board_arch() {
    case "$1" in
    arm64)
        kernel_pkg=linux-image-arm64 qemu=qemu-system-aarch64 cpu=cortex-a72
        targets=(aarch64-unknown-linux-musl)
        ;;
    armhf)
        kernel_pkg=linux-image-armmp-lpae qemu=qemu-system-arm cpu=cortex-a15
        targets=(armv7-unknown-linux-musleabihf armv7-unknown-linux-gnueabihf)
        ;;
    *)
        echo "board: ARCH is arm64 or armhf, not ${1:-nothing}" >&2
        return 2
        ;;
    esac
}
