"""The compose scale-out profile: 2 CPU replicas behind nginx, one killed mid-traffic, no request lost.

Runs what docs/deployment.md says: scripts/setup-compose.sh (engine, compose, base image), then
`$COMPOSE --profile scale up -d --build --scale catdog-replica=2 catdog-lb`. Real photos go through
the load balancer on 127.0.0.1; nginx names the replica that answered in X-Catdog-Upstream (its
address, "ip:port", or "ip:port, ip:port" when it had to retry), which the test maps to containers.
Off unless CATDOG_DOCKER_TESTS=1 (CI sets it); builds the images when they are not cached.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import DATA_DIR, REPO_ROOT
from tests.servers import free_port

VALIDATION_DIR = DATA_DIR / "validation"
UP_TIMEOUT_S = int(os.environ.get("CATDOG_COMPOSE_UP_TIMEOUT", "1500"))

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        os.environ.get("CATDOG_DOCKER_TESTS") != "1",
        reason="compose scale-out test is off; enable with CATDOG_DOCKER_TESTS=1 "
        "(needs root or a running docker engine; builds the CPU and nginx images)",
    ),
]


def run(cmd: list[str], timeout: float = 300, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    assert out.returncode == 0, (
        f"{shlex.join(cmd)} exited {out.returncode}:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    )
    return out.stdout


class Stack:
    def __init__(self, compose: list[str], project: str, port: int) -> None:
        self.compose = [*compose, "-p", project, "--profile", "scale"]
        self.env = {**os.environ, "CATDOG_LB_PUBLISH_PORT": f"127.0.0.1:{port}"}
        self.url = f"http://127.0.0.1:{port}"
        self.project = project

    def __call__(self, *args: str, timeout: float = 300) -> str:
        return run([*self.compose, *args], timeout=timeout, env=self.env)

    def replicas(self) -> dict[str, str]:
        """address -> container name of the running catdog-replica containers."""
        ids = self("ps", "-q", "catdog-replica").split()
        found = {}
        for cid in ids:
            info = json.loads(run(["docker", "inspect", cid]))[0]
            if not info["State"]["Running"]:
                continue
            for net in info["NetworkSettings"]["Networks"].values():
                found[net["IPAddress"]] = info["Name"].lstrip("/")
        return found


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    compose = run(["bash", "scripts/setup-compose.sh"], timeout=900).strip().splitlines()[-1]
    assert compose in ("docker compose", "docker-compose"), compose
    s = Stack(compose.split(), f"catdogscale{os.getpid()}", free_port())
    try:
        # --build: the images from docs/deployment.md's command (cached layers when CI built them already).
        s("up", "-d", "--build", "--scale", "catdog-replica=2", "catdog-lb", timeout=UP_TIMEOUT_S)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{s.url}/readyz", timeout=3).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the load balancer never answered /readyz with 200"
            time.sleep(1)
        yield s
    finally:
        subprocess.run(
            [*s.compose, "down", "-v", "--remove-orphans", "-t", "5"],
            cwd=REPO_ROOT,
            env=s.env,
            capture_output=True,
            timeout=180,
            check=False,
        )


def photos() -> list[tuple[str, bytes]]:
    pairs = []
    for label in ("cat", "dog"):
        paths = sorted((VALIDATION_DIR / f"{label}s").glob("*.jpg"))[:4]
        assert paths, f"no validation photos under {VALIDATION_DIR}"
        pairs += [(label, p.read_bytes()) for p in paths]
    return pairs


def predict(client: httpx.Client, photo: bytes) -> tuple[int, str, str]:
    """(status, label or error text, X-Catdog-Upstream)."""
    try:
        r = client.post("/predict", files={"file": ("photo.jpg", photo, "image/jpeg")})
    except httpx.HTTPError as exc:
        return 0, f"{type(exc).__name__}: {exc}", ""
    label = r.json().get("label", "") if r.status_code == 200 else r.text[:200]
    return r.status_code, label, r.headers.get("x-catdog-upstream", "")


def test_two_replicas_answer_and_losing_one_loses_no_request(stack: Stack) -> None:
    replicas = stack.replicas()
    assert len(replicas) == 2, replicas
    # Both run the image read-only (as deploy/kubernetes does), with a tmpfs /tmp.
    for name in replicas.values():
        assert json.loads(run(["docker", "inspect", name]))[0]["HostConfig"]["ReadonlyRootfs"] is True

    samples = photos()
    with httpx.Client(base_url=stack.url, timeout=60) as client:
        seen: dict[str, int] = {}
        for label, photo in samples * 2:
            status, got, upstream = predict(client, photo)
            assert status == 200, (status, got)
            assert got == label
            seen[upstream] = seen.get(upstream, 0) + 1
    # Round robin: each replica answered, named by its own address.
    assert {u.split(":")[0] for u in seen} == set(replicas), (seen, replicas)
    print(f"before the kill: answers per replica {seen}")

    # Traffic from 3 threads; one replica is killed (SIGKILL, no goodbye) while it flows.
    victim_ip, victim = sorted(replicas.items())[0]
    survivor_ip = next(ip for ip in replicas if ip != victim_ip)
    results: list[tuple[float, int, str, str]] = []
    lock = threading.Lock()
    killed_at: list[float] = []
    stop_at = time.monotonic() + 90

    def worker(offset: int) -> None:
        with httpx.Client(base_url=stack.url, timeout=60) as client:
            i = offset
            while time.monotonic() < stop_at:
                label, photo = samples[i % len(samples)]
                started = time.monotonic()  # "after the kill" = sent after `docker kill` returned
                status, got, upstream = predict(client, photo)
                with lock:
                    results.append((started, status, got if status != 200 else label, upstream))
                    if killed_at and sum(1 for t, *_ in results if t > killed_at[0]) >= 30:
                        return
                i += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    while len(results) < 6 and time.monotonic() < stop_at:
        time.sleep(0.05)
    run(["docker", "kill", victim])
    with lock:
        killed_at.append(time.monotonic())
    for t in threads:
        t.join(timeout=120)

    failures = [r for r in results if r[1] != 200]
    after = [r for r in results if r[0] > killed_at[0]]
    print(
        f"{len(results)} requests, {len(after)} after killing {victim} ({victim_ip}); "
        f"upstreams after: {sorted({r[3] for r in after})}"
    )
    assert not failures, f"requests failed: {failures[:5]}"
    assert len(after) >= 30, "too few requests after the kill to show anything"
    # nginx noticed: a request that hit the dead replica was retried on the survivor (its header names
    # both), and the passive health check kept the dead one out (fail_timeout 15 s): most answers after
    # the kill come from the survivor without a detour.
    alone = f"{survivor_ip}:8000"
    retried = f"{victim_ip}:8000, {survivor_ip}:8000"
    assert {r[3] for r in after} <= {alone, retried}, sorted({r[3] for r in after})
    detours = sum(1 for r in after if r[3] == retried)
    assert detours <= len(after) // 3, f"{detours} of {len(after)} requests still tried the dead replica"
    assert stack.replicas() == {survivor_ip: replicas[survivor_ip]}
