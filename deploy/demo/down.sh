#!/usr/bin/env bash
# Stops what deploy/demo/up.sh started: Ferry, the OLD and NEW Dovecot stores and, if
# it was started, Prometheus. Only the processes whose pids up.sh recorded in
# deploy/demo/run/ are signalled. Safe to run any number of times. The data in run/
# stays until the next up.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUN=$HERE/run

# stop LABEL PIDFILE NEEDLE: SIGTERM, wait up to 10 s, then SIGKILL. NEEDLE must occur
# in the process's command line (the config file up.sh gave it), so a stale pid file
# naming some other process is ignored.
stop() {
    local label=$1 pidfile=$2 needle=$3 pid
    [[ -s $pidfile ]] || return 0
    pid=$(<"$pidfile")
    if [[ ! $pid =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null ||
        [[ $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") != *"$needle"* ]]; then
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$label (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    echo "stopped $label (pid $pid)"
}

stop Ferry "$RUN/ferry.pid" "$RUN/ferry.toml"
stop Prometheus "$RUN/prometheus.pid" "$RUN/prometheus.yml"
# The Dovecot master stops its own children on SIGTERM.
stop "Dovecot OLD store" "$RUN/old/base/master.pid" /old/dovecot.conf
stop "Dovecot NEW store" "$RUN/new/base/master.pid" /new/dovecot.conf
