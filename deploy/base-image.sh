#!/usr/bin/env bash
# A local stand-in for the official Python base image, made from Debian's own packages, for machines that
# reach Debian's archive but no image registry (so `FROM python:3.11.14-slim-bookworm` cannot be pulled):
# debootstrap a minimal bookworm with its python3 (3.11) into a folder, then `docker import` it.
#   deploy/base-image.sh            build it unless it exists; print its reference
#   docker build --build-arg PYTHON_IMAGE="$(deploy/base-image.sh)" ...
# The Dockerfiles keep the official base by default and take this one only by that build argument.
# The tag carries a content key (the suite, the mirror, the package list and this script), so a rerun finds
# the image it made before and returns at once; GAITLU_BASE_REFRESH=1 rebuilds it (newer Debian updates).
# Needs root, a Docker engine and debootstrap (installed with apt-get when missing and run as root).
set -euo pipefail

SUITE=bookworm
MIRROR=${GAITLU_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# python-is-python3: `python` on PATH as in the official image; python3-venv: venv with ensurepip.
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
REPO=gaitlu-base

die() {
    echo "base-image: $*" >&2
    exit 1
}

key=$( (cat "$0"; echo "$SUITE $MIRROR $PACKAGES") | sha256sum | cut -c1-12)
tag="$REPO:$SUITE-py3-$key"
if [ "${GAITLU_BASE_REFRESH:-0}" != 1 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi

docker version >/dev/null 2>&1 || die "no Docker engine answers (start dockerd first)"
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
if ! command -v debootstrap >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "debootstrap is missing and there is no apt-get to install it"
    echo "base-image: installing debootstrap with apt-get" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

work=$(mktemp -d /var/tmp/gaitlu-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "base-image: debootstrap $SUITE ($PACKAGES) from $MIRROR (about 2 minutes)" >&2
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work/root" "$MIRROR" >"$work/log" 2>&1; then
    tail -n 20 "$work/log" >&2
    die "debootstrap failed (log above)"
fi
# What an image does not need: the package downloads and lists (apt-get update refetches them).
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
# /dev, /proc and /sys are the engine's to provide in a container.
tar --numeric-owner -C "$work/root" --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -c . |
    docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --message "debootstrap --variant=minbase --include=$PACKAGES $SUITE ($MIRROR)" \
        - "$tag" >/dev/null
# Older bases of this script (another key) are stale: untag them (images still built on one keep it).
docker image ls --format '{{.Repository}}:{{.Tag}}' "$REPO" | grep -Fxv "$tag" | xargs -r docker rmi >/dev/null 2>&1 || true
echo "$tag"
