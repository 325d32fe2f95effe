#!/usr/bin/env bash
# Ferry demo on one machine (Debian 12): two throw-away Dovecot stores with sample
# mail and Ferry in front of them.
#
#   OLD store  127.0.0.1:10143  legacy layout: prefix "INBOX.", delimiter "."
#   NEW store  127.0.0.1:11143  Dovecot layout: prefix "", delimiter "/"
#   Ferry      127.0.0.1:9993 (implicit TLS), 127.0.0.1:9143 (STARTTLS),
#              http://127.0.0.1:9154/metrics (also /healthz, /readyz)
#   Prometheus http://127.0.0.1:9090, only when the prometheus package is installed
#   users      alice / demo-password (phase merged), bob / demo-password (phase new)
#
# The migration engine runs too: both stores admit a master user ("ferry", its
# random password in run/master.secret), and Ferry's background copier logs in as
# it and copies alice's OLD mail (about 1,060 messages) into NEW under Old/, paced
# at 20 messages a second, while she can go on working through Ferry. Watch it with
#   ferry --config deploy/demo/run/ferry.toml migration status alice
#
# Everything it makes lives in deploy/demo/run/ (git-ignored), which is wiped and
# recreated on every run; deploy/demo/down.sh stops it all. Safe to run again.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN=$HERE/run

OLD_PORT=10143
NEW_PORT=11143
IMAPS_PORT=9993
IMAP_PORT=9143
METRICS_PORT=9154
PROMETHEUS_PORT=9090
PROMETHEUS_LINE="Prometheus: not started"
GRAFANA_PORT=3000
PASSWORD=demo-password
USERS=(alice bob)
# The copier's master user on both stores; its password is made afresh per run.
MASTER_USER=ferry

# /usr/sbin holds dovecot but is not on a normal user's PATH; rustup puts cargo in ~/.cargo/bin.
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"

say() { printf '\n==> %s\n' "$*"; }
die() {
    printf '\nup.sh: %s\n' "$*" >&2
    exit 1
}
if [[ $(id -u) -eq 0 ]]; then IS_ROOT=1; else IS_ROOT=0; fi

