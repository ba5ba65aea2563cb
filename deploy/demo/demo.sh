#!/usr/bin/env bash
# The demo behind `make demo`: make this Debian 12 machine ready (PostgreSQL,
# Docker), build the stand-in workspace image offline, write the config with
# `platformctl init`, and provision one learner, printing the card.
#
# Usage (as root): deploy/demo/demo.sh VENV
# Gitea stays off unless GITEA_URL and GITEA_TOKEN_FILE (a file holding an admin
# token, mode 600) are set in the environment.
set -euo pipefail

venv=${1:?usage: demo.sh VENV}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
state=${PLATFORMCTL_DEMO_STATE:-/var/lib/platformctl-demo}
platformctl="$venv/bin/platformctl"
image=platformctl/workspace-standin:latest

say() { printf '==> %s\n' "$*" >&2; }

[[ $(id -u) -eq 0 ]] || { echo "demo.sh: run as root (it installs packages)" >&2; exit 1; }

"$here/prepare-host.sh" "$state"

say "building the workspace image $image (offline, from busybox-static)"
"$repo/deploy/standin/build.sh" "$image" >/dev/null

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
    "${gitea[@]}"

say "platformctl add user demo@example.com"
"$platformctl" add user demo@example.com
say "demo ready; the config is in ${XDG_CONFIG_HOME:-$HOME/.config}/platformctl/"
