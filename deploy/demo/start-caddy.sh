#!/usr/bin/env bash
# Makes sure Caddy's admin API answers on 127.0.0.1:2019, so that platformctl can give
# each learner an address. When nothing answers there, starts `caddy run` in the
# background with a small config kept in STATE_DIR, and waits for it. When something
# answers already, changes nothing. Safe to run again.
#
# Usage (as root): deploy/demo/start-caddy.sh STATE_DIR
#   e.g. deploy/demo/start-caddy.sh /var/lib/platformctl-demo
#
# STATE_DIR receives:
#   caddy.json  the config Caddy starts from: its admin API, nothing else
#   caddy.log   Caddy's output
#   caddy.pid   the process id of the Caddy this script started
#
# Caddy saves every change made through its admin API (platformctl's server and the
# learners' routes) to $XDG_CONFIG_HOME/caddy/autosave.json, and `--resume` starts
# from that saved config when there is one. So after a reboot, running this script
# again brings the learners' addresses back as they were.
set -euo pipefail

readonly PROG=start-caddy.sh
readonly ADMIN=127.0.0.1:2019

die() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    exit 1
}

say() {
    printf '==> %s\n' "$*" >&2
}

admin_answers() {
    curl -fsS -m 2 -o /dev/null "http://$ADMIN/config/" 2>/dev/null
}

if [[ $# -ne 1 || $1 == -* ]]; then
    die "usage: $PROG STATE_DIR (for example /var/lib/platformctl-demo)"
fi
state=$1
[[ -d $state ]] || die "no state folder '$state'; run prepare-host.sh first"
for tool in caddy curl; do
    command -v "$tool" >/dev/null \
        || die "'$tool' was not found on PATH; run: apt-get install $tool"
done

if admin_answers; then
    say "Caddy's admin API answers on $ADMIN"
    exit 0
fi

printf '{"admin": {"listen": "%s"}}\n' "$ADMIN" >"$state/caddy.json"

say "starting Caddy, admin API on $ADMIN, log in $state/caddy.log"
# In a session of its own, so that it outlives this script and the terminal.
setsid caddy run --config "$state/caddy.json" --resume \
    >>"$state/caddy.log" 2>&1 </dev/null &
pid=$!
printf '%s\n' "$pid" >"$state/caddy.pid"

deadline=$((SECONDS + 20))
until admin_answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
        die "caddy exited at start; see $state/caddy.log"
    fi
    if ((SECONDS >= deadline)); then
        die "Caddy's admin API did not answer on $ADMIN within 20 s;" \
            "see $state/caddy.log"
    fi
    sleep 0.2
done
say "Caddy answers on $ADMIN"
