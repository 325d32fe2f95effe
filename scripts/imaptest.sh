#!/usr/bin/env bash
# Dovecot's imaptest (its scripted compliance tests) straight against a NEW
# Dovecot store, then the same tests through Ferry in phase merged, so that
# Ferry's failures can be told apart from the store's own.
#
#   scripts/imaptest.sh [extra imaptest arguments, e.g. no_pipelining]
#
# Environment:
#   IMAPTEST        the imaptest binary (default /work/imaptest-build/src/imaptest)
#   IMAPTEST_TESTS  imaptest's test scripts (default: tests/ next to the binary,
#                   i.e. imaptest's src/tests)
#   FERRY           a Ferry binary to use as is; without it, `cargo build --release`
#                   runs first and its target/release/ferry is used
#   IMAPTEST_TIMEOUT  seconds each imaptest run may take (default 900)
#   RUST_LOG        Ferry's log level (default info)
#
# Everything lives in a fresh temporary directory (/tmp/ferry-imaptest.*):
# an OLD Dovecot (prefix "INBOX.", delimiter ".") and a NEW Dovecot (prefix "",
# delimiter "/") on free loopback ports, both knowing one throw-away user, and
# Ferry on a plaintext listener (no TLS, plaintext logins allowed) with that
# user in phase merged. The stores' configuration follows deploy/demo/up.sh
# and tests/common/mod.rs. The processes are stopped when the script exits;
# the directory stays, with the full imaptest outputs and the logs, for a look.
#
# imaptest is not packaged by Debian. Build it from its release-2.3 branch (the
# newer ones need Dovecot 2.4), outside this repository:
#   apt-get install dovecot-dev autoconf automake libtool pkg-config make gcc
#   git clone -b release-2.3 https://github.com/dovecot/imaptest /work/imaptest-build
#   cd /work/imaptest-build
#   # Debian's 2.3.19 headers give imap_parser_create() a fourth argument
#   # (const struct imap_parser_params *): pass NULL in its three calls.
#   sed -i 's/(size_t)-1)/(size_t)-1, NULL)/' src/commands.c src/test-parser.c src/imap-client.c
#   ./autogen.sh && ./configure --with-dovecot=/usr/lib/dovecot LDFLAGS=-Wl,-rpath,/usr/lib/dovecot && make
#
# In test mode imaptest works in a mailbox of its own ("imaptest", the default
# box=), which it deletes and recreates per test group; the tests needing a
# second user (user2=, only urlauth2) are skipped.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
IMAPTEST=${IMAPTEST:-/work/imaptest-build/src/imaptest}
IMAPTEST_TESTS=${IMAPTEST_TESTS:-$(dirname "$IMAPTEST")/tests}
IMAPTEST_TIMEOUT=${IMAPTEST_TIMEOUT:-900}
TEST_USER=imaptester
# Dovecot is in /usr/sbin, which is not on a normal user's PATH.
export PATH="$PATH:/usr/sbin:/sbin"
# For an imaptest linked without an rpath to Dovecot's libraries.
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/lib/dovecot

die() {
    echo "imaptest.sh: $*" >&2
    exit 1
}

[[ -x $IMAPTEST ]] || die "no imaptest binary at $IMAPTEST (set IMAPTEST; see the top of this script)"
[[ -d $IMAPTEST_TESTS ]] || die "no test directory $IMAPTEST_TESTS (set IMAPTEST_TESTS to imaptest's src/tests)"
command -v dovecot >/dev/null 2>&1 || die "dovecot not found (apt-get install dovecot-imapd)"
command -v python3 >/dev/null 2>&1 || die "python3 not found"

if [[ -n ${FERRY:-} ]]; then
    [[ -x $FERRY ]] || die "FERRY=$FERRY is not executable"
else
    echo "==> building Ferry (cargo build --release)"
    (cd "$ROOT" && cargo build --release)
    # target/ unless CARGO_TARGET_DIR (or a cargo config) says otherwise.
    TARGET=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') ||
        TARGET=$ROOT/target
    FERRY=$TARGET/release/ferry
    [[ -x $FERRY ]] || die "cargo build did not produce $FERRY"
fi

# /tmp: short paths (Dovecot's unix sockets must stay under 108 bytes), and a
# directory the dovecot user can enter.
WORK=$(mktemp -d /tmp/ferry-imaptest.XXXXXX)
chmod 755 "$WORK"
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(12))')

