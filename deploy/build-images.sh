#!/usr/bin/env bash
# Build isloader-store and isloader-trainer exactly from docker/*.Dockerfile.
#   deploy/build-images.sh [store] [trainer]      (both by default)
# Where no registry is reachable the FROM image is made locally (offline/base-image.sh).
# The trainer's torch comes from TORCH_INDEX_URL / TORCH_REQUIREMENT (build args); where
# a folder of wheels is set in PIP_FIND_LINKS (as on this project's CI machines) it is
# mounted into the build and the CPU wheel there is used.
set -euo pipefail
source "$(dirname "$0")/engine.sh"
ROOT=$(cd "$DEPLOY_DIR/.." && pwd)
TAG=${ISLOADER_VERSION:-latest}
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(store trainer)

"$DEPLOY_DIR/offline/base-image.sh"
build=("${ENGINE[@]}" build --network=host -q)
# docker format: the OCI format drops HEALTHCHECK.
[[ ${ENGINE[0]} == podman ]] && build+=(--format docker)
for target in "${targets[@]}"; do
  args=()
  if [[ $target == trainer && ${ENGINE[0]} == podman && -d ${PIP_FIND_LINKS:-/nonexistent} ]]; then
    wheel=$(ls "$PIP_FIND_LINKS"/torch-*+cpu-*.whl 2>/dev/null | sort | tail -1 || true)
    if [[ -n $wheel ]]; then
      args+=(-v "$PIP_FIND_LINKS:/wheels:ro" --build-arg TORCH_INDEX_URL=https://pypi.org/simple
             --build-arg "TORCH_REQUIREMENT=/wheels/$(basename "$wheel")")
    fi
  fi
  start=$(date +%s)
  "${build[@]}" "${args[@]}" -f "$ROOT/docker/$target.Dockerfile" -t "isloader-$target:$TAG" "$ROOT" >/dev/null
  echo "isloader-$target:$TAG built in $(( $(date +%s) - start )) s" >&2
done
