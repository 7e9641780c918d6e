# Sourced by the deploy scripts: pick the container engine and its compose.
#   ENGINE   podman (with deploy/podman/containers.conf) or docker; ISLOADER_ENGINE forces one
#   COMPOSE  podman-compose or docker compose
# Exits with a reason when no engine is installed.
DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_engine=${ISLOADER_ENGINE:-}
if [[ -z $_engine ]]; then
  if command -v podman >/dev/null; then _engine=podman
  elif command -v docker >/dev/null; then _engine=docker
  else
    echo "no container engine: install podman (apt-get install podman runc podman-compose mmdebstrap)" >&2
    exit 3
  fi
fi
if [[ $_engine == podman ]]; then
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$DEPLOY_DIR/podman/containers.conf}
  ENGINE=(podman)
  COMPOSE=(podman-compose)
else
  ENGINE=(docker)
  COMPOSE=(docker compose)
fi
