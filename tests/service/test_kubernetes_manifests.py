"""deploy/kubernetes: every kustomization renders and validates against the Kubernetes schemas, and
the rendered objects say what docs/deployment.md promises (probes, non-root, read-only root, GPU request,
PodDisruptionBudget, HPA, KServe V2 custom predictor). Beyond the schemas: the CPU and GPU variants in
one namespace never select each other's pods, the InferenceService passes Knative's and KServe's
default rules in both modes, the HPAs scale on requests in flight through a Prometheus Adapter rule
for a metric the app exports, and every image tag is the package version."""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from tests.docs_sections import DOCS, section
from tests.k8s_render import (
    ADAPTER_VALUES,
    K8S_DIR,
    KUSTOMIZATIONS,
    REPO_ROOT,
    SHARED_NAMESPACE,
    adapter_problems,
    cross_checks,
    hpa_pod_metrics,
    kserve_problems,
    overlap_problems,
    predictor_as_pod,
    render,
    selects,
    validate,
)

NAMESPACE = "catdog"
VARIANT_OF = {"overlays/cpu": "cpu", "overlays/gpu": "gpu", "kserve": "cpu", "kserve-raw": "cpu"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(name) for name in KUSTOMIZATIONS}


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['kind'] for d in docs]}"
    return found[0]


