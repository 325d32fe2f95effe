#!/usr/bin/env bash
# Builds the release binary for shipping: its debug information (line tables,
# for backtraces and profilers) is split out into dist/ferry.debug, and the
# binary keeps only a link to it (.gnu_debuglink), as Debian's -dbgsym
# packages do. Put ferry.debug next to the binary (or in
# /usr/lib/debug/.build-id) when you want symbolised backtraces and perf.
#   scripts/dist.sh [DIR]     (default: dist/)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-dist}
cargo build --release --locked --bin ferry
mkdir -p "$out"
objcopy --only-keep-debug target/release/ferry "$out/ferry.debug"
objcopy --strip-debug --strip-unneeded --add-gnu-debuglink="$out/ferry.debug" \
    target/release/ferry "$out/ferry"
chmod 0755 "$out/ferry"
ls -l "$out/ferry" "$out/ferry.debug"