# Processes to stop at exit: Ferry's pid, and the Dovecot masters' pid files.
FERRY_PID=""
cleanup() {
    local status=$? pid pids=()
    if [[ -n $FERRY_PID ]] && kill -0 "$FERRY_PID" 2>/dev/null; then
        kill -TERM "$FERRY_PID" 2>/dev/null || true
        pids+=("$FERRY_PID")
    fi
    for store in old new; do
        [[ -s $WORK/$store/base/master.pid ]] || continue
        pid=$(<"$WORK/$store/base/master.pid")
        # Only the master this script started (its command line names our config).
        if [[ $pid =~ ^[0-9]+$ ]] &&
            [[ $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") == *"$WORK/$store/dovecot.conf"* ]]; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do # up to 10 s each
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    done
    echo "(stopped Ferry and both Dovecot stores; files stay in $WORK)"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Three distinct free loopback ports (a port could be taken between this probe
# and the bind; then a start fails with the log printed, and a rerun helps).
read -r OLD_PORT NEW_PORT FERRY_PORT < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*(s.getsockname()[1] for s in socks))
EOF
)

# True when 127.0.0.1:$1 answers with an IMAP greeting.
greets() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        IFS= read -r -t 2 line <&3 || exit 1
        [[ $line == "* OK"* ]]
    ) 2>/dev/null
}

# write_store NAME PORT: $WORK/NAME/{dovecot.conf,passwd} and its directories.
write_store() {
    local name=$1 port=$2 dir=$WORK/$1 namespace mail_location userdb_ids privsep="" login_chroot=""
    mkdir -p "$dir/base" "$dir/state" "$dir/mail"
    printf '%s:%s\n' "$TEST_USER" "$PASSWORD" >"$dir/passwd"
    if [[ $name == old ]]; then
        # The legacy layout: everything under "INBOX.", delimiter ".".
        mail_location='maildir:~/Maildir'
        namespace='namespace inbox {
  inbox = yes
  prefix = INBOX.
  separator = .
  mailbox Sent {
    special_use = \Sent
    auto = create
  }
}'
    else
        mail_location='maildir:~/Maildir:LAYOUT=fs'
        namespace='namespace inbox {
  inbox = yes
  prefix =
  separator = /
  mailbox Sent {
    special_use = \Sent
    auto = subscribe
  }
  mailbox Drafts {
    special_use = \Drafts
    auto = subscribe
  }
  mailbox Trash {
    special_use = \Trash
    auto = subscribe
  }
  mailbox Junk {
    special_use = \Junk
    auto = subscribe
  }
}'
    fi
    if [[ $(id -u) -eq 0 ]]; then
        # Dovecot refuses to access mail as uid 0: the mail belongs to the packaged user.
        userdb_ids='uid=dovecot gid=dovecot'
        chown -R dovecot:dovecot "$dir/mail"
        chgrp dovecot "$dir/passwd"
        chmod 640 "$dir/passwd"
        chmod 755 "$dir" "$dir/base" "$dir/state"
    else
        # Without root: no privilege separation, no chroot; every process runs as us.
        userdb_ids="uid=$(id -u) gid=$(id -g)"
        privsep="default_internal_user = $(id -un)
default_login_user = $(id -un)
default_internal_group = $(id -gn)"
        login_chroot="chroot ="
    fi
    cat >"$dir/dovecot.conf" <<EOF
# imaptest run: the ${name^^} store. Generated by scripts/imaptest.sh.
protocols = imap
listen = 127.0.0.1
base_dir = $dir/base
state_dir = $dir/state
log_path = $dir/dovecot.log
instance_name = ferry-imaptest-$name-$$
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = $mail_location
mail_max_userip_connections = 1000
first_valid_uid = 1
$privsep

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dir/passwd
}
userdb {
  driver = static
  args = $userdb_ids home=$dir/mail/%u
}

$namespace