as_root() {
    if [[ $IS_ROOT -eq 1 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (run up.sh as root, or install sudo)"
    fi
}

# --- 1. packages ------------------------------------------------------------------
install_packages() {
    local missing=()
    dpkg-query -W -f='${Status}' dovecot-imapd 2>/dev/null | grep -q 'install ok installed' ||
        missing+=(dovecot-imapd)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    # The TLS library Ferry uses (aws-lc-rs) compiles C code.
    command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    say "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    if [[ " ${missing[*]} " == *" dovecot-imapd "* ]]; then
        # The package starts a system-wide Dovecot on 143/993; the demo runs its own.
        as_root systemctl stop dovecot >/dev/null 2>&1 ||
            as_root service dovecot stop >/dev/null 2>&1 || true
        echo "(stopped the system dovecot service the package started; the demo does not use it)"
    fi
}

# --- 2. build ---------------------------------------------------------------------
build_ferry() {
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found. Install Rust with rustup (https://rustup.rs), e.g.
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
then open a new shell (or: . \"\$HOME/.cargo/env\") and run $0 again.
(Debian 12's own cargo is too old for this crate.)"
    say "building Ferry (cargo build --release)"
    (cd "$ROOT" && cargo build --release)
    # Where cargo puts it: target/ unless CARGO_TARGET_DIR (or a cargo config) says
    # otherwise; `cargo metadata` knows.
    local target
    target=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') ||
        target=$ROOT/target
    FERRY=$target/release/ferry
    [[ -x $FERRY ]] || die "cargo build did not produce $FERRY"
}

# --- 3. helpers -------------------------------------------------------------------
# True when something on 127.0.0.1:$1 answers with an IMAP greeting ("* OK ...").
greets() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        IFS= read -r -t 2 line <&3 || exit 1
        [[ $line == "* OK"* ]]
    ) 2>/dev/null
}

# True when 127.0.0.1:$1 accepts a TCP connection.
accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# --- 4. Dovecot stores --------------------------------------------------------------
# write_store NAME PORT: writes $RUN/NAME/{dovecot.conf,passwd} and the directories.
write_store() {
    local name=$1 port=$2 dir namespace mail_location userdb_ids privsep="" login_chroot=""
    mkdir -p "$RUN/$name"
    dir=$(cd "$RUN/$name" && pwd -P) # Dovecot gets the real path, not a symlink
    mkdir -p "$dir/base" "$dir/state" "$dir/mail"
    : >"$dir/passwd"
    for u in "${USERS[@]}"; do
        printf '%s:{PLAIN}%s\n' "$u" "$PASSWORD" >>"$dir/passwd"
    done
    # The copier's master user: it logs in as any user with its own password.
    (umask 077 && printf '%s:{PLAIN}%s\n' "$MASTER_USER" "$(head -n 1 "$RUN/master.secret")" \
        >"$dir/master-passwd")

    if [[ $name == old ]]; then
        # Courier/Cyrus-style legacy layout: everything under "INBOX.", delimiter ".".
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

    if [[ $IS_ROOT -eq 1 ]]; then
        # Dovecot refuses to access mail as uid 0: mail belongs to the packaged user.
        userdb_ids='uid=dovecot gid=dovecot'
        chown -R dovecot:dovecot "$dir/mail"
        chgrp dovecot "$dir/passwd" "$dir/master-passwd"
        chmod 640 "$dir/passwd" "$dir/master-passwd"
        chmod 755 "$dir" "$dir/base" "$dir/state"
    else
        # No privilege separation without root: every Dovecot process runs as us.
        local me
        me=$(id -un)
        userdb_ids="uid=$(id -u) gid=$(id -g)"
        # and chroot needs root.
        privsep="default_internal_user = $me
default_login_user = $me
default_internal_group = $(id -gn)
service anvil {
  chroot =
}"
        login_chroot="chroot ="
    fi

    cat >"$dir/dovecot.conf" <<EOF
# Ferry demo: the ${name^^} store. Generated by deploy/demo/up.sh; do not edit.
protocols = imap
listen = 127.0.0.1
base_dir = $dir/base
state_dir = $dir/state
log_path = $dir/dovecot.log
instance_name = ferry-demo-$name
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = $mail_location
first_valid_uid = 1
$privsep

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dir/passwd
}
# Master logins (SASL PLAIN with an authorization identity, or LOGIN
# "user*$MASTER_USER"): Ferry's copier acting for a user. pass = yes then checks that
# the user exists in the passdb above.
auth_master_user_separator = *
passdb {
  driver = passwd-file
  master = yes
  pass = yes
  args = scheme=PLAIN $dir/master-passwd
}
userdb {
  driver = static
  args = $userdb_ids home=$dir/mail/%u
}

$namespace

service imap-login {
  $login_chroot
  inet_listener imap {
    address = 127.0.0.1
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
EOF
}

# start_store NAME PORT: starts Dovecot (it daemonizes) and waits for its greeting.
start_store() {
    local name=$1 port=$2 dir=$RUN/$1 pid=""
    # The daemonized master keeps its stderr open: a file, not a pipe we would wait on.
    if ! dovecot -c "$dir/dovecot.conf" </dev/null >/dev/null 2>"$dir/dovecot.stderr"; then
        cat "$dir/dovecot.stderr" >&2
        tail -n 20 "$dir/dovecot.log" >&2 2>/dev/null || true
        die "Dovecot ($name store) did not start; config: $dir/dovecot.conf"
    fi
    for _ in $(seq 100); do # up to ~10 s
        [[ -z $pid && -s $dir/base/master.pid ]] && pid=$(<"$dir/base/master.pid")
        greets "$port" && {
            pid=$(<"$dir/base/master.pid")
            echo "${name^^} store: Dovecot pid $pid on 127.0.0.1:$port"
            return 0
        }
        [[ -n $pid ]] && ! alive "$pid" && break
        sleep 0.1
    done
    cat "$dir/dovecot.stderr" >&2
    tail -n 20 "$dir/dovecot.log" >&2 2>/dev/null || true
    die "Dovecot ($name store) does not answer on 127.0.0.1:$port; log: $dir/dovecot.log"
}

# --- 5. Ferry ---------------------------------------------------------------------
write_ferry_config() {
    cat >"$RUN/ferry.toml" <<EOF
# Ferry demo configuration. Generated by deploy/demo/up.sh; see deploy/ferry.example.toml
# for every key with its meaning.

[listen]
imaps = "127.0.0.1:$IMAPS_PORT"   # implicit TLS
imap  = "127.0.0.1:$IMAP_PORT"    # STARTTLS

[tls]
cert = "$RUN/cert.pem"
key  = "$RUN/key.pem"

[auth]
allow_plaintext = false

[backends.old]
address = "127.0.0.1:$OLD_PORT"
tls = "none"

[backends.new]
address = "127.0.0.1:$NEW_PORT"
tls = "none"

[namespace]
old_prefix = "Old/"
delimiter  = "/"

[migration]
default_phase = "merged"

[migration.users]
# alice is merged by default_phase too; naming her has the copier start on her at
# once rather than at her first login.
"alice" = "merged"
"bob" = "new"

[state]
url = "sqlite://$RUN/state.db"   # subscriptions to Old/ folders, the copier's ledger

[metrics]
listen = "127.0.0.1:$METRICS_PORT"   # /metrics, /healthz, /readyz over HTTP

# The background copier: every merged user's OLD mail into NEW (under Old/, the
# "archive" mode), a quick verification after each pass, then a delta pass every
# 5 minutes. The pace is low so that copying alice's mail takes about a minute.
[copier]
enabled = true
users_at_once = 2
pass_interval_secs = 300
verify = "quick"
mode = "archive"
retry_base_secs = 10
retry_max_secs = 300

[copier.pace.old]
messages_per_second = 20
bytes_per_second = 2000000

# The copier never has users' passwords: it logs in to both stores as their master
# user (the second passdb in run/old/dovecot.conf and run/new/dovecot.conf).
[copier.old_login]
mode = "master"
master_user = "$MASTER_USER"
master_password_file = "$RUN/master.secret"

[copier.new_login]
mode = "master"
master_user = "$MASTER_USER"
master_password_file = "$RUN/master.secret"
EOF
}

start_ferry() {
    local log=$RUN/ferry.log pid
    say "checking the configuration (ferry check-config)"
    if ! "$FERRY" check-config "$RUN/ferry.toml"; then
        die "ferry check-config rejected $RUN/ferry.toml"
    fi
    say "starting Ferry"
    NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} nohup "$FERRY" --config "$RUN/ferry.toml" \
        </dev/null >>"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$RUN/ferry.pid"
    for _ in $(seq 150); do # up to ~15 s
        accepts "$IMAPS_PORT" && break
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid" && accepts "$IMAPS_PORT" && tls_greets; then
        echo "Ferry: pid $pid on 127.0.0.1:$IMAPS_PORT (TLS) and 127.0.0.1:$IMAP_PORT (STARTTLS); log: $log"
        return 0
    fi
    local why="did not accept connections on 127.0.0.1:$IMAPS_PORT within 15 s"
    if ! alive "$pid"; then
        local status=0
        wait "$pid" 2>/dev/null || status=$?
        why="exited (status $status) right after starting"
    elif accepts "$IMAPS_PORT"; then
        why="accepts on 127.0.0.1:$IMAPS_PORT but sends no TLS IMAP greeting"
    fi
    echo "---- last lines of $log ----" >&2
    tail -n 30 "$log" >&2 || true
    echo "----" >&2
    die "Ferry $why."
}

# A TLS handshake against the demo certificate, then "* OK".
tls_greets() {
    python3 - "$IMAPS_PORT" "$RUN/cert.pem" <<'EOF' 2>/dev/null
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.settimeout(5)
        sys.exit(0 if s.recv(4096).startswith(b"* OK") else 1)
EOF
}

# Optional: a Prometheus of the demo's own (not the system service) scraping Ferry
# every 5 s with the rules of deploy/prometheus/alerts.yml, when the binary is
# installed. An extra: when it does not come up, the demo goes on without it.
# Sets PROMETHEUS_LINE for print_usage.
maybe_prometheus() {
    local log=$RUN/prometheus.log pid url=http://127.0.0.1:$PROMETHEUS_PORT
    if ! command -v prometheus >/dev/null 2>&1; then
        PROMETHEUS_LINE="Prometheus: not installed; apt-get install prometheus would add one to the demo (then run up.sh again)"
        return 0
    fi
    if accepts "$PROMETHEUS_PORT"; then
        PROMETHEUS_LINE="Prometheus: not started, 127.0.0.1:$PROMETHEUS_PORT is already in use"
        return 0
    fi
    say "starting Prometheus"
    cat >"$RUN/prometheus.yml" <<EOF
# Ferry demo: Prometheus scraping Ferry. Generated by deploy/demo/up.sh; do not edit.
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - "$ROOT/deploy/prometheus/alerts.yml"
scrape_configs:
  - job_name: ferry
    static_configs:
      - targets: ["127.0.0.1:$METRICS_PORT"]
EOF
    nohup prometheus --config.file="$RUN/prometheus.yml" \
        --storage.tsdb.path="$RUN/prometheus-data" \
        --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
        </dev/null >>"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$RUN/prometheus.pid"
    for _ in $(seq 100); do # up to ~10 s
        accepts "$PROMETHEUS_PORT" && break
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid" && accepts "$PROMETHEUS_PORT"; then
        echo "Prometheus: pid $pid on $url; log: $log"
        PROMETHEUS_LINE="Prometheus: $url (try: sum by (phase) (ferry_sessions_active), ferry_migration_messages_remaining; alerts: $url/alerts)"
        return 0
    fi
    # Not up within 10 s, or exited. The demo goes on without it; down.sh stops it
    # should it still be starting.
    kill -TERM "$pid" 2>/dev/null || true
    echo "---- last lines of $log ----" >&2
    tail -n 10 "$log" >&2 || true
    echo "----" >&2
    PROMETHEUS_LINE="Prometheus: did not start; see $(show "$log")"
    echo "$PROMETHEUS_LINE" >&2
}

# alice's record in the state store: "STATE FOLDERS" (her migration state and the
# number of folders her pass found), or nothing when there is no record yet.
migration_state() {
    "$FERRY" --config "$RUN/ferry.toml" migration status alice --json 2>/dev/null |
        python3 -c 'import json, sys; u = json.load(sys.stdin)["user"]; print(u["state"], u["folders"])' 2>/dev/null
}

# The background copier takes alice up within seconds of the start. Her state is
# "copying" from the start of a pass, before it logs in; once both stores let the
# copier in, the pass lists her folders. A copier that cannot log in (the master
# passdb, the secret file) leaves her "failed" with the store's answer.
check_copier() {
    local state="" folders=0
    for _ in $(seq 75); do # up to ~15 s
        read -r state folders < <(migration_state || true) || true
        case $state in
        copying)
            if [[ ${folders:-0} -gt 0 ]]; then
                echo "Copier: copying alice's OLD mail into NEW ($folders folders)"
                return 0
            fi
            ;;
        synced | verified)
            echo "Copier: alice's OLD mail is already on NEW (state: $state)"
            return 0
            ;;
        failed) break ;;
        esac
        sleep 0.2
    done
    "$FERRY" --config "$RUN/ferry.toml" migration status alice >&2 || true
    echo "---- copier lines of $RUN/ferry.log ----" >&2
    grep -i 'migration\|copier' "$RUN/ferry.log" | tail -n 10 >&2 || true
    echo "----" >&2
    die "the background copier did not start on alice (state: ${state:-none})"
}

