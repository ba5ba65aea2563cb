#!/usr/bin/env bash
# Builds the stand-in workspace image without any registry: the image starts FROM
# scratch and gets Debian's static busybox. Prints the tag when done.
#
# Usage: deploy/standin/build.sh [TAG]   (default platformctl/workspace-standin:latest)
set -euo pipefail

tag=${1:-platformctl/workspace-standin:latest}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() {
    printf 'build.sh: %s\n' "$*" >&2
    exit 1
}

# Debian's plain busybox package also ships /bin/busybox, but linked dynamically,
# and a scratch image has no C library.
status=$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)
if [[ $status != "install ok installed" ]]; then
    die "Debian package 'busybox-static' is not installed;" \
        "run: apt-get install busybox-static"
fi
command -v docker >/dev/null || die "'docker' was not found on PATH; install docker.io"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

cp /bin/busybox "$context/busybox"
cp "$here/Dockerfile" "$context/Dockerfile"
cp -R "$here/rootfs" "$context/rootfs"

# Fixed modes keep the build cache valid whatever the umask of the checkout, and
# let the unprivileged user read and run what it needs.
find "$context" -type d -exec chmod 0755 {} +
find "$context" -type f -exec chmod 0644 {} +
chmod 0755 "$context/busybox" "$context"/rootfs/usr/libexec/standin/*

if ! output=$(docker build --quiet --tag "$tag" "$context" 2>&1); then
    printf '%s\n' "$output" >&2
    die "docker build of '$tag' failed (output above)"
fi

printf '%s\n' "$tag"
