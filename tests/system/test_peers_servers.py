"""The peer servers of benchmarks/peers (BentoML, LitServe) answer real photos, each in its own process
and venv: only where `python -m benchmarks.peers.run` created the venvs (under ~/.cache/catdog-bench);
CI installs neither, so these skip there. (The naive FastAPI peer: tests/service/test_peers_apps.py.)"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from benchmarks.peers import run as runner
from tests.conftest import real_photos


@pytest.mark.parametrize("peer", sorted(runner.PEER_PACKAGES))
def test_peer_in_its_venv_answers(peer: str, tiny_pet_model_dir: Path) -> None:
    if runner.ensure_venv(peer, install=False) is None:
        pytest.skip(f"no {peer} venv under {runner.CACHE} (python -m benchmarks.peers.run creates it)")
    system = runner.systems([peer], "tensorflow", tiny_pet_model_dir, install=False)[peer]
    server = runner.Server(system)
    try:
        server.wait(timeout=240)
        photo = real_photos(1)[0][0].read_bytes()
        response = httpx.post(
            server.base + system.predict_path,
            content=runner.multipart(photo, system.field_name),
            headers={"content-type": f"multipart/form-data; boundary={runner.BOUNDARY}"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        answer = answer[0] if isinstance(answer, list) else answer
        assert answer["label"] in ("cat", "dog")
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    finally:
        server.stop()