# Leaves nothing running when a step fails; the files in run/ stay for a look.
stop_on_failure() {
    local status=$?
    [[ $status -eq 0 ]] && return 0
    "$HERE/down.sh" >/dev/null 2>&1 || true
    echo "up.sh: stopped what this run had started; logs are in $RUN. Fix the problem and run $0 again." >&2
    exit "$status"
}

show() { printf '%s' "${1#"$PWD"/}"; }

# Where to see the migration on a dashboard. The demo does not run Grafana (Debian
# does not package it); one on its usual port gets the dashboard's address.
grafana_line() {
    local file
    file=$(show "$ROOT/deploy/grafana/ferry-dashboard.json")
    if accepts "$GRAFANA_PORT"; then
        echo "Grafana: http://127.0.0.1:$GRAFANA_PORT/d/ferry-imap-proxy (row Migration; import $file first, with the Prometheus above as data source)"
    else
        echo "Grafana: not part of the demo; import $file into yours, with the Prometheus above as data source (row Migration)"
    fi
}

print_usage() {
    local ca
    ca=$(show "$RUN/cert.pem")
    cat <<EOF

Ferry demo is up. Users: alice / $PASSWORD (phase merged: NEW folders plus OLD ones
read-only under Old/), bob / $PASSWORD (phase new: the NEW store only).

Talk IMAP by hand (-crlf: IMAP lines end in CRLF):
  openssl s_client -connect 127.0.0.1:$IMAPS_PORT -quiet -crlf -CAfile $ca
  a LOGIN alice $PASSWORD
  b LIST "" "*"
  c SELECT Old/INBOX
  d FETCH 1:* (FLAGS ENVELOPE)
  e LOGOUT

STARTTLS on 127.0.0.1:$IMAP_PORT:
  openssl s_client -connect 127.0.0.1:$IMAP_PORT -starttls imap -quiet -crlf -CAfile $ca

A mail client:
  neomutt -e 'set ssl_ca_certificates_file=$ca' -f imaps://alice@127.0.0.1:$IMAPS_PORT/

Python:
  python3 -c 'import imaplib,ssl; m=imaplib.IMAP4_SSL("127.0.0.1",$IMAPS_PORT,ssl_context=ssl.create_default_context(cafile="$ca")); m.login("alice","$PASSWORD"); print(*m.list()[1],sep="\n"); m.logout()'

The stores directly (no Ferry; plain IMAP): 127.0.0.1:$OLD_PORT (OLD), 127.0.0.1:$NEW_PORT (NEW).

The migration: Ferry's copier is copying alice's OLD mail into NEW (under Old/) in
the background, about a minute at the demo's pace, then checks it (state verified)
and passes over it again every 5 minutes. She can go on working meanwhile. Watch it:
  $(show "$FERRY") --config $(show "$RUN/ferry.toml") migration status alice
  curl -s http://127.0.0.1:$METRICS_PORT/metrics | grep ^ferry_migration
$(grafana_line)

Ferry's metrics: curl http://127.0.0.1:$METRICS_PORT/metrics (also /healthz and /readyz)
$PROMETHEUS_LINE
Logs: $(show "$RUN/ferry.log"), $(show "$RUN/old/dovecot.log"), $(show "$RUN/new/dovecot.log")
Stop: $(show "$HERE/down.sh")
EOF
}

