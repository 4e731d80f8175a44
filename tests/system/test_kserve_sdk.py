"""KServe's own Python SDK (`kserve.InferenceRESTClient`) against a live server, both of its protocols.

The SDK pins packages the service's lock does not allow (protobuf < 7, psutil < 6), so it lives in
a venv of its own, made on first use under ~/.cache/catdog-test (pip, from the package registry) and
kept between runs; the client runs there as a subprocess and prints what it got as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import real_photos

KSERVE = "kserve==0.21.0"
VENV = Path.home() / ".cache" / "catdog-test" / KSERVE.replace("==", "-")

CLIENT = r"""
import asyncio, base64, json, sys
from pathlib import Path

import numpy as np
from kserve import InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

base_url, photo = sys.argv[1], Path(sys.argv[2]).read_bytes()


async def main() -> dict:
    found = {}
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=60)) as v2:
        found["server_ready"] = await v2.is_server_ready(base_url)
        found["server_live"] = await v2.is_server_live(base_url)
        found["model_ready"] = await v2.is_model_ready(base_url, "catdog")
        for binary in (True, False):
            # Binary data: the raw bytes; JSON: strings, so base64 (what the service reads there).
            element = photo if binary else base64.b64encode(photo).decode()
            image = InferInput("image", [2], "BYTES")
            image.set_data_from_numpy(np.array([element, element], dtype=object), binary_data=binary)
            request = InferRequest("catdog", [image], request_id=f"binary-{binary}")
            response = await v2.infer(base_url, request, model_name="catdog")
            found[f"v2_binary_{binary}"] = {
                "id": response.id,
                "model_version": response.model_version,
                "outputs": {
                    output.name: [
                        value.decode() if isinstance(value, bytes) else value
                        for value in output.as_numpy().tolist()
                    ]
                    for output in response.outputs
                },
            }
        try:
            await v2.infer(base_url, {"inputs": []}, model_name="resnet")
        except Exception as error:  # httpx.HTTPStatusError
            found["v2_unknown_model"] = getattr(getattr(error, "response", None), "status_code", None)
    async with InferenceRESTClient(RESTConfig(protocol="v1", timeout=60)) as v1:
        instances = {"instances": [{"b64": base64.b64encode(photo).decode()}]}
        found["v1"] = await v1.infer(base_url, instances, model_name="catdog")
    return found


print(json.dumps(asyncio.run(main())))
"""


@pytest.fixture(scope="module")
def kserve_python() -> Path:
    python = VENV / "bin" / "python"
    marker = VENV / "installed"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--only-binary=:all:", KSERVE],
            check=True,
            timeout=900,
        )
        marker.write_text(KSERVE)
    return python


@pytest.fixture(scope="module")
def served(default_server: str) -> Iterator[str]:
    yield default_server


def test_kserve_sdk_reads_both_protocols(kserve_python: Path, served: str, tmp_path: Path) -> None:
    photo, label = real_photos(per_class=1)[0]
    completed = subprocess.run(
        [str(kserve_python), "-c", CLIENT, served, str(photo)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    found = json.loads(completed.stdout.strip().splitlines()[-1])
    assert (found["server_ready"], found["server_live"], found["model_ready"]) == (True, True, True)
    for binary in (True, False):
        answer = found[f"v2_binary_{binary}"]
        assert answer["id"] == f"binary-{binary}"
        # kserve 0.21's InferResponse.from_bytes leaves model_version out of what it parses.
        assert answer["model_version"] in ("1", None)
        outputs = answer["outputs"]
        assert outputs["label"] == [label, label]
        probabilities = outputs["probabilities"]
        assert len(probabilities) == 2 and all(abs(sum(row) - 1) < 1e-5 for row in probabilities)
        assert all(0 < value < 1 for value in outputs["pet_score"])
        assert outputs["is_cat_or_dog"] == [True, True]
    assert found["v2_unknown_model"] == 404
    (prediction,) = found["v1"]["predictions"]
    assert prediction["label"] == label
    assert prediction["probabilities"] == pytest.approx(
        found["v2_binary_False"]["outputs"]["probabilities"][0]
    )
