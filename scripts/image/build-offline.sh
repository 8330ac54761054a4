#!/usr/bin/env bash
# A real image build without a container registry: a Debian bookworm base made by debootstrap (Debian's
# CPython 3.11 standing in for python:3.11-slim), then the Containerfile built on it with buildah.
#
#   bash scripts/image/build-offline.sh [TAG]          (as root; default TAG ghcr.io/eco2/functions:0.1.0)
#
# Needs Debian's buildah and debootstrap (apt-get install -y buildah debootstrap), PyPI for the build stage.
# Where PyPI is reached through a TLS-inspecting proxy, the host's CA bundle ($SSL_CERT_FILE) is copied into
# the base so pip and uv trust it. Storage: vfs (works without overlay support), under /var/lib/containers.
set -euo pipefail
cd "$(dirname "$0")/../.."

TAG=${1:-ghcr.io/eco2/functions:0.1.0}
BASE=localhost/python:3.11-slim-bookworm
BUILDAH=(buildah --storage-driver vfs)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! "${BUILDAH[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  rootfs=$(mktemp -d /tmp/eco2-rootfs-XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$rootfs" "$MIRROR"
  rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED  # as in python:slim, pip may install (the build stage's uv)
  if [ -n "${SSL_CERT_FILE:-}" ] && [ -f "$SSL_CERT_FILE" ]; then
    cat "$SSL_CERT_FILE" >"$rootfs/etc/ssl/certs/ca-certificates.crt"
  fi
  ctr=$("${BUILDAH[@]}" from scratch)
  cp -a "$rootfs/." "$("${BUILDAH[@]}" mount "$ctr")/"
  "${BUILDAH[@]}" umount "$ctr"
  "${BUILDAH[@]}" config --cmd /bin/bash \
    --env PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$ctr"
  "${BUILDAH[@]}" commit --rm "$ctr" "$BASE"
fi

"${BUILDAH[@]}" build --isolation chroot --network host --build-arg PYTHON_IMAGE="$BASE" -f Containerfile -t "$TAG" .
echo "built $TAG; try it: ${BUILDAH[*]} run --isolation chroot --network host \$(${BUILDAH[*]} from $TAG) -- eco2 serve rules"