# --- main -------------------------------------------------------------------------
main() {
    install_packages
    build_ferry

    say "resetting $RUN"
    "$HERE/down.sh"
    local old_alt
    old_alt=$(readlink "$RUN/old" 2>/dev/null || true)
    [[ $old_alt == /var/tmp/ferry-demo.*/old ]] && rm -rf "${old_alt%/old}"
    rm -rf "$RUN"
    mkdir -p "$RUN"
    trap stop_on_failure EXIT
    for port in $OLD_PORT $NEW_PORT $IMAPS_PORT $IMAP_PORT $METRICS_PORT; do
        accepts "$port" && die "127.0.0.1:$port is already in use (see: ss -ltnp 'sport = :$port'); stop whatever listens there"
    done

    "$ROOT/certs/make-demo-cert.sh" "$RUN"
    # The copier's master password, for both stores: readable by us alone.
    (umask 077 && openssl rand -hex 24 >"$RUN/master.secret")
    chmod 600 "$RUN/master.secret"

    if [[ $IS_ROOT -eq 1 ]]; then
        chmod 755 "$RUN"
        # Mail is accessed as the unprivileged `dovecot` user, which cannot enter a
        # clone under /root (0700 on Debian): then the stores live under /var/tmp.
        if ! runuser -u dovecot -- test -x "$RUN"; then
            local alt
            alt=$(mktemp -d /var/tmp/ferry-demo.XXXXXX)
            chmod 755 "$alt"
            mkdir "$alt/old" "$alt/new"
            ln -s "$alt/old" "$RUN/old"
            ln -s "$alt/new" "$RUN/new"
            echo "note: the dovecot user cannot enter $RUN (a parent directory is private);"
            echo "      the stores live in $alt, linked from run/old and run/new."
        fi
    fi

    say "starting the OLD and NEW Dovecot stores"
    write_store old "$OLD_PORT"
    write_store new "$NEW_PORT"
    start_store old "$OLD_PORT"
    start_store new "$NEW_PORT"

    say "seeding sample mail"
    python3 "$HERE/seed.py" --old "127.0.0.1:$OLD_PORT" --new "127.0.0.1:$NEW_PORT" --password "$PASSWORD"

    write_ferry_config
    start_ferry
    check_copier
    maybe_prometheus
    print_usage
}

main "$@"
