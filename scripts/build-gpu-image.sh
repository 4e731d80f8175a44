#!/usr/bin/env bash
# Build the GPU image (Dockerfile target `gpu`: requirements/gpu.lock, tensorflow[and-cuda] with the
# CUDA/cuDNN wheels), print its size, then start it and check that it serves: /readyz ready with the
# TensorFlow runtime, POST /predict answers, and the log says which device TensorFlow found. On a
# machine without a GPU (or without the NVIDIA container toolkit) that is one line,
# "no GPU found: TensorFlow runs on the CPU", and the image still serves, on the CPU.
#
# Opt-in, not part of scripts/test.sh or CI: the build downloads several GB of CUDA wheels and the
# image is several GB (check the free space it prints first).
#
# Usage: scripts/build-gpu-image.sh [--skip-build] [--gpus]
#   --skip-build   test the existing image instead of building it
#   --gpus         run with `docker run --gpus all` and require a GPU (default: only when nvidia-smi
#                  works on the host; without it the no-GPU line is required instead)
# Env:
#   CATDOG_GPU_IMAGE             image tag (default catdog:<pyproject.toml version>-gpu)
#   CATDOG_GPU_READY_TIMEOUT     seconds to wait for /readyz (default 300)
#   CATDOG_DOCKER_BUILD_NETWORK  network for RUN steps of `docker build` (e.g. host)
#   BASE_IMAGE                   `docker build --build-arg` (default: what scripts/setup-compose.sh chose)
# Only talks to 127.0.0.1; the container is removed on exit.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(awk -F'"' '/^version = /{print $2; exit}' "$REPO_ROOT/pyproject.toml")"
IMAGE="${CATDOG_GPU_IMAGE:-catdog:${VERSION}-gpu}"
READY_TIMEOUT="${CATDOG_GPU_READY_TIMEOUT:-300}"
NO_GPU_LINE="no GPU found: TensorFlow runs on the CPU"
GPU_LINE="TensorFlow runs on the GPU"
SKIP_BUILD=0
GPUS=auto
for arg in "$@"; do
    case "$arg" in
        --skip-build) SKIP_BUILD=1 ;;
        --gpus) GPUS=yes ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "build-gpu-image: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { echo "[build-gpu-image] $*"; }
fail() { echo "[build-gpu-image] FAIL: $*" >&2; exit 1; }
[[ -n "$VERSION" ]] || fail "no version in pyproject.toml"

