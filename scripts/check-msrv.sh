#!/usr/bin/env bash
# Checks the declared `rust-version` (the workspace's minimum supported
# Rust) against what it can be: at least the highest `rust-version` any
# dependency in Cargo.lock declares for this platform, and at most the
# toolchain that runs the tests. (Code of our own that uses a newer std API
# than declared is caught by clippy's `incompatible_msrv` lint, which reads
# the same field.) Fails naming the dependency that needs more.
set -euo pipefail
cd "$(dirname "$0")/.."
declared="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
host="$(rustc -vV | sed -n 's/^host: //p')"
# "1.89" and "1.89.0" are the same version: compare as three numbers.
norm() { awk -F. '{ printf "%05d%05d%05d\n", $1, $2, ($3 == "" ? 0 : $3) }' <<<"$1"; }
read -r need_version need_crate < <(
    cargo metadata --format-version 1 --locked --filter-platform "$host" |
        jq -r '(.resolve.nodes | map(.id)) as $ids
            | .packages[] | select(.id as $i | $ids | index($i))
            | select(.rust_version != null) | "\(.rust_version) \(.name)"' |
        while read -r v name; do echo "$(norm "$v") $v $name"; done |
        sort | tail -n1 | cut -d' ' -f2-
)
toolchain="$(rustc --version | cut -d' ' -f2)"
if [[ "$(norm "$declared")" < "$(norm "$need_version")" ]]; then
    echo "msrv: Cargo.toml declares rust-version $declared, but $need_crate needs $need_version" >&2
    exit 1
fi
if [[ "$(norm "$toolchain")" < "$(norm "$declared")" ]]; then
    echo "msrv: rustc $toolchain is older than the declared rust-version $declared" >&2
    exit 1
fi
echo "msrv: rust-version $declared (highest a dependency needs: $need_crate $need_version; testing with rustc $toolchain)"
