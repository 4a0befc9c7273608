#!/usr/bin/env bash
# Prints where every thread was in each core that QEMU user emulation left
# under the current folder, then removes the cores. QEMU writes a guest
# process's core itself, as qemu_<program>_<time>_<pid>.core in that
# process's working folder, when the process dies of a signal and
# `ulimit -c` allows it (scripts/test.sh allows it for its QEMU stage).
# A test binary that aborts under emulation without a word (C code calling
# abort(), a signal) is then located instead of guessed at.
#
#   scripts/qemu-cores.sh BIN_DIR...   # folders holding the programs
#   scripts/qemu-cores.sh --remove     # only removes them (a stage that
#                                      # passed: tests/panic.rs aborts on purpose)
set -uo pipefail

mapfile -t cores < <(find . -path ./target -prune -o -type f -name 'qemu_*.core' -print)
if [ "${1:-}" = --remove ]; then
    rm -f "${cores[@]}"
    cores=()
fi
for core in "${cores[@]}"; do
    name=$(basename "$core")
    prog=$(sed -E 's/^qemu_(.*)_[0-9]{8}-[0-9]{6}_[0-9]+\.core$/\1/' <<<"$name")
    bin=$(find "$@" -maxdepth 1 -type f -name "$prog" 2>/dev/null | head -1)
    echo "=== $core ($prog)"
    if [ -z "$bin" ]; then
        echo "(no program named $prog in $*: no symbols)"
    fi
    # The C libraries the program ran with: those QEMU was given (-L).
    case $(readelf -h "$core" | awk '/Machine:/ { print $2 }') in
        AArch64) sysroot=/usr/aarch64-linux-gnu ;;
        ARM) sysroot=/usr/arm-linux-gnueabihf ;;
        *) sysroot=/ ;;
    esac
    # Programs are position independent: their symbols go where QEMU
    # loaded them, the entry point the core's auxv records less the one
    # the file declares.
    load=()
    if [ -n "$bin" ]; then
        at_entry=$(gdb-multiarch -batch -ex "core-file $core" -ex "info auxv" 2>/dev/null |
            awk '$2 == "AT_ENTRY" { print $(NF) }')
        e_entry=$(readelf -h "$bin" | awk '/Entry point address/ { print $NF }')
        offset=0
        [ -n "$at_entry" ] && [ -n "$e_entry" ] && offset=$(printf '0x%x' $((at_entry - e_entry)))
        load=(-ex "exec-file $bin" -ex "symbol-file -o $offset $bin")
    fi
    gdb-multiarch -batch -ex "set sysroot $sysroot" "${load[@]}" -ex "core-file $core" \
        -ex "thread apply all bt 40" 2>&1 | grep -v '^$'
    rm -f "$core"
done
# QEMU itself dumps too (a host core of the emulator, useless here).
find . -path ./target -prune -o -maxdepth 3 -type f -name core -print0 | xargs -0 -r rm -f