def package_version() -> str:
    match = re.search(r'^version = "([^"]+)"$', (REPO_ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert match, "no version in pyproject.toml"
    return match.group(1)


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


def test_the_cross_checks_pass(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """What scripts/validate-k8s.sh reports beyond the schemas."""
    checks = cross_checks(rendered)
    assert any("KServe Serverless" in what for what in checks)
    assert any("KServe RawDeployment" in what for what in checks)
    assert {what: problems for what, problems in checks.items() if problems} == {}


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
    # The read-only root needs a writable /tmp (TensorFlow's and Keras's files).
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
    assert cpu["containers"][0]["image"].endswith("-cpu")
    assert gpu["containers"][0]["image"].endswith("-gpu")
    assert "nvidia.com/gpu" not in str(cpu["containers"][0]["resources"])
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])


# --- one namespace -----------------------------------------------------------------------------------


def in_namespace(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Every kustomization as `kubectl apply -k ... -n catdog` puts it: all in one namespace."""
    placed = copy.deepcopy({name: rendered[name] for name in SHARED_NAMESPACE})
    for docs in placed.values():
        for doc in docs:
            doc["metadata"]["namespace"] = NAMESPACE
    return placed


def test_variants_in_one_namespace_never_select_each_other(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    placed = in_namespace(rendered)
    assert overlap_problems(placed) == []
    pods = {
        name: [d["spec"]["template"]["metadata"]["labels"] for d in placed[name] if d["kind"] == "Deployment"]
        for name in ("overlays/cpu", "overlays/gpu")
    }
    for name, other in (("overlays/cpu", "overlays/gpu"), ("overlays/gpu", "overlays/cpu")):
        docs = placed[name]
        deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
        checked = set()
        for doc in docs:
            if doc["kind"] in ("Service", "Deployment", "PodDisruptionBudget"):
                selector = doc["spec"]["selector"]
            elif doc["kind"] == "HorizontalPodAutoscaler":
                selector = deployments[doc["spec"]["scaleTargetRef"]["name"]]["spec"]["selector"]
            else:
                continue
            checked.add(doc["kind"])
            assert all(selects(selector, labels) for labels in pods[name]), f"{doc['kind']} misses its pods"
            assert not any(selects(selector, labels) for labels in pods[other]), (
                f"{name} {doc['kind']} selects {other}'s pods"
            )
            # Not by luck: the variant label is in the selector itself.
            flat = selector.get("matchLabels", selector)
            assert flat.get("catdog/variant") == VARIANT_OF[name], f"{name} {doc['kind']}: {selector}"
        assert checked == {"Service", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler"}


def test_the_overlap_check_catches_a_selector_without_the_variant(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    placed = in_namespace(rendered)
    for doc in placed["overlays/cpu"]:
        if doc["kind"] == "Service":
            del doc["spec"]["selector"]["catdog/variant"]
    assert any("Service/catdog selects overlays/gpu's pods" in p for p in overlap_problems(placed))


# --- KServe ------------------------------------------------------------------------------------------


def test_kserve_custom_predictor_speaks_v2(rendered: dict[str, list[dict[str, Any]]]) -> None:
    isvc = by_kind(rendered["kserve"], "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["ports"][0]["containerPort"] == 8000
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert isvc["metadata"]["annotations"]["catdog/inference-protocol"] == "v2"
    assert predictor["maxReplicas"] > predictor["minReplicas"] >= 1
    assert predictor_as_pod(isvc)["spec"]["containers"] == predictor["containers"]


@pytest.mark.parametrize(("name", "mode"), [("kserve", "Serverless"), ("kserve-raw", "RawDeployment")])
def test_kserve_runs_on_a_default_install_in_each_mode(
    rendered: dict[str, list[dict[str, Any]]], name: str, mode: str
) -> None:
    isvc = by_kind(rendered[name], "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == mode
    assert kserve_problems(isvc) == []
    predictor = isvc["spec"]["predictor"]
    # Knative takes no pod-level securityContext by default: everything is on the container.
    assert "securityContext" not in predictor
    (container,) = predictor["containers"]
    sec = container["securityContext"]
    assert sec["runAsNonRoot"] is True and sec["runAsUser"] == 10001
    assert sec["allowPrivilegeEscalation"] is False and sec["readOnlyRootFilesystem"] is True
    assert sec["capabilities"] == {"drop": ["ALL"]}
    assert sec["seccompProfile"] == {"type": "RuntimeDefault"}


def test_kserve_probes_wait_for_the_model_like_the_deployment(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The port refuses connections until the model is loaded (up to about a minute on 2 CPUs):
    liveness must not restart the pod before the Deployment's startup allowance is spent."""
    deployment = by_kind(rendered["overlays/cpu"], "Deployment")
    allowed = deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    allowance = allowed["periodSeconds"] * allowed["failureThreshold"]
    for name in ("kserve", "kserve-raw"):
        (container,) = by_kind(rendered[name], "InferenceService")["spec"]["predictor"]["containers"]
        startup = container["startupProbe"]
        assert startup["httpGet"]["port"] == container["ports"][0]["containerPort"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= allowance
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe].get("timeoutSeconds", 1) >= 2, f"{probe}: a 1 s timeout under load"


def test_kserve_checks_catch_what_the_old_manifest_had(rendered: dict[str, list[dict[str, Any]]]) -> None:
    isvc = copy.deepcopy(by_kind(rendered["kserve"], "InferenceService"))
    isvc["spec"]["predictor"]["securityContext"] = {"runAsNonRoot": True, "runAsUser": 10001}
    isvc["spec"]["predictor"]["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_ADMIN"]
    problems = kserve_problems(isvc)
    assert "spec.predictor.securityContext" in problems
    assert "containers[kserve-container].capabilities.add" in problems
    raw = copy.deepcopy(by_kind(rendered["kserve-raw"], "InferenceService"))
    raw["spec"]["predictor"]["scaleMetric"] = "concurrency"
    assert any("KServe's HPA takes cpu or memory" in p for p in kserve_problems(raw))


def test_kserve_manifest_says_what_it_was_checked_against() -> None:
    text = (K8S_DIR / "kserve" / "inferenceservice.yaml").read_text()
    for needle in ("KServe v0.20.0", "Knative", "Serving 1.21.1", "kubernetes.podspec-securitycontext"):
        assert needle in text


# --- autoscaling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["overlays/cpu", "overlays/gpu"])
def test_hpa_scales_on_requests_in_flight_with_cpu_as_fallback(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    metrics = by_kind(rendered[overlay], "HorizontalPodAutoscaler")["spec"]["metrics"]
    pods = [m for m in metrics if m["type"] == "Pods"]
    assert [m["pods"]["metric"]["name"] for m in pods] == ["catdog_requests_in_flight"]
    assert pods[0]["pods"]["target"]["type"] == "AverageValue"
    cpu = [m for m in metrics if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert len(cpu) == 1, "CPU stays as the fallback"
    # Never CPU alone, least of all on the GPU variant.
    assert {m["type"] for m in metrics} != {"Resource"}


def test_the_hpa_metric_is_one_the_app_exports() -> None:
    from app.admission import AdmissionController

    registry = CollectorRegistry()
    controller = AdmissionController(4, registry)
    controller.try_enter()
    exposition = generate_latest(registry).decode()
    assert "# TYPE catdog_requests_in_flight gauge" in exposition
    assert "catdog_requests_in_flight 1.0" in exposition


def test_adapter_rules_serve_the_hpa_metric(rendered: dict[str, list[dict[str, Any]]]) -> None:
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    wanted = hpa_pod_metrics(rendered["overlays/cpu"]) | hpa_pod_metrics(rendered["overlays/gpu"])
    assert wanted == {"catdog_requests_in_flight"}
    assert adapter_problems(values, wanted) == []


def test_adapter_check_catches_unknown_fields_and_missing_rules() -> None:
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    typo = copy.deepcopy(values)
    typo["rules"]["custom"][0]["seriesQeury"] = typo["rules"]["custom"][0].pop("seriesQuery")
    assert adapter_problems(typo, {"catdog_requests_in_flight"})
    assert any(
        "served by 0 rules" in p for p in adapter_problems(values, {"catdog_requests_in_flight", "other"})
    )


# --- image tags --------------------------------------------------------------------------------------


def test_every_image_tag_is_the_package_version(rendered: dict[str, list[dict[str, Any]]]) -> None:
    version = package_version()
    for name, docs in rendered.items():
        for doc in docs:
            pod = predictor_as_pod(doc)["spec"] if doc["kind"] == "InferenceService" else None
            if doc["kind"] == "Deployment":
                pod = doc["spec"]["template"]["spec"]
            for container in (pod or {}).get("containers", []):
                assert container["image"].rsplit(":", 1)[1] == f"{version}-{VARIANT_OF[name]}", name
    # The sources too: base files applied on their own, the images: transformers, compose.
    sources = [*K8S_DIR.rglob("*.yaml"), REPO_ROOT / "docker-compose.yml"]
    tags = []
    for path in sources:
        for line in path.read_text().splitlines():
            found = re.match(r"\s*(?:image:\s*catdog(?:-gpu)?:|newTag:\s*)([^\s#]+)", line)
            if found:
                tags.append((path.relative_to(REPO_ROOT), found.group(1)))
    assert len(tags) >= 8, tags
    for path, tag in tags:
        assert tag in (f"{version}-cpu", f"{version}-gpu"), f"{path}: tag {tag}, package version {version}"
    untagged = [
        str(path.relative_to(REPO_ROOT))
        for path in sources
        if re.search(r"^\s*image:\s*catdog\s*(#.*)?$", path.read_text(), re.MULTILINE)
    ]
    assert not untagged, f"untagged catdog image in {untagged}"


# --- what docs/deployment.md promises ------------------------------------------------------------------


def test_deployment_docs_are_true_to_the_rendered_yaml(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Each promise of docs/deployment.md "Deploying to a cluster", checked in the rendered YAML text and
    objects."""
    docs = section(DOCS / "deployment.md", "Deploying to a cluster")
    flat = " ".join(docs.split())
    cpu_text = yaml.safe_dump_all(rendered["overlays/cpu"])
    cpu = by_kind(rendered["overlays/cpu"], "Deployment")
    (container,) = cpu["spec"]["template"]["spec"]["containers"]
    startup = container["startupProbe"]
    startup_seconds = startup["periodSeconds"] * startup["failureThreshold"]
    hpa = by_kind(rendered["overlays/cpu"], "HorizontalPodAutoscaler")["spec"]
    gpu_hpa = by_kind(rendered["overlays/gpu"], "HorizontalPodAutoscaler")["spec"]
    isvc = by_kind(rendered["kserve"], "InferenceService")["spec"]["predictor"]
    promises = {
        "liveness on `/healthz`": "path: /healthz" in cpu_text,
        "readiness on `/readyz`": "path: /readyz" in cpu_text,
        "up to 5 minutes before liveness counts": startup_seconds == 300,
        "CPU/memory requests and limits": all(
            container["resources"][k].keys() >= {"cpu", "memory"} for k in ("requests", "limits")
        ),
        "non-root uid 10001": "runAsNonRoot: true" in cpu_text and "runAsUser: 10001" in cpu_text,
        "read-only root filesystem": "readOnlyRootFilesystem: true" in cpu_text,
        "`emptyDir` `/tmp`": "mountPath: /tmp" in cpu_text and "emptyDir:" in cpu_text,
        "no privilege escalation": "allowPrivilegeEscalation: false" in cpu_text,
        "all capabilities dropped": "- ALL" in cpu_text,
        "2 to 10 replicas": (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10),
        "1 to 4 replicas": (gpu_hpa["minReplicas"], gpu_hpa["maxReplicas"]) == (1, 4),
        "8 requests in flight per replica": any(
            m.get("pods", {}).get("target", {}).get("averageValue") == "8" for m in hpa["metrics"]
        ),
        "32 per GPU replica": any(
            m.get("pods", {}).get("target", {}).get("averageValue") == "32" for m in gpu_hpa["metrics"]
        ),
        "70% of the 1-CPU request": any(
            m.get("resource", {}).get("target", {}).get("averageUtilization") == 70 for m in hpa["metrics"]
        )
        and container["resources"]["requests"]["cpu"] == "1",
        "between 1 and 10 replicas on concurrency": isvc["minReplicas"] == 1
        and isvc["maxReplicas"] == 10
        and isvc["scaleMetric"] == "concurrency",
        "KServe v0.20.0": True,
        "Knative Serving 1.21.1": True,
    }
    missing = [promise for promise in promises if promise not in flat]
    assert not missing, f"docs/deployment.md 'Deploying to a cluster' no longer says: {missing}"
    broken = [promise for promise, holds in promises.items() if not holds]
    assert not broken, f"the rendered YAML does not do what docs/deployment.md says: {broken}"
