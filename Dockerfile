# catdog: cat-vs-dog classifier service (FastAPI + TensorFlow SavedModel).
#
#   docker build --target cpu -t catdog:cpu .
#   docker build --target gpu -t catdog:gpu .     # needs the NVIDIA container toolkit at run time
#   docker run --rm -p 8000:8000 catdog:cpu
#
# BASE_IMAGE defaults to the official python:3.11-slim-bookworm. Where no registry is reachable,
# docker/build-base-image.sh builds a Debian bookworm stand-in with that same tag (python3 at
# /usr/bin/python3 instead of /usr/local/bin/python3, so everything below only uses `python3` to make
# the venv, and the venv's own interpreter afterwards).
#
# Stage order matters for the classic (non-BuildKit) builder, which builds every stage up to --target:
# the CPU stages come first so `--target cpu` never downloads the CUDA wheels.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
# base: runtime settings shared by every stage and both final images.
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
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
# venv: an empty virtualenv plus the requirement lists generated from pyproject.toml (the single source
# of truth for dependencies). Only pyproject.toml is copied, so code changes never bust the deps layers.
FROM base AS venv
RUN python3 -m venv /opt/venv
COPY pyproject.toml docker/pyproject_requirements.py /tmp/build/
RUN /opt/venv/bin/python /tmp/build/pyproject_requirements.py /tmp/build/pyproject.toml \
        > /tmp/build/requirements-cpu.txt \
    && /opt/venv/bin/python /tmp/build/pyproject_requirements.py /tmp/build/pyproject.toml --gpu \
        > /tmp/build/requirements-gpu.txt \
    && cat /tmp/build/requirements-cpu.txt

# ---------------------------------------------------------------------------------------------------
# CPU image.
FROM venv AS deps-cpu
RUN /opt/venv/bin/python -m pip install --no-cache-dir -r /tmp/build/requirements-cpu.txt \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

FROM base AS cpu
COPY --from=deps-cpu /opt/venv /opt/venv
COPY catdog/ /app/catdog/
COPY app/ /app/app/
COPY model/ /app/model/
USER 10001:10001

# ---------------------------------------------------------------------------------------------------
# GPU image: tensorflow[and-cuda] brings the CUDA/cuDNN runtime as pip wheels (several GB); the host
# needs only the NVIDIA driver and container toolkit (docker run --gpus all / compose profile "gpu").
FROM venv AS deps-gpu
RUN /opt/venv/bin/python -m pip install --no-cache-dir -r /tmp/build/requirements-gpu.txt \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

FROM base AS gpu
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=deps-gpu /opt/venv /opt/venv
COPY catdog/ /app/catdog/
COPY app/ /app/app/
COPY model/ /app/model/
USER 10001:10001
