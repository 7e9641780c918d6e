#!/usr/bin/env bash
# The deployment, for real: build both images from docker/*.Dockerfile, bring the
# compose stack up, train against the shards by service name, SIGKILL one shard
# mid-run, check it comes back with its WAL and snapshot volumes and the training
# finishes, tear everything down. Ends with one JSON line.
#
#   deploy/smoke.sh            (make deploy-check)
#
# Needs podman + podman-compose (or docker + compose). With podman, Debian's packages
# do: apt-get install podman runc podman-compose mmdebstrap (the two settings this VM
# needs are in deploy/podman/containers.conf). Where no registry is reachable the FROM
# image is made from Debian packages and MinIO is replaced by moto's S3 server
# (deploy/offline/compose.override.yml); both are said on the screen.
set -euo pipefail
source "$(dirname "$0")/engine.sh"
ROOT=$(cd "$DEPLOY_DIR/.." && pwd)
say() { printf '[smoke %3ds] %s\n' "$SECONDS" "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- images -----------------------------------------------------------------
say "building isloader-store and isloader-trainer from docker/*.Dockerfile"
build_start=$SECONDS
"$DEPLOY_DIR/build-images.sh" store trainer
build_s=$((SECONDS - build_start))
image_mb() { "${ENGINE[@]}" image inspect "$1" --format '{{.Size}}' | awk '{printf "%d", $1 / 1e6}'; }
store_mb=$(image_mb isloader-store:latest)
trainer_mb=$(image_mb isloader-trainer:latest)
store_has_training_stack=$("${ENGINE[@]}" run --rm --entrypoint python isloader-store:latest -c \
  'import importlib.util as u; print(any(u.find_spec(m) for m in ("torch", "ray", "pyarrow")))' 2>/dev/null)
say "store image ${store_mb} MB (torch/ray/pyarrow inside: $store_has_training_stack), trainer image ${trainer_mb} MB"

# --- the stack ----------------------------------------------------------------
work=$(mktemp -d)
project=isloader-smoke-$$
files=(-f "$DEPLOY_DIR/docker-compose.yml")
if ! "${ENGINE[@]}" image inspect "docker.io/minio/minio:${MINIO_VERSION:-RELEASE.2025-09-07T16-13-09Z}" >/dev/null 2>&1 \
   && ! "${ENGINE[@]}" pull -q "docker.io/minio/minio:${MINIO_VERSION:-RELEASE.2025-09-07T16-13-09Z}" >/dev/null 2>&1; then
  say "MinIO's image cannot be pulled here: moto's S3 server stands in (deploy/offline/compose.override.yml)"
  files+=(-f "$DEPLOY_DIR/offline/compose.override.yml")
fi
if [[ ${COMPOSE[0]} == podman-compose && ${#files[@]} -gt 2 ]]; then
  # podman-compose (1.0.3) merges an override's lists by appending them (command,
  # healthcheck test); merge here by the compose spec's rule instead: a service key
  # in the override replaces the base's, mappings merge one level down.
  merged=$DEPLOY_DIR/.smoke-compose-$$.yml
  yaml_python=$(sed -n '1s/^#!//p' "$(command -v podman-compose)")  # it has PyYAML
  ${yaml_python:-python3} - "${files[1]}" "${files[3]}" "$merged" <<'PY'
import sys, yaml
base, override = (yaml.safe_load(open(f)) for f in sys.argv[1:3])
for name, service in override.get("services", {}).items():
    target = base["services"].setdefault(name, {})
    for key, value in service.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = {**target[key], **value}
        else:
            target[key] = value
yaml.safe_dump(base, open(sys.argv[3], "w"), sort_keys=False)
PY
  files=(-f "$merged")
fi
compose() { "${COMPOSE[@]}" -p "$project" "${files[@]}" "$@"; }
teardown() {
  say "tearing down"
  compose down -v >/dev/null 2>&1 || true
  rm -rf "$work" "${merged:-}"
}
trap teardown EXIT

(umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/isloader_token.txt")
chown 10001 "$work/isloader_token.txt" 2>/dev/null || chmod 644 "$work/isloader_token.txt"
export ISLOADER_TOKEN_FILE=$work/isloader_token.txt
export ISLOADER_NUM_SAMPLES=${SMOKE_NUM_SAMPLES:-60000}
export ISLOADER_DEMO_EPOCHS=${SMOKE_EPOCHS:-4}
export ISLOADER_DEMO_METHODS=uniform,ours_is_prune
export ISLOADER_SNAPSHOT_INTERVAL=5
export ISLOADER_STORE0_PORT=$(free_port) ISLOADER_STORE1_PORT=$(free_port)
export ISLOADER_STORE0_METRICS=$(free_port) ISLOADER_STORE1_METRICS=$(free_port)
export MINIO_PORT=$(free_port)

container() { "${ENGINE[@]}" ps -a --filter "label=com.docker.compose.project=$project" \
  --filter "label=com.docker.compose.service=$1" --format '{{.ID}}' | head -1; }
healthy() {  # run the image's HEALTHCHECK now (podman without systemd runs no timers)
  local id; id=$(container "$1")
  [[ -n $id ]] || return 1
  if [[ ${ENGINE[0]} == podman ]]; then "${ENGINE[@]}" healthcheck run "$id" >/dev/null 2>&1
  else [[ $("${ENGINE[@]}" inspect "$id" --format '{{.State.Health.Status}}') == healthy ]]; fi
}
wait_healthy() {  # service timeout_s
  local deadline=$((SECONDS + $2))
  until healthy "$1"; do
    ((SECONDS < deadline)) || { say "$1 not healthy after $2 s"; "${ENGINE[@]}" logs "$(container "$1")" >&2 || true; return 1; }
    sleep 0.5
  done
}

# podman-compose does not wait on depends_on conditions: the stages below do, in the
# order the compose file states (stores and object store healthy, data written, trainer).
say "up: store-0 store-1 minio"
up_start=$SECONDS
compose up -d store-0 store-1 minio >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; exit 1; }
wait_healthy store-0 120 && wait_healthy store-1 120
seconds_to_healthy=$((SECONDS - up_start))
wait_healthy minio 120
say "stores healthy ${seconds_to_healthy} s after up"

say "demo-data: MNIST-1D shards to the object store"
compose up -d demo-data >>"$work/up.log" 2>&1
demo_data_rc=$("${ENGINE[@]}" wait "$(container demo-data)")
[[ $demo_data_rc == 0 ]] || { "${ENGINE[@]}" logs "$(container demo-data)" >&2; exit 1; }

say "trainer: the demo against store-0:50051,store-1:50051"
compose up -d trainer >>"$work/up.log" 2>&1
trainer=$(container trainer)
metric() {  # NAME: store-1's Prometheus counter, summed over labels (0 while unreachable)
  python3 - "$ISLOADER_STORE1_METRICS" "$1" <<'PY'
import sys, urllib.request
try:
    text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=2).read().decode()
except OSError:
    text = ""
print(int(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(sys.argv[2] + " ") or l.startswith(sys.argv[2] + "{"))))
PY
}
trainer_running() {
  [[ $("${ENGINE[@]}" inspect "$trainer" --format '{{.State.Running}}') == true ]] \
    || { "${ENGINE[@]}" logs "$trainer" 2>&1 | tail -20 >&2; say "trainer ended before the kill (make SMOKE_EPOCHS larger)"; exit 1; }
}
# Kill once training updates reach store-1 and a snapshot was written after them, so
# both volumes (WAL and snapshots) hold training state.
deadline=$((SECONDS + 900))
until (( $(metric isloader_updates_total) > 0 )); do
  trainer_running; ((SECONDS < deadline)) || { say "no updates reached store-1"; exit 1; }
  sleep 0.5
done
snapshots=$(metric isloader_snapshots_total)
until (( $(metric isloader_snapshots_total) > snapshots )); do trainer_running; sleep 0.5; done
shard=$(container store-1)
pid=$("${ENGINE[@]}" inspect "$shard" --format '{{.State.Pid}}')
say "SIGKILL store-1 (pid $pid) mid-run, after $(metric isloader_updates_total) updates"
kill -KILL "$pid"
sleep 2
wait_healthy store-1 60
restarts=$("${ENGINE[@]}" inspect "$shard" --format '{{.RestartCount}}')
"${ENGINE[@]}" logs "$shard" >"$work/store-1.log" 2>&1
say "store-1 back (restarts: $restarts): $(grep -E 'restored snapshot|replayed' "$work/store-1.log" | tail -2 | sed 's/.*INFO //' | paste -sd';')"
# The restart (the last start in the log) found state on both volumes.
restored=$(awk '/serving \[/{n++} END{print n}' "$work/store-1.log")
last_start=$(grep -E 'restored snapshot|replayed' "$work/store-1.log" | tail -2)
with_state=false
if ((restarts >= 1 && restored >= 2)) && grep -q 'restored snapshot version' <<<"$last_start" \
   && grep -Eq 'replayed [0-9]+' <<<"$last_start"; then
  with_state=true
fi

say "waiting for the trainer to finish"
trainer_rc=$("${ENGINE[@]}" wait "$trainer")
"${ENGINE[@]}" logs "$trainer" 2>&1 | tail -12 >&2
finished=false
[[ $trainer_rc == 0 ]] && finished=true
images_built=0
for image in isloader-store:latest isloader-trainer:latest; do
  "${ENGINE[@]}" image inspect "$image" >/dev/null 2>&1 && images_built=$((images_built + 1))
done
say "done in $SECONDS s"
printf '{"images_built": %d, "store_image_mb": %d, "trainer_image_mb": %d, "store_image_has_torch_or_ray": %s, "build_s": %d, "seconds_to_healthy": %d, "trainer_finished": %s, "shard_restarts": %d, "shard_restarted_with_state": %s, "smoke_s": %d, "engine": "%s"}\n' \
  "$images_built" "$store_mb" "$trainer_mb" "${store_has_training_stack,,}" "$build_s" \
  "$seconds_to_healthy" "$finished" "$restarts" "$with_state" "$SECONDS" "${ENGINE[0]}"
[[ $finished == true && $with_state == true && ${store_has_training_stack} == False ]]
