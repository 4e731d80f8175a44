"""How many CPUs this process can keep busy: the container's CPU quota, else its CPU affinity.

`os.sched_getaffinity` counts every CPU the process may be scheduled on: in a pod with `cpu: "2"` on
a 64-core node it says 64. Kubernetes and Docker enforce a CPU limit as a CFS quota per period instead:
cgroup v2 `cpu.max` ("200000 100000" = 2 CPUs, "max 100000" = no quota), cgroup v1
`cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota -1 = none). Sizing thread pools by affinity there
means 64 threads sharing 2 CPUs' worth of time: throttling and context switches, no speed.

A fractional quota rounds up (1.5 CPUs -> 2 threads), as Go's runtime and the JVM do: rounding down
would leave up to a whole CPU of the pod's quota unused for a CPU-bound model call, while rounding up
costs at most a short throttle at the end of a period. CATDOG_RUNTIME_THREADS (catdog.runtimes)
overrides the count for the model runtimes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath

DEFAULT_CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
logger = logging.getLogger("catdog.cpus")


@dataclass(frozen=True)
class CpuCount:
    """A CPU count and where it came from, e.g. (2, "cgroup v2 cpu.max 200000/100000")."""

    count: int
    source: str


@dataclass(frozen=True)
class CpuQuota:
    """A CFS bandwidth limit: `quota` microseconds of CPU time per `period`."""

    quota: int
    period: int
    what: str  # the file(s) it was read from, for the source string

    @property
    def cpus(self) -> int:
        return max(1, -(-self.quota // self.period))  # ceil, in integers

    def describe(self) -> str:
        return f"{self.what} {self.quota}/{self.period}"


def affinity_cpus() -> CpuCount:
    try:
        return CpuCount(max(1, len(os.sched_getaffinity(0))), "sched_getaffinity")
    except AttributeError:  # not Linux
        return CpuCount(max(1, os.cpu_count() or 1), "os.cpu_count")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _levels(base: Path, cgroup_path: str) -> list[Path]:
    """base/<cgroup_path>, its parents, ..., base: a parent's quota binds its children too."""
    relative = PurePosixPath("/", cgroup_path).relative_to("/")
    levels = [base / relative]
    while relative.parts:
        relative = relative.parent
        levels.append(base / relative)
    return levels


def _own_cgroup(proc_cgroup: Path, v2: bool) -> str:
    """The process's cgroup path ("0::/path" in v2; "N:cpu,cpuacct:/path" in v1), "/" if unknown.
    In a container with its own cgroup namespace it is "/": the mount is the container's cgroup."""
    for line in (_read(proc_cgroup) or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if v2 and hierarchy == "0" and controllers == "":
            return path or "/"
        if not v2 and "cpu" in controllers.split(","):
            return path or "/"
    return "/"


def _v2_quota(directory: Path) -> CpuQuota | None:
    fields = (_read(directory / "cpu.max") or "").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return CpuQuota(quota, period, "cgroup v2 cpu.max") if quota > 0 and period > 0 else None


def _v1_quota(directory: Path) -> CpuQuota | None:
    quota_text = _read(directory / "cpu.cfs_quota_us")
    period_text = _read(directory / "cpu.cfs_period_us")
    if quota_text is None or period_text is None:
        return None
    try:
        quota, period = int(quota_text), int(period_text)
    except ValueError:
        return None
    if quota <= 0 or period <= 0:  # -1: no quota
        return None
    return CpuQuota(quota, period, "cgroup v1 cpu.cfs_quota_us/cpu.cfs_period_us")


def cgroup_quota(
    cgroup_root: Path = DEFAULT_CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP
) -> CpuQuota | None:
    """The tightest CPU quota on this process's cgroup and its visible ancestors; None if none."""
    if (cgroup_root / "cgroup.controllers").exists():
        levels = _levels(cgroup_root, _own_cgroup(proc_cgroup, v2=True))
        quotas = [_v2_quota(level) for level in levels]
    else:
        # v1: the cpu controller is mounted as cpu,cpuacct (with a cpu symlink) or cpu alone.
        path = _own_cgroup(proc_cgroup, v2=False)
        bases = [cgroup_root / name for name in ("cpu,cpuacct", "cpu", "cpuacct,cpu")]
        base = next((b for b in bases if b.is_dir()), None)
        quotas = [_v1_quota(level) for level in _levels(base, path)] if base else []
    found = [q for q in quotas if q is not None]
    return min(found, key=lambda q: q.quota / q.period) if found else None


def usable_cpus(
    cgroup_root: Path = DEFAULT_CGROUP_ROOT,
    proc_cgroup: Path = PROC_SELF_CGROUP,
    affinity: CpuCount | None = None,
) -> CpuCount:
    """CPUs to size CPU-bound thread pools by: the cgroup quota, rounded up, where it is below the
    affinity count; else the affinity count. Missing or unreadable cgroup files mean no quota."""
    affinity = affinity or affinity_cpus()
    quota = cgroup_quota(cgroup_root, proc_cgroup)
    if quota is None:
        return affinity
    if quota.cpus < affinity.count:
        return CpuCount(quota.cpus, quota.describe())
    return CpuCount(affinity.count, f"{affinity.source}; {quota.describe()} allows {quota.cpus}")


@cache
def process_cpus() -> CpuCount:
    """`usable_cpus()` of this process, computed and logged once: every thread pool sizes by it."""
    cpus = usable_cpus()
    logger.info("CPUs for threads: %d (%s)", cpus.count, cpus.source, extra={"cpus": cpus.count})
    return cpus
