#!/usr/bin/env bash
# End-to-end test of the CPU Docker image: engine -> base image -> `docker build --target cpu` ->
# run (read-only root) -> /healthz, /readyz -> /predict (multipart and raw JPEG body) -> non-root -> HEALTHCHECK healthy.
#
# Usage: scripts/docker-smoke.sh [--skip-build]
#   --skip-build   test the existing image instead of building it
# Env:
#   CATDOG_SMOKE_IMAGE          image tag to build/test (default catdog:cpu)
#   CATDOG_SMOKE_RUNTIME        the runtime /readyz must report (default litert-fp32: the CPU image's)
#   CATDOG_SMOKE_READY_TIMEOUT  seconds to wait for /readyz (default 180)
#   CATDOG_DOCKER_BUILD_NETWORK network for RUN steps of `docker build` (e.g. host; default: default)
#   BASE_IMAGE                  `docker build --build-arg` (default: what scripts/setup-compose.sh chose)
#   and scripts/setup-compose.sh's (CATDOG_DOCKERD_FLAGS, CATDOG_DOCKERD_LOG, CATDOG_DOCKERD_PIDFILE).
# Only talks to 127.0.0.1. Exits non-zero with a message on the first failure; the container is
# always removed on exit. A dockerd started by setup-compose.sh is left running (pid in its pid file).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${CATDOG_SMOKE_IMAGE:-catdog:cpu}"
READY_TIMEOUT="${CATDOG_SMOKE_READY_TIMEOUT:-180}"
HEALTHY_TIMEOUT=90
SKIP_BUILD=0
for arg in "$@"; do
    case "$arg" in
        --skip-build) SKIP_BUILD=1 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "docker-smoke: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

