# catdog: cat-vs-dog classifier service (FastAPI + TensorFlow SavedModel).
#
#   docker build --target cpu -t catdog:cpu .
#   docker build --target gpu -t catdog:gpu .     # needs the NVIDIA container toolkit at run time
#   scripts/build-gpu-image.sh                    # builds the GPU image, prints its size, checks it serves
#   docker run --rm -p 8000:8000 catdog:cpu
#
# BASE_IMAGE defaults to the official python:3.11-slim-bookworm. Where no registry is reachable,
# docker/build-base-image.sh builds a Debian bookworm stand-in tagged catdog-base:bookworm and prints the
# name to pass here (scripts/setup-compose.sh writes it to .env for compose). The stand-in has python3 at
# /usr/bin/python3 instead of /usr/local/bin/python3, so everything below only uses `python3` to make
# the venv, and the venv's own interpreter afterwards.
#
# Build-machine trust stays in the builder stages: a host behind a TLS-intercepting proxy puts its CA
# certificates in docker/ca-certificates/*.crt (git-ignored; scripts/setup-compose.sh does it). They are
# copied into the builder only, and pip sees them through an environment variable of one RUN. The final
# images copy nothing but /opt/venv and the code from there: no CA file, no PIP_CERT / SSL_CERT_FILE /
# REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (tests/system/test_docker_image.py checks the final image).
#
# Dependencies come from the lockfiles (scripts/lock.sh): requirements/cpu.lock has tensorflow-cpu and
# only the serving dependencies; gpu.lock has tensorflow[and-cuda]. Installed with --no-deps, so an image
# built next month has exactly what CI tested.
#
# Stage order matters for the classic (non-BuildKit) builder, which builds every stage up to --target:
# the CPU stages come first so `--target cpu` never downloads the CUDA wheels.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
# base: runtime settings shared by both final images.
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/app \
    TF_CPP_MIN_LOG_LEVEL=2 \
    CATDOG_HOST=0.0.0.0 \
    CATDOG_PORT=8000 \
    CATDOG_MODEL_DIR=/app/model/default \
    CATDOG_AUTO_TRAIN=false
RUN groupadd --system --gid 10001 catdog \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/catdog --create-home \
        --shell /usr/sbin/nologin catdog
WORKDIR /app
EXPOSE 8000
# /readyz is 200 only once the model is loaded and warmed; urlopen raises (exit 1) on 503 or no answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('CATDOG_PORT', '8000'), timeout=4)"]
CMD ["/opt/venv/bin/python", "-m", "app", "serve"]

# ---------------------------------------------------------------------------------------------------
# builder: a venv with pip, the lockfiles and (only here) the build host's extra CA certificates.
# `docker/ca-certificate[s]` matches nothing on a host without any: the build works the same.
FROM base AS builder
RUN python3 -m venv /opt/venv
COPY requirements/cpu.lock requirements/gpu.lock docker/ca-certificate[s] /tmp/build/
# pip-install: trust the system store plus /tmp/build/*.crt for this one command (no ENV, no layer
# outside the builder), install a lockfile without resolving, then drop what serving never uses: pip,
# setuptools and wheel, TensorFlow's C++ headers (430 MB, for compiling custom ops), test suites, caches.
RUN printf '%s\n' '#!/bin/sh' 'set -eu' \
        'if ls /tmp/build/*.crt >/dev/null 2>&1; then' \
        '  cat /etc/ssl/certs/ca-certificates.crt /tmp/build/*.crt > /tmp/build/trust.pem' \
        '  export PIP_CERT=/tmp/build/trust.pem' \
        'fi' \
        'PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/venv/bin/python -m pip install --no-deps -r "$1"' \
        '/opt/venv/bin/python -m pip uninstall --yes --quiet setuptools wheel pip' \
        'sp=$(echo /opt/venv/lib/python3*/site-packages)' \
        'rm -rf "$sp/tensorflow/include"' \
        'find "$sp" -path "$sp/tensorflow" -prune -o -type d -name tests -prune -exec rm -rf {} +' \
        'find /opt/venv -name __pycache__ -type d -prune -exec rm -rf {} +' \
        > /usr/local/bin/install-lock \
    && chmod +x /usr/local/bin/install-lock

# ---------------------------------------------------------------------------------------------------
# CPU image.
FROM builder AS deps-cpu
RUN install-lock /tmp/build/cpu.lock

FROM base AS cpu
COPY --from=deps-cpu /opt/venv /opt/venv
COPY catdog/ /app/catdog/
COPY app/ /app/app/
COPY model/ /app/model/
USER 10001:10001

# ---------------------------------------------------------------------------------------------------
# GPU image: tensorflow[and-cuda] brings the CUDA/cuDNN runtime as pip wheels (several GB); the host
# needs only the NVIDIA driver and container toolkit (docker run --gpus all / compose profile "gpu").
# Without a GPU it still serves, with TensorFlow on the CPU, and logs "no GPU found" once.
FROM builder AS deps-gpu
RUN install-lock /tmp/build/gpu.lock

FROM base AS gpu
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=deps-gpu /opt/venv /opt/venv
COPY catdog/ /app/catdog/
COPY app/ /app/app/
COPY model/ /app/model/
USER 10001:10001
