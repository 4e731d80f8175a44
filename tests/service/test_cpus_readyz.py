"""/readyz shows the thread count the runtimes use (the counting itself: tests/unit/test_cpus.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from catdog import runtimes
from catdog.cpus import CpuCount


def test_readyz_shows_the_runtime_threads(
    monkeypatch: pytest.MonkeyPatch, make_client: Callable[..., TestClient]
) -> None:
    monkeypatch.delenv(runtimes.THREADS_ENV, raising=False)
    monkeypatch.setattr(runtimes, "process_cpus", lambda: CpuCount(2, "cgroup v2 cpu.max 200000/100000"))
    ready = make_client().get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["threads"] == {"count": 2, "source": "cgroup v2 cpu.max 200000/100000"}
