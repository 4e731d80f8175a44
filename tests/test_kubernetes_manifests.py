"""deploy/kubernetes: every kustomization renders and validates against the Kubernetes schemas, and
the rendered objects say what the README promises (probes, non-root, read-only root, GPU request,
PodDisruptionBudget, HPA, KServe V2 custom predictor)."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from tests.k8s_render import KUSTOMIZATIONS, predictor_as_pod, render, validate


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(name) for name in KUSTOMIZATIONS}


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['kind'] for d in docs]}"
    return found[0]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_kustomization_validates(rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    assert rendered[name], f"{name} rendered nothing"
    for doc in rendered[name]:
        validate(doc)


def test_validation_catches_a_misspelt_field(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = copy.deepcopy(by_kind(rendered["overlays/cpu"], "Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesystm"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    isvc = copy.deepcopy(by_kind(rendered["kserve"], "InferenceService"))
    isvc["spec"]["predictor"]["containers"][0]["prots"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(isvc)


@pytest.mark.parametrize("overlay", ["overlays/cpu", "overlays/gpu"])
def test_deployment_is_probed_hardened_and_budgeted(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    deployment = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = container["startupProbe"]
    # The model load gets minutes before liveness can restart the pod.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sec = container["securityContext"]
    assert sec["readOnlyRootFilesystem"] is True
    assert sec["allowPrivilegeEscalation"] is False
    assert sec["capabilities"]["drop"] == ["ALL"]
    # The read-only root needs a writable /tmp (multipart spooling).
    tmp_mounts = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp_mounts and any("emptyDir" in v for v in pod["volumes"] if v["name"] == tmp_mounts[0]["name"])

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    for kind in ("Service", "PodDisruptionBudget"):
        obj = by_kind(docs, kind)
        sel = obj["spec"]["selector"]
        sel = sel.get("matchLabels", sel)
        assert sel.items() <= labels.items(), f"{kind} selects no pod of the Deployment"
    pdb = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] >= 1
    hpa = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"] >= 1
    service = by_kind(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] in ("http", 8000)


def test_overlays_pick_their_image_and_only_gpu_asks_for_a_gpu(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    cpu = by_kind(rendered["overlays/cpu"], "Deployment")["spec"]["template"]["spec"]
    gpu = by_kind(rendered["overlays/gpu"], "Deployment")["spec"]["template"]["spec"]
    assert cpu["containers"][0]["image"].endswith(":cpu")
    assert gpu["containers"][0]["image"].endswith(":gpu")
    assert "nvidia.com/gpu" not in str(cpu["containers"][0]["resources"])
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
    # Both overlays can live in one namespace: different names, selectors that do not overlap.
    cpu_names = {d["metadata"]["name"] for d in rendered["overlays/cpu"]}
    gpu_names = {d["metadata"]["name"] for d in rendered["overlays/gpu"]}
    assert not cpu_names & gpu_names


def test_kserve_custom_predictor_speaks_v2(rendered: dict[str, list[dict[str, Any]]]) -> None:
    isvc = by_kind(rendered["kserve"], "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"].endswith(":cpu")
    assert container["ports"][0]["containerPort"] == 8000
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert isvc["metadata"]["annotations"]["catdog/inference-protocol"] == "v2"
    assert predictor["maxReplicas"] > predictor["minReplicas"] >= 1
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert predictor_as_pod(isvc)["spec"]["containers"] == predictor["containers"]
