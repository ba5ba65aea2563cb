#!/usr/bin/env bash
# The demo behind `make demo`: make this Debian 12 machine ready (PostgreSQL,
# Docker, Caddy), build the workspace image offline, write the config with
# `platformctl init`, and provision one learner, printing the card with the address
# (through Caddy) and the passwords.
#
# Usage (as root): deploy/demo/demo.sh VENV
# PLATFORMCTL_DEMO_IMAGE picks the workspace image:
#   real     (the default) code-server, built by deploy/workspace-offline/build.sh;
#            about 8 minutes the first time, a second or so after that
#   standin  the busybox stand-in from deploy/standin/: quick, but not an editor
# Gitea stays off unless GITEA_URL and GITEA_TOKEN_FILE (a file holding an admin
# token, mode 600) are set in the environment.
set -euo pipefail

venv=${1:?usage: demo.sh VENV}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${PLATFORMCTL_DEMO_STATE:-/var/lib/platformctl-demo}
platformctl="$venv/bin/platformctl"
email=demo@example.com
proxy_port=8080

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'demo.sh: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs packages)"

case ${PLATFORMCTL_DEMO_IMAGE:-real} in
    real) image=platformctl/workspace:offline ;;
    standin) image=platformctl/workspace-standin:latest ;;
    *) die "PLATFORMCTL_DEMO_IMAGE='$PLATFORMCTL_DEMO_IMAGE' is neither 'real'" \
        "nor 'standin'" ;;
esac

"$here/prepare-host.sh" "$state"
"$here/start-caddy.sh" "$state"

if [[ $image == platformctl/workspace-standin:latest ]]; then
    say "building the workspace image $image (offline, from busybox-static)"
    "$repo/deploy/standin/build.sh" "$image" >/dev/null
else
    missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v npm >/dev/null || missing+=(npm)
    if ((${#missing[@]} > 0)); then
        say "installing ${missing[*]} (needed to build the workspace image)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null
    fi
    say "building the workspace image $image (code-server, no container registry)"
    say "the first build takes about 8 minutes; later ones take a second or so"
    "$repo/deploy/workspace-offline/build.sh" "$image" >/dev/null
fi

# shellcheck source=/dev/null
source "$state/host.env"
gitea=(--no-gitea)
if [[ -n ${GITEA_URL:-} && -n ${GITEA_TOKEN_FILE:-} ]]; then
    gitea=(--gitea-url "$GITEA_URL" --gitea-token-file "$GITEA_TOKEN_FILE")
fi

say "platformctl init"
"$platformctl" init \
    --pg-host "$PG_ADMIN_HOST" \
    --pg-port "$PG_ADMIN_PORT" \
    --pg-admin-user "$PG_ADMIN_USER" \
    --pg-admin-password-file "$PG_ADMIN_PASSWORD_FILE" \
    --workspace-pghost "$WORKSPACE_PGHOST" \
    --workspace-image "$image" \
    --proxy-admin-url http://127.0.0.1:2019 \
    --proxy-layout subdomain \
    --proxy-domain localhost \
    --proxy-port "$proxy_port" \
    --proxy-bind-address 127.0.0.1 \
    "${gitea[@]}"

# platformctl shows a learner's passwords once, when it makes the learner, and keeps
# no copy; `add user` for a learner who exists prints no card, and would leave the
# workspace on whatever image it was made with. So the demo learner is made afresh
# on every run: same alias and address, new passwords, the image chosen above.
status=0
found=$("$platformctl" find user "$email" 2>&1) || status=$?
case $status in
    0)
        say "platformctl remove user $email (made afresh on every run)"
        "$platformctl" remove user "$email" --yes >/dev/null
        ;;
    3) ;;
    *) die "'platformctl find user $email' failed (exit $status): $found" ;;
esac

say "platformctl add user $email"
"$platformctl" add user "$email"

# The card above has the address; ask for it again to check that Caddy routes it.
read_url='import json, sys; print(json.load(sys.stdin)["workspace_url"])'
url=$("$platformctl" show user "$email" --json | "$venv/bin/python" -c "$read_url")
if ! curl -fsS -m 10 -o /dev/null "${url}healthz"; then
    die "the workspace does not answer at ${url}healthz; see $state/caddy.log"
fi

say "demo ready; the config is in ${XDG_CONFIG_HOME:-$HOME/.config}/platformctl/"
say "open $url in a browser on this machine and type the password above" \
    "(from another one, first: ssh -L $proxy_port:127.0.0.1:$proxy_port root@THIS-HOST)"
if [[ $image == platformctl/workspace-standin:latest ]]; then
    say "the stand-in shows a placeholder page, not an editor; without" \
        "PLATFORMCTL_DEMO_IMAGE=standin the demo runs code-server"
fi
