#!/usr/bin/env bash
# Runs Dovecot's imaptest (its scripted protocol tests) through Ferry, next
# to the same tests straight against the demo's NEW store, so a failure can be
# told apart from the store's own behaviour.
#
#   IMAPTEST=/path/to/imaptest/src/imaptest deploy/demo/imaptest.sh
#
# imaptest is not packaged by Debian. Build it from its release-2.3 branch:
#   apt-get install dovecot-dev autoconf automake libtool make
#   (Debian's 2.3.19 headers take a fourth argument, NULL, in its three
#   imap_parser_create() calls)
#   ./autogen.sh && ./configure --with-dovecot=/usr/lib/dovecot && make
#
# Needs the demo running (deploy/demo/up.sh). Starts a second Ferry with the
# demo's configuration on other ports with plaintext logins allowed (the
# tests speak plain IMAP), runs every script in imaptest's tests/ directory
# as bob (phase new) and alice (phase merged), prints each summary and stops
# that Ferry again. The demo's mailboxes are changed by the tests.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN=$HERE/run
IMAPTEST=${IMAPTEST:?set IMAPTEST to the imaptest binary (see the top of this script)}
TESTS=${IMAPTEST_TESTS:-$(dirname "$IMAPTEST")/tests}
PORT=19143
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}:/usr/lib/dovecot

[[ -s $RUN/ferry.toml ]] || { echo "imaptest.sh: start the demo first (deploy/demo/up.sh)" >&2; exit 1; }
# The release build up.sh made: target/ unless CARGO_TARGET_DIR (or a cargo config) says otherwise.
TARGET=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') || TARGET=$ROOT/target
BIN=$TARGET/release/ferry
[[ -x $BIN ]] || { echo "imaptest.sh: no release build in $TARGET (cargo build --release)" >&2; exit 1; }

CONFIG=$RUN/ferry-imaptest.toml
sed -e "s/^imaps = .*/imaps = \"127.0.0.1:19993\"/" \
    -e "s/^imap  = .*/imap  = \"127.0.0.1:$PORT\"/" \
    -e 's/^allow_plaintext = .*/allow_plaintext = true/' \
    -e '/^\[metrics\]/,$d' "$RUN/ferry.toml" >"$CONFIG" # no metrics listener, no second copier
"$BIN" --config "$CONFIG" >"$RUN/ferry-imaptest.log" 2>&1 &
FERRY=$!
trap 'kill $FERRY 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

run() {
    local label=$1 port=$2 user=$3
    echo "== $label"
    "$IMAPTEST" host=127.0.0.1 port="$port" user="$user" pass=demo-password test="$TESTS" 2>&1 |
        grep -E 'test groups|individual commands|^Error|^Panic' || true
}
run "NEW store directly, bob" 11143 bob
run "Ferry, bob (phase new)" "$PORT" bob
run "Ferry, alice (phase merged)" "$PORT" alice