CID=""
cleanup() {
    local rc=$?
    if [[ -n "$CID" ]]; then
        [[ $rc -eq 0 ]] || { echo "--- container logs (last 60 lines) ---" >&2; docker logs --tail 60 "$CID" >&2 2>&1 || true; }
        docker rm -f "$CID" >/dev/null 2>&1 || true
    fi
    if [[ $rc -eq 0 ]]; then log "PASS"; else log "FAILED (exit $rc)"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PY="$(command -v python3 || true)"
[[ -n "$PY" ]] || PY="$REPO_ROOT/.venv/bin/python"
for f in saved_model.pb metadata.json; do
    [[ -f "$REPO_ROOT/model/default/$f" ]] || fail "model/default/$f is missing: the image bakes in the committed model"
done

# Engine, base image and the builder stage's CA certificates, as for the CPU image.
if [[ -z "${BASE_IMAGE:-}" || "$SKIP_BUILD" -eq 0 ]]; then
    bash "$REPO_ROOT/scripts/setup-compose.sh" >/dev/null || fail "scripts/setup-compose.sh failed"
    BASE_IMAGE="${BASE_IMAGE:-$(sed -n 's/^BASE_IMAGE=//p' "$REPO_ROOT/.env")}"
fi
command -v curl >/dev/null 2>&1 || bash "$REPO_ROOT/scripts/apt-install.sh" curl ca-certificates

if [[ "$SKIP_BUILD" -eq 0 ]]; then
    root_dir="$(docker info -f '{{.DockerRootDir}}' 2>/dev/null || echo /var/lib/docker)"
    log "free space under $root_dir: $(df -h --output=avail "$root_dir" 2>/dev/null | tail -n 1 | tr -d ' ')" \
        "(the build needs roughly 15 GB: wheels, layers and the image)"
    BUILD_NET=()
    net="${CATDOG_DOCKER_BUILD_NETWORK:-default}"
    [[ "$net" != "default" && -n "$net" ]] && BUILD_NET=(--network "$net")
    BUILD_LOG="$(mktemp /tmp/catdog-gpu-build.XXXXXX.log)"
    log "docker build --target gpu -t $IMAGE --build-arg BASE_IMAGE=$BASE_IMAGE (log: $BUILD_LOG)"
    started=$(date +%s)
    if ! docker build --target gpu -t "$IMAGE" --build-arg "BASE_IMAGE=$BASE_IMAGE" "${BUILD_NET[@]}" \
            "$REPO_ROOT" >"$BUILD_LOG" 2>&1; then
        tail -n 40 "$BUILD_LOG" >&2
        fail "docker build --target gpu failed (full log: $BUILD_LOG)"
    fi
    log "built in $(( $(date +%s) - started )) s"
else
    docker image inspect "$IMAGE" >/dev/null 2>&1 || fail "--skip-build but image $IMAGE does not exist"
fi
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "image $IMAGE: $((size / 1024 / 1024)) MiB ($(docker image inspect -f '{{.Id}}' "$IMAGE" | cut -c1-19))"
log "largest packages: $(docker run --rm --entrypoint sh "$IMAGE" -c \
    'du -sm /opt/venv/lib/python3*/site-packages/* | sort -rn | sed -n 1,5p | tr "\n" " "')"

if [[ "$GPUS" == auto ]]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then GPUS=yes; else GPUS=no; fi
fi
RUN_GPU=()
[[ "$GPUS" == yes ]] && RUN_GPU=(--gpus all)
log "host GPU: $GPUS"

PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Read-only root and a tmpfs /tmp, as deploy/kubernetes runs it.
CID=$(docker run -d --name "catdog-gpu-check-$$" --read-only --tmpfs /tmp "${RUN_GPU[@]}" \
    -p "127.0.0.1:$PORT:8000" "$IMAGE") || fail "docker run failed"
BASE_URL="http://127.0.0.1:$PORT"
started=$(date +%s)
code=""
while (( $(date +%s) < started + READY_TIMEOUT )); do
    [[ "$(docker inspect -f '{{.State.Running}}' "$CID")" == "true" ]] || fail "container exited before becoming ready"
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$BASE_URL/readyz" || true)
    [[ "$code" == "200" ]] && break
    sleep 1
done
[[ "$code" == "200" ]] || fail "/readyz not 200 within $READY_TIMEOUT s (last status: ${code:-none})"
log "ready after $(( $(date +%s) - started )) s"
ready=$(curl -sS --max-time 5 "$BASE_URL/readyz")
log "GET /readyz -> $ready"
[[ "$ready" == *'"runtime":"tensorflow-'* ]] || fail "/readyz: expected the TensorFlow runtime, got $ready"

IMG="$REPO_ROOT/../shared/data/cats_and_dogs_filtered/validation/cats/cat.2000.jpg"
if [[ ! -f "$IMG" ]]; then
    IMG="$(mktemp /tmp/catdog-gpu-check.XXXXXX.jpg)"
    docker run --rm --entrypoint /opt/venv/bin/python "$IMAGE" -c \
        'import io, sys; from PIL import Image; b = io.BytesIO(); Image.radial_gradient("L").convert("RGB").resize((200, 160)).save(b, "JPEG"); sys.stdout.buffer.write(b.getvalue())' \
        >"$IMG" || fail "could not generate a test JPEG"
fi
answer=$(curl -sS --max-time 60 -w '\n%{http_code}' -F "file=@$IMG;type=image/jpeg" "$BASE_URL/predict") \
    || fail "POST /predict: request failed"
[[ "${answer##*$'\n'}" == "200" ]] || fail "POST /predict returned HTTP ${answer##*$'\n'}: ${answer%$'\n'*}"
body="${answer%$'\n'*}"
"$PY" -c 'import json, sys; b = json.loads(sys.argv[1]); assert b["label"] in ("cat", "dog"), b' "$body" \
    || fail "POST /predict: unexpected answer $body"
log "POST /predict -> $body"

logs=$(docker logs "$CID" 2>&1)
if [[ "$GPUS" == yes ]]; then
    grep -F "$GPU_LINE" <<<"$logs" || fail "run with --gpus all, but the log does not say \"$GPU_LINE\""
else
    lines=$(grep -cF "$NO_GPU_LINE" <<<"$logs" || true)
    [[ "$lines" == 1 ]] || fail "expected the log line \"$NO_GPU_LINE\" once, found it $lines times"
    grep -F "$NO_GPU_LINE" <<<"$logs"
fi