T0=$(date +%s)
PHASE_T=$T0
TIMINGS=()
log() { echo "[docker-smoke] $*"; }
fail() { echo "[docker-smoke] FAIL: $*" >&2; exit 1; }
phase_done() {
    local now; now=$(date +%s)
    TIMINGS+=("$(printf '%-22s %5d s' "$1" $((now - PHASE_T)))")
    log "phase '$1' took $((now - PHASE_T)) s"
    PHASE_T=$now
}
print_timings() {
    [[ ${#TIMINGS[@]} -gt 0 ]] || return 0
    echo "[docker-smoke] timings:"
    printf '  %s\n' "${TIMINGS[@]}"
    echo "  total                  $(( $(date +%s) - T0 )) s"
}

CID=""
cleanup() {
    local rc=$?
    if [[ -n "$CID" ]]; then
        if [[ $rc -ne 0 ]]; then
            echo "--- container logs (last 60 lines) ---" >&2
            docker logs --tail 60 "$CID" >&2 2>&1 || true
        fi
        docker rm -f "$CID" >/dev/null 2>&1 || true
    fi
    print_timings
    if [[ $rc -eq 0 ]]; then log "PASS"; else log "FAILED (exit $rc)"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PY="$(command -v python3 || true)"
[[ -n "$PY" ]] || PY="$REPO_ROOT/.venv/bin/python"
[[ -x "$PY" ]] || fail "python3 not found on the host (needed to check JSON answers)"

# The image bakes in model/default and never trains (CATDOG_AUTO_TRAIN=false): without it, it never gets ready.
for f in saved_model.pb metadata.json; do
    [[ -f "$REPO_ROOT/model/default/$f" ]] \
        || fail "model/default/$f is missing: the image bakes in the committed model (export one first)"
done

apt_install() { bash "$REPO_ROOT/scripts/apt-install.sh" "$@" || fail "could not install $*"; }

# ------------------------------------------------------------------- engine, compose, base image
# scripts/setup-compose.sh: engine (started or installed if need be), compose, base image (official if
# pullable, else the catdog-base:bookworm stand-in, in .env), build CA for the builder stage only.
if [[ -z "${BASE_IMAGE:-}" || "$SKIP_BUILD" -eq 0 ]]; then
    bash "$REPO_ROOT/scripts/setup-compose.sh" >/dev/null || fail "scripts/setup-compose.sh failed"
    BASE_IMAGE="${BASE_IMAGE:-$(sed -n 's/^BASE_IMAGE=//p' "$REPO_ROOT/.env")}"
fi
command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
phase_done "engine+compose+base"

if [[ "$SKIP_BUILD" -eq 0 ]]; then
    # ----------------------------------------------------------------------------------- build
    BUILD_NET=()
    net="${CATDOG_DOCKER_BUILD_NETWORK:-default}"
    [[ "$net" != "default" && -n "$net" ]] && BUILD_NET=(--network "$net")
    BUILD_LOG="$(mktemp /tmp/catdog-docker-build.XXXXXX.log)"
    log "docker build --target cpu -t $IMAGE --build-arg BASE_IMAGE=$BASE_IMAGE ${BUILD_NET[*]:-} (log: $BUILD_LOG)"
    if ! docker build --target cpu -t "$IMAGE" --build-arg "BASE_IMAGE=$BASE_IMAGE" "${BUILD_NET[@]}" \
            "$REPO_ROOT" >"$BUILD_LOG" 2>&1; then
        tail -n 40 "$BUILD_LOG" >&2
        fail "docker build --target cpu failed (full log: $BUILD_LOG)"
    fi
    phase_done "build cpu image"
else
    docker image inspect "$IMAGE" >/dev/null 2>&1 || fail "--skip-build but image $IMAGE does not exist"
fi
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
log "image $IMAGE: $((size / 1024 / 1024)) MiB"

# --------------------------------------------------------------------------------------------- run
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NAME="catdog-smoke-$$"

# Read-only root and a tmpfs /tmp, as the compose scale profile and deploy/kubernetes run it.
CID=$(docker run -d --name "$NAME" --read-only --tmpfs /tmp -p "127.0.0.1:$PORT:8000" "$IMAGE") || fail "docker run failed"
log "container $NAME (${CID:0:12}) on 127.0.0.1:$PORT"
BASE_URL="http://127.0.0.1:$PORT"
RUN_T=$(date +%s)

ready=0
code=""
deadline=$((RUN_T + READY_TIMEOUT))
while (( $(date +%s) < deadline )); do
    if [[ "$(docker inspect -f '{{.State.Running}}' "$CID" 2>/dev/null)" != "true" ]]; then
        fail "container exited before becoming ready (exit code $(docker inspect -f '{{.State.ExitCode}}' "$CID"))"
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$BASE_URL/readyz" || true)
    [[ "$code" == "200" ]] && { ready=1; break; }
    sleep 1
done
[[ "$ready" -eq 1 ]] || fail "/readyz not 200 within ${READY_TIMEOUT} s (last status: ${code:-none})"
log "ready after $(( $(date +%s) - RUN_T )) s"
phase_done "start to ready"

# ------------------------------------------------------------------------------------------ checks
http_ok() {  # $1: path; prints the body, fails unless HTTP 200
    local body
    body=$(curl -sS --max-time 10 -w '\n%{http_code}' "$BASE_URL$1") || fail "GET $1: request failed"
    [[ "${body##*$'\n'}" == "200" ]] || fail "GET $1 returned HTTP ${body##*$'\n'}: ${body%$'\n'*}"
    echo "${body%$'\n'*}"
}
# (assign first: a failure inside $(...) used as an argument would not stop the script)
body=$(http_ok /healthz); log "GET /healthz -> $body"
body=$(http_ok /readyz); log "GET /readyz  -> $body"
# The CPU image installs the litert extra, so CATDOG_RUNTIME=auto serves the committed LiteRT fp32 model.
want_runtime="${CATDOG_SMOKE_RUNTIME:-litert-fp32}"
[[ "$body" == *"\"runtime\":\"$want_runtime\""* ]] || fail "/readyz: expected runtime $want_runtime, got $body"

DATA_DIR="$REPO_ROOT/../shared/data/cats_and_dogs_filtered"
IMG="$DATA_DIR/validation/cats/cat.2000.jpg"
if [[ ! -f "$IMG" ]]; then
    IMG=$(find "$DATA_DIR" -type f -iname '*.jpg' 2>/dev/null | sort || true)
    IMG=${IMG%%$'\n'*}
fi
if [[ -z "$IMG" || ! -f "$IMG" ]]; then
    # No dataset on this machine: make a real JPEG with the image's own Pillow.
    IMG="$(mktemp /tmp/catdog-smoke.XXXXXX.jpg)"
    log "no dataset photo under $DATA_DIR; using a generated JPEG ($IMG)"
    docker run --rm --entrypoint /opt/venv/bin/python "$IMAGE" -c \
        'import io, sys; from PIL import Image; b = io.BytesIO(); Image.radial_gradient("L").convert("RGB").resize((200, 160)).save(b, "JPEG"); sys.stdout.buffer.write(b.getvalue())' \
        >"$IMG" || fail "could not generate a test JPEG"
fi
log "test photo: $IMG"

check_prediction() {  # $1: description, $2: JSON body
    "$PY" - "$1" "$2" <<'EOF' || fail "$1: unexpected answer: $2"
import json, math, sys
what, body = sys.argv[1], json.loads(sys.argv[2])
probs = body["probabilities"]
assert body["label"] in {"cat", "dog"}, body["label"]
assert set(probs) == {"cat", "dog"}, probs
assert all(0.0 <= float(p) <= 1.0 for p in probs.values()), probs
assert math.isclose(sum(float(p) for p in probs.values()), 1.0, abs_tol=1e-3), probs
assert body["label"] == max(probs, key=lambda k: float(probs[k])), body
print(f"[docker-smoke] {what}: label={body['label']} probabilities={probs} "
      f"model_version={body.get('model_version')} latency_ms={body.get('latency_ms')}")
EOF
}
post() {  # curl args...; prints body, fails unless HTTP 200
    local out
    out=$(curl -sS --max-time 60 -w '\n%{http_code}' "$@") || fail "POST /predict: request failed"
    [[ "${out##*$'\n'}" == "200" ]] || fail "POST /predict returned HTTP ${out##*$'\n'}: ${out%$'\n'*}"
    echo "${out%$'\n'*}"
}
body=$(post -F "file=@$IMG;type=image/jpeg" "$BASE_URL/predict")
check_prediction "POST /predict multipart" "$body"
body=$(post -H 'Content-Type: image/jpeg' --data-binary "@$IMG" "$BASE_URL/predict")
check_prediction "POST /predict raw body" "$body"
phase_done "endpoint checks"

uid=$(docker exec "$CID" id -u) || fail "docker exec id -u failed"
[[ "$uid" != "0" ]] || fail "container process runs as root"
cfg_user=$(docker inspect -f '{{.Config.User}}' "$CID")
[[ -n "$cfg_user" && "$cfg_user" != "0" && "$cfg_user" != "root" ]] || fail "image has no non-root USER (got '$cfg_user')"
log "runs as uid $uid (image USER $cfg_user)"

health=""
deadline=$(( $(date +%s) + HEALTHY_TIMEOUT ))
while (( $(date +%s) < deadline )); do
    health=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$CID")
    [[ "$health" == "healthy" || "$health" == "none" || "$health" == "unhealthy" ]] && break
    sleep 1
done
if [[ "$health" != "healthy" ]]; then
    docker inspect -f '{{json .State.Health}}' "$CID" >&2 || true
    fail "HEALTHCHECK status is '$health', expected 'healthy' (waited up to ${HEALTHY_TIMEOUT} s)"
fi
log "HEALTHCHECK status: healthy ($(( $(date +%s) - RUN_T )) s after start)"
phase_done "user + healthcheck"
