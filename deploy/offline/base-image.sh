#!/usr/bin/env bash
# Provide the Dockerfiles' FROM image (python:3.11-slim) where no registry is reachable,
# built from Debian's own packages: Debian bookworm's Python 3.11 in a venv on PATH, so
# `pip install` and console scripts behave as in the official image. The host's CA
# bundle goes in (and PIP_CERT names it) so pip reaches the package index through a
# TLS-inspecting egress, as the host's pip does. Dockerfiles are used unchanged.
#
#   deploy/offline/base-image.sh            # no-op when the image is already there
set -euo pipefail
source "$(dirname "$0")/../engine.sh"

IMAGE=docker.io/library/python:3.11-slim
if "${ENGINE[@]}" image exists "$IMAGE" 2>/dev/null \
   || "${ENGINE[@]}" image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi
if "${ENGINE[@]}" pull -q "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is needed (apt-get install mmdebstrap)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CA=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
echo "making $IMAGE from Debian bookworm packages (mmdebstrap)" >&2
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,passwd \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='chroot "$1" python3 -m venv /usr/local/python' \
  --customize-hook="mkdir -p \"\$1/etc/ssl/certs\" && cp $CA \"\$1/etc/ssl/certs/ca-certificates.crt\"" \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
  bookworm "$work/base.tar"
"${ENGINE[@]}" import -q \
  --change 'ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' \
  "$work/base.tar" "$IMAGE" >/dev/null
echo "$IMAGE ready" >&2
