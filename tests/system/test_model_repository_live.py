"""The retrain -> drop in -> verify -> promote -> roll back walk on a real server under steady load.

`python -m app serve` serves a model repository holding the committed default model as version 1
(hard links: no copy of its 150 MB). Client threads post a real photo without pause: two unpinned,
and from its arrival one pinned to version 2. While they run, version 2 is dropped in, a broken
version 3 is dropped in, serving.json promotes 2 (unloading 1 with requests in flight) and rolls
back to 1, all picked up by the repository poller. Not one request may fail, the unpinned answers
switch version exactly once each way, and every pinned answer comes from its version.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.common import free_port, wait_ready
from catdog.client import CatdogError, Client
from tests.conftest import DEFAULT_MODEL_DIR, REPO_ROOT, real_photos

TOKEN = "live-repository-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def drop_in(model_folder: Path, number: int, source: Path, break_it: bool = False) -> None:
    """A version as `python -m training train --next-version` publishes it: written aside, one rename."""
    staging = model_folder / f".staging-test/{number}"
    shutil.copytree(source, staging, copy_function=os.link)
    if break_it:
        (staging / "metadata.json").unlink()  # a hard link: replace it, never write through it
        (staging / "metadata.json").write_text('{"class_names": ')
    os.rename(staging, model_folder / str(number))
    staging.parent.rmdir()


def set_config(model_folder: Path, document: dict[str, object]) -> None:
    temporary = model_folder / ".serving.json.tmp"
    temporary.write_text(json.dumps(document))
    os.replace(temporary, model_folder / "serving.json")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Traffic:
    """Threads posting a photo in a loop; every answer's version, or the error, in order."""

    def __init__(self, base_url: str, photo: Path) -> None:
        self.base_url, self.photo = base_url, photo
        self.answers: dict[str, list[str]] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, name: str, version: str | None = None) -> None:
        self.answers[name] = []
        thread = threading.Thread(target=self._run, args=(name, version), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self, name: str, version: str | None) -> None:
        with Client(self.base_url, timeout=60, retries=0) as client:
            while not self._stop.is_set():
                try:
                    answer = client.predict(self.photo, version=version)
                    self.answers[name].append(str(answer.version))
                except CatdogError as exc:
                    self.errors.append(f"{name}: {exc}")

    def latest(self, name: str) -> str | None:
        answers = self.answers[name]
        return answers[-1] if answers else None

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def runs(answers: list[str]) -> list[str]:
    """[1, 1, 2, 2, 1] -> [1, 2, 1]: the versions in the order they answered."""
    return [version for index, version in enumerate(answers) if index == 0 or answers[index - 1] != version]


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    model_folder = tmp_path / "models" / "catdog"
    model_folder.mkdir(parents=True)
    drop_in(model_folder, 1, DEFAULT_MODEL_DIR)
    # The two latest versions are loaded; version 1 answers unpinned requests.
    set_config(model_folder, {"version_policy": {"latest": {"num_versions": 2}}, "default_version": 1})
    return model_folder


@pytest.fixture
def server(repository: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "CATDOG_HOST": "127.0.0.1",
        "CATDOG_PORT": str(port),
        "CATDOG_MODEL_REPOSITORY": str(repository.parent),
        "CATDOG_REPOSITORY_POLL_SECONDS": "0.5",
        "CATDOG_CONTROL_TOKEN": TOKEN,
        "CATDOG_MAX_LOADED_VERSIONS": "3",  # 1 (the default), 2 and 3 (the latest two)
        "CATDOG_LOG_LEVEL": "INFO",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--no-auto-train"],
            cwd=REPO_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base_url, timeout=180)
            yield base_url, log
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def index(base_url: str) -> dict[str, tuple[str, str]]:
    response = httpx.get(f"{base_url}/v2/repository/index", headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return {entry["version"]: (entry["state"], entry["reason"]) for entry in response.json()}


def loaded(base_url: str) -> list[str]:
    return [version for version, (state, _) in index(base_url).items() if state == "READY"]


def test_versions_are_dropped_in_promoted_and_rolled_back_without_losing_a_request(
    server: tuple[str, Path], repository: Path
) -> None:
    base_url, log = server
    photo, _ = real_photos(per_class=1)[0]
    traffic = Traffic(base_url, photo)
    for name in ("unpinned-a", "unpinned-b"):
        traffic.start(name)
    try:
        wait_for(lambda: len(traffic.answers["unpinned-a"]) >= 5, "traffic to flow")

        # Retrained, dropped in: loaded and checked beside version 1, but not the default yet.
        drop_in(repository, 2, DEFAULT_MODEL_DIR)
        wait_for(lambda: index(base_url).get("2", ("",))[0] == "READY", "version 2 to load")
        traffic.start("pinned-2", "2")  # verify it with pinned requests before promoting it
        wait_for(lambda: len(traffic.answers["pinned-2"]) >= 5, "answers from version 2")
        assert traffic.latest("unpinned-a") == "1"

        # A broken version is refused; nothing else changes.
        drop_in(repository, 3, DEFAULT_MODEL_DIR, break_it=True)
        wait_for(lambda: index(base_url).get("3", ("",))[0] == "UNAVAILABLE", "version 3 to be refused")

        # Promote, one file change: 2 becomes the default and 1 is unloaded with requests in flight.
        set_config(repository, {"version_policy": {"specific": {"versions": [2]}}})
        wait_for(lambda: traffic.latest("unpinned-a") == "2" == traffic.latest("unpinned-b"), "promotion")
        wait_for(lambda: "1" not in loaded(base_url), "version 1 to be unloaded")
        mark = len(traffic.answers["unpinned-a"])
        wait_for(lambda: len(traffic.answers["unpinned-a"]) >= mark + 5, "traffic on 2")

        # Roll back, one file change: 1 is loaded again and made the default.
        set_config(repository, {"version_policy": {"specific": {"versions": [1, 2]}}, "default_version": 1})
        wait_for(lambda: traffic.latest("unpinned-a") == "1" == traffic.latest("unpinned-b"), "rollback")
        mark = len(traffic.answers["unpinned-a"])
        wait_for(lambda: len(traffic.answers["unpinned-a"]) >= mark + 5, "traffic on 1")
    finally:
        traffic.stop()

    assert traffic.errors == []
    for name in ("unpinned-a", "unpinned-b"):
        assert runs(traffic.answers[name]) == ["1", "2", "1"], name
    assert set(traffic.answers["pinned-2"]) == {"2"}
    total = sum(len(answers) for answers in traffic.answers.values())
    assert total >= 40, total

    states = index(base_url)
    assert (states["1"][0], states["2"][0]) == ("READY", "READY")
    assert states["3"][0] == "UNAVAILABLE" and states["3"][1].startswith("refused: ")
    described = httpx.get(f"{base_url}/metadata", timeout=30).json()["repository"]
    memory = {v["version"]: v["memory_bytes"] for v in described["versions"]}
    assert memory["1"] is not None and memory["2"] is not None and memory["3"] is None

    # The control plane is closed without the token, and the token is in no log line.
    assert httpx.get(f"{base_url}/v2/repository/index", timeout=30).status_code == 401
    text = log.read_text(errors="replace")
    assert '"model version refused"' in text or "model version refused" in text
    assert TOKEN not in text