service anvil {
  ${login_chroot}
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service imap-login {
  $login_chroot
  process_limit = 500
  inet_listener imap {
    address = 127.0.0.1
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
service imap {
  process_limit = 500
}
EOF
}

# start_store NAME PORT: starts Dovecot (it daemonizes) and waits for its greeting.
start_store() {
    local name=$1 port=$2 dir=$WORK/$1
    if ! dovecot -c "$dir/dovecot.conf" </dev/null >/dev/null 2>"$dir/dovecot.stderr"; then
        cat "$dir/dovecot.stderr" >&2
        tail -n 20 "$dir/dovecot.log" >&2 2>/dev/null || true
        die "Dovecot (${name^^}) did not start; config: $dir/dovecot.conf"
    fi
    for _ in $(seq 100); do # up to 10 s
        if greets "$port"; then
            echo "${name^^} store: Dovecot on 127.0.0.1:$port (pid $(<"$dir/base/master.pid")), log $dir/dovecot.log"
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$dir/dovecot.log" >&2 2>/dev/null || true
    die "Dovecot (${name^^}) does not answer on 127.0.0.1:$port; log: $dir/dovecot.log"
}

start_ferry() {
    cat >"$WORK/ferry.toml" <<EOF
# imaptest run: Ferry in phase merged, plaintext. Generated by scripts/imaptest.sh.
[listen]
imap = "127.0.0.1:$FERRY_PORT"

[auth]
allow_plaintext = true

[backends.old]
address = "127.0.0.1:$OLD_PORT"
tls = "none"

[backends.new]
address = "127.0.0.1:$NEW_PORT"
tls = "none"

[namespace]
old_prefix = "Old/"
delimiter = "/"

[migration]
default_phase = "merged"

[migration.users]
"$TEST_USER" = "merged"

[state]
url = "sqlite://$WORK/state.db"
EOF
    "$FERRY" check-config "$WORK/ferry.toml" >/dev/null ||
        die "ferry check-config rejected $WORK/ferry.toml"
    NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} "$FERRY" --config "$WORK/ferry.toml" \
        </dev/null >"$WORK/ferry.log" 2>&1 &
    FERRY_PID=$!
    for _ in $(seq 150); do # up to 15 s
        if greets "$FERRY_PORT"; then
            echo "Ferry: 127.0.0.1:$FERRY_PORT (pid $FERRY_PID, phase merged), log $WORK/ferry.log"
            return 0
        fi
        kill -0 "$FERRY_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 30 "$WORK/ferry.log" >&2 || true
    die "Ferry did not come up on 127.0.0.1:$FERRY_PORT; log: $WORK/ferry.log"
}

# run_imaptest LABEL PORT OUTPUT [extra args]: one full run, its output to OUTPUT.
run_imaptest() {
    local label=$1 port=$2 out=$3 status=0
    shift 3
    echo
    echo "==> imaptest: $label (127.0.0.1:$port)"
    timeout "$IMAPTEST_TIMEOUT" "$IMAPTEST" host=127.0.0.1 port="$port" \
        user="$TEST_USER" pass="$PASSWORD" test="$IMAPTEST_TESTS" "$@" \
        </dev/null >"$out" 2>&1 || status=$?
    [[ $status -eq 124 ]] && echo "(imaptest timed out after ${IMAPTEST_TIMEOUT}s)" >>"$out"
    echo "exit status $status; full output: $out"
}

# summary LABEL OUTPUT: imaptest's closing counts and the failing groups.
summary() {
    local label=$1 out=$2
    echo "--- $label"
    if ! grep -E 'test groups:|individual commands failed|timed out' "$out"; then
        echo "(no summary: imaptest did not finish; its last lines:)"
        tail -n 5 "$out" | sed 's/^/  /'
    fi
    # imaptest reports each failure as "*** Test NAME command N/M (line L)"
    # followed by " - failed: WHY".
    if grep -q '^\*\*\* Test ' "$out"; then
        echo "failing commands:"
        grep -A1 '^\*\*\* Test ' "$out" | grep -v '^--$' | sed 's/^/  /'
    fi
}

echo "==> temporary directory $WORK"
write_store old "$OLD_PORT"
write_store new "$NEW_PORT"
start_store old "$OLD_PORT"
start_store new "$NEW_PORT"
start_ferry

DIRECT_OUT=$WORK/imaptest-direct-new.txt
FERRY_OUT=$WORK/imaptest-ferry-merged.txt
run_imaptest "directly against NEW" "$NEW_PORT" "$DIRECT_OUT" "$@"
run_imaptest "through Ferry (phase merged)" "$FERRY_PORT" "$FERRY_OUT" "$@"

echo
echo "==> summaries"
summary "NEW store directly" "$DIRECT_OUT"
summary "Ferry, phase merged" "$FERRY_OUT"
echo
echo "full outputs: $DIRECT_OUT"
echo "              $FERRY_OUT"
echo "logs:         $WORK/ferry.log $WORK/new/dovecot.log $WORK/old/dovecot.log"
