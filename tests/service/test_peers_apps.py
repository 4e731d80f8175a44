"""The peer apps of benchmarks/peers answer like catdog on real photos (same model, same decoding).

Light on purpose: the naive FastAPI app runs here; BentoML and LitServe, as servers in their own venvs,
in tests/system/test_peers_servers.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from benchmarks.peers import run as runner
from tests.conftest import real_photos


@pytest.fixture
def naive_client(tiny_pet_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("PEER_MODEL_DIR", str(tiny_pet_model_dir))
    monkeypatch.setenv("PEER_RUNTIME", "tensorflow")
    from benchmarks.peers.naive_fastapi import app

    with TestClient(app) as client:
        yield client


def test_naive_app_answers_like_catdog(naive_client: TestClient, pet_client: TestClient) -> None:
    for path, _ in real_photos(2):
        files = {"file": (path.name, path.read_bytes(), "image/jpeg")}
        naive = naive_client.post("/predict", files=files)
        catdog = pet_client.post("/predict", files=files)
        assert naive.status_code == 200 and catdog.status_code == 200
        assert naive.json()["label"] == catdog.json()["label"]
        assert naive.json()["probabilities"]["dog"] == pytest.approx(
            catdog.json()["probabilities"]["dog"], abs=1e-6
        )
        assert naive.json()["pet_score"] == pytest.approx(catdog.json()["pet_score"], abs=1e-6)


def test_naive_app_refuses_a_non_image(naive_client: TestClient) -> None:
    response = naive_client.post("/predict", files={"file": ("x.jpg", b"not an image", "image/jpeg")})
    assert response.status_code == 400


def test_runner_multipart_body_is_what_a_server_parses(naive_client: TestClient) -> None:
    photo = real_photos(1)[0][0].read_bytes()
    body = runner.multipart(photo, "file")
    response = naive_client.post(
        "/predict", content=body, headers={"content-type": f"multipart/form-data; boundary={runner.BOUNDARY}"}
    )
    assert response.status_code == 200, response.text


def test_tree_rss_counts_a_live_process() -> None:
    assert runner.tree_rss(os.getpid()) > 10 * 2**20
    assert runner.tree_rss(2**22 + 12345) == 0  # no such process


def test_ratio_summary_gives_the_spread_of_same_round_ratios() -> None:
    text = runner.ratio_summary([1.0, 1.1, 0.9, 1.05])
    assert text == "median 1.025  mean 1.012 [0.929, 1.096]  ahead in 2 of 4"
    # Two rounds are too few for an interval.
    assert runner.ratio_summary([1.2, 1.3]) == "median 1.250  mean 1.250  ahead in 2 of 2"


def test_phase_medians_skip_warm_up_and_incomplete_requests() -> None:
    from benchmarks.phases import MARKS, medians

    request = dict(zip(MARKS, (0.0, 0.001, 0.002, 0.005, 0.020, 0.021, 0.022), strict=True))
    found = medians([{"arrive": 0.0}, *[request] * 3], skip=1)  # the first: warm-up; none incomplete
    assert found["requests"] == 3
    assert found["model call"] == pytest.approx(15.0)
    assert found["event loop, critical path"] == pytest.approx(2.0 + 1.0)  # arrive->decode + model end->sent
    assert medians([{"arrive": 0.0}, request], skip=0)["requests"] == 1  # the incomplete one is left out
