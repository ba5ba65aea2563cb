#!/usr/bin/env bash
# Installs code-server from its npm package into PREFIX, inside the build stage of
# the offline workspace image. Runs as an unprivileged user: code-server's own
# post-install step refuses root unless npm passes it --unsafe-perm.
#
# Usage: install-code-server.sh PACKAGE.tgz PREFIX
#
# Expects node and npm on PATH, npm_config_nodedir naming the Node.js headers (the
# native modules are compiled, since no prebuilt binary can be downloaded here) and
# Debian's ripgrep in /usr/bin/rg.
set -euo pipefail

die() {
    printf 'install-code-server.sh: %s\n' "$*" >&2
    exit 1
}

[[ $# -eq 2 ]] || die "usage: install-code-server.sh PACKAGE.tgz PREFIX"
package=$1
prefix=$2

[[ -f $package ]] || die "package '$package' was not found"
[[ -x /usr/bin/rg ]] || die "'/usr/bin/rg' is missing; install Debian's ripgrep first"
[[ $(id -u) != 0 ]] || die "running as root; run as an unprivileged user"

# @vscode/ripgrep downloads rg from GitHub in its post-install step, unless a
# download of the same name is already in its cache under the temporary folder.
# A folder put at node_modules/@vscode/ripgrep/bin beforehand does not help: npm
# empties the package folder when it unpacks the package. So Debian's rg is packed
# under the name the script looks for. The name is read from the packages that
# this code-server pins, so a new release changes it without an edit here.
ripgrep_version=$(
    tar -xzOf "$package" package/lib/vscode/npm-shrinkwrap.json \
        | node -e '
            let text = "";
            process.stdin.on("data", (chunk) => (text += chunk));
            process.stdin.on("end", () => {
                const found = JSON.parse(text).packages["node_modules/@vscode/ripgrep"];
                process.stdout.write(found ? found.version : "");
            });'
)
[[ -n $ripgrep_version ]] || die "no @vscode/ripgrep in the lock file of '$package'"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

ripgrep_package=$(cd "$scratch" && npm pack --silent "@vscode/ripgrep@$ripgrep_version")
ripgrep_release=$(
    tar -xzOf "$scratch/$ripgrep_package" package/lib/postinstall.js \
        | sed -n "s/^const VERSION = '\([^']*\)';.*/\1/p"
)
[[ -n $ripgrep_release ]] \
    || die "no VERSION in the post-install script of @vscode/ripgrep $ripgrep_version"

case $(uname -m) in
    x86_64) target=x86_64-unknown-linux-musl ;;
    aarch64) target=aarch64-unknown-linux-musl ;;
    *) die "machine '$(uname -m)' is unknown here; add its ripgrep target" ;;
esac

ripgrep_cache="${TMPDIR:-/tmp}/vscode-ripgrep-cache-$ripgrep_version"
mkdir -p "$ripgrep_cache"
tar -czf "$ripgrep_cache/ripgrep-$ripgrep_release-$target.tar.gz" -C /usr/bin rg

# A local install into a folder of its own, not --global: npm hands its settings
# to the post-install step, whose own "npm install" in lib/vscode would then be a
# global one too, and would install that folder over code-server itself.
mkdir -p "$prefix"
cd "$prefix"
if [[ ! -e package.json ]]; then
    printf '{"name": "code-server-install", "private": true}\n' >package.json
fi
npm install --omit=dev --no-fund --no-audit "$package"

# The copy of rg is replaced by a link, so Debian's security updates reach it.
installed="$prefix/node_modules/code-server"
ripgrep_bin="$installed/lib/vscode/node_modules/@vscode/ripgrep/bin/rg"
cmp -s "$ripgrep_bin" /usr/bin/rg \
    || die "'$ripgrep_bin' is not Debian's rg; the seeded download was not used"
ln -sf /usr/bin/rg "$ripgrep_bin"

rm -rf "$ripgrep_cache"
