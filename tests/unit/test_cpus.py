"""Thread counts from the container's CPU quota (catdog/cpus.py), against fake cgroup trees: v2
`cpu.max`, v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`, no quota, fractional quotas, missing and
malformed files; the runtime override and the GPU install's log line (/readyz showing the count:
tests/service/test_cpus_readyz.py)."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from catdog import cpus, runtimes
from catdog.cpus import CpuCount, usable_cpus

NODE = CpuCount(64, "sched_getaffinity")  # what a pod on a 64-core node sees without the quota


def v2_tree(root: Path, cpu_max: dict[str, str], own: str = "/") -> Path:
    """A cgroup v2 mount at root with cpu.max per relative directory; returns /proc/self/cgroup."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for directory, value in cpu_max.items():
        (root / directory).mkdir(parents=True, exist_ok=True)
        (root / directory / "cpu.max").write_text(value + "\n")
    proc = root.parent / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return proc


def v1_tree(
    root: Path, quota: str, period: str = "100000", own: str = "/", mount: str = "cpu,cpuacct"
) -> Path:
    directory = root / mount / own.lstrip("/")
    directory.mkdir(parents=True)
    (directory / "cpu.cfs_quota_us").write_text(quota + "\n")
    (directory / "cpu.cfs_period_us").write_text(period + "\n")
    proc = root.parent / "proc-self-cgroup"
    proc.write_text(f"12:memory:{own}\n4:cpu,cpuacct:{own}\n1:name=systemd:{own}\n0::/\n")
    return proc


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("200000 100000", 2),
        ("150000 100000", 2),  # 1.5 CPUs round up
        ("50000 100000", 1),  # half a CPU: at least one thread
        ("100001 100000", 2),
        ("400000 50000", 8),  # the period need not be 100 ms
    ],
)
def test_v2_cpu_max(tmp_path: Path, cpu_max: str, expected: int) -> None:
    root = tmp_path / "cgroup"
    proc = v2_tree(root, {".": cpu_max})
    assert usable_cpus(root, proc, NODE) == CpuCount(
        expected, f"cgroup v2 cpu.max {cpu_max.replace(' ', '/')}"
    )


def test_v2_max_means_no_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = v2_tree(root, {".": "max 100000"})
    assert usable_cpus(root, proc, NODE) == NODE


def test_v2_walks_up_to_the_tightest_visible_ancestor(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    own = "/kubepods.slice/pod1/ctr"
    proc = v2_tree(
        root,
        {"kubepods.slice": "max 100000", "kubepods.slice/pod1": "300000 100000", own[1:]: "max 100000"},
        own=own,
    )
    assert usable_cpus(root, proc, NODE) == CpuCount(3, "cgroup v2 cpu.max 300000/100000")


def test_v2_host_path_not_visible_reads_the_mount_root(tmp_path: Path) -> None:
    # No cgroup namespace: /proc/self/cgroup names the host's path, the mount is the container's cgroup.
    root = tmp_path / "cgroup"
    proc = v2_tree(root, {".": "200000 100000"}, own="/kubepods.slice/pod1/ctr")
    assert usable_cpus(root, proc, NODE).count == 2


def test_v1_quota_and_period(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = v1_tree(root, "150000")
    expected = CpuCount(2, "cgroup v1 cpu.cfs_quota_us/cpu.cfs_period_us 150000/100000")
    assert usable_cpus(root, proc, NODE) == expected


def test_v1_minus_one_means_no_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = v1_tree(root, "-1")
    assert usable_cpus(root, proc, NODE) == NODE


def test_v1_cpu_only_mount_and_nested_path(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = v1_tree(root, "400000", own="/kubepods/burstable/pod1/ctr", mount="cpu")
    assert usable_cpus(root, proc, NODE).count == 4


@pytest.mark.parametrize(
    "make",
    [
        lambda root: None,  # no cgroup files at all (not Linux, or /sys/fs/cgroup not mounted)
        lambda root: v2_tree(root, {".": "garbage"}),
        lambda root: v2_tree(root, {".": "0 100000"}),
        lambda root: v2_tree(root, {}),  # v2 without cpu.max (the root cgroup has none)
        lambda root: v1_tree(root, "fast"),
        lambda root: v1_tree(root, "100000", period="0"),
    ],
    ids=["missing", "v2-garbage", "v2-zero", "v2-no-cpu-max", "v1-garbage", "v1-zero-period"],
)
def test_missing_or_malformed_files_fall_back_to_affinity(
    tmp_path: Path, make: Callable[[Path], Path | None]
) -> None:
    root = tmp_path / "cgroup"
    proc = make(root) or tmp_path / "no-such-file"
    assert usable_cpus(root, proc, NODE) == NODE


def test_affinity_below_the_quota_wins(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = v2_tree(root, {".": "800000 100000"})
    pinned = CpuCount(2, "sched_getaffinity")
    assert usable_cpus(root, proc, pinned) == CpuCount(
        2, "sched_getaffinity; cgroup v2 cpu.max 800000/100000 allows 8"
    )


def test_this_machine_gets_a_sane_count() -> None:
    assert usable_cpus().count >= 1


def test_runtime_threads_take_the_override_else_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "process_cpus", lambda: CpuCount(2, "cgroup v2 cpu.max 200000/100000"))
    monkeypatch.delenv(runtimes.THREADS_ENV, raising=False)
    assert runtimes.runtime_thread_count() == CpuCount(2, "cgroup v2 cpu.max 200000/100000")
    assert runtimes.runtime_threads() == 2
    monkeypatch.setenv(runtimes.THREADS_ENV, "3")
    assert runtimes.runtime_thread_count() == CpuCount(3, "CATDOG_RUNTIME_THREADS")


def test_process_cpus_is_computed_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def fake() -> CpuCount:
        calls.append(1)
        return CpuCount(2, "cgroup v1 cpu.cfs_quota_us/cpu.cfs_period_us 200000/100000")

    cpus.process_cpus.cache_clear()
    monkeypatch.setattr(cpus, "usable_cpus", fake)
    try:
        with caplog.at_level(logging.INFO, logger="catdog.cpus"):
            assert cpus.process_cpus() == cpus.process_cpus()
    finally:
        cpus.process_cpus.cache_clear()
    assert len(calls) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "CPUs for threads: 2 (cgroup v1 cpu.cfs_quota_us/cpu.cfs_period_us 200000/100000)"
    ]


def fake_tensorflow(gpus: list[str]) -> types.ModuleType:
    tf = types.ModuleType("tensorflow")
    devices = [types.SimpleNamespace(name=name) for name in gpus]
    tf.config = types.SimpleNamespace(list_physical_devices=lambda kind: devices if kind == "GPU" else [])
    return tf


@pytest.mark.parametrize(
    ("wheels", "gpus", "expected"),
    [
        (True, [], ["no GPU found: TensorFlow runs on the CPU"]),
        (True, ["/physical_device:GPU:0"], ["TensorFlow runs on the GPU"]),
        (False, [], []),  # the CPU image: TensorFlow on the CPU is expected, nothing to say
    ],
)
def test_gpu_install_says_which_device_tensorflow_uses(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    wheels: bool,
    gpus: list[str],
    expected: list[str],
) -> None:
    monkeypatch.setattr(runtimes, "cuda_wheels_installed", lambda: wheels)
    monkeypatch.setitem(sys.modules, "tensorflow", fake_tensorflow(gpus))
    with caplog.at_level(logging.INFO, logger="catdog.runtimes"):
        runtimes.log_tensorflow_device()
    assert [r.getMessage() for r in caplog.records] == expected


def test_cuda_wheels_installed_answers() -> None:
    assert isinstance(runtimes.cuda_wheels_installed(), bool)
