"""The loaded model versions: which serve, which one answers unpinned requests, and swapping them live.

A version goes LOADING -> AVAILABLE -> UNLOADING -> UNAVAILABLE, or LOADING -> UNAVAILABLE when it is
refused (its export does not load or breaks the contract in catdog/contract.py, its probe answers
moved, or its answers are not probabilities). Each loaded version has its own model and batcher; the
decode threads and budget are shared.

Swapping loses nothing:
- a new version is loaded, checked and warmed up while the old one serves; only then is it made the
  default, by one assignment, so every request sees either the old default or the new one;
- a request holds a lease on the version that took it (`acquire` to `release`) until its answer is
  made; a version leaves the routing table first and its batcher closes only when its leases are
  gone (or after CATDOG_SHUTDOWN_TIMEOUT_SECONDS);
- a refused version is logged and left alone until its files change (or an explicit load); the
  default keeps serving. The default is never unloaded for lack of a replacement, only by an
  explicit unload.

Memory: at most CATDOG_MAX_LOADED_VERSIONS are loaded at once. Versions leaving the policy are unloaded
before new ones load, except the default, which goes only after its replacement is ready, so a swap
holds two versions for as long as it takes. Each version's cost (resident memory the process grew by
while loading and warming it up) is in /metrics, /metadata and the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from app.batching import DynamicBatcher
from app.metrics import ServiceMetrics
from app.model import ImageScores, scores, warm_up
from app.repository_config import ServingConfig, ServingConfigError, parse_serving_config
from app.settings import Settings
from catdog.probe import probe_images
from catdog.repository import MODEL_NAME, SERVING_CONFIG_FILE, complete_versions, version_of
from catdog.saved_model import ExportedModel, ModelLoadError, model_exists

logger = logging.getLogger("catdog.versions")


class VersionState(StrEnum):
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"  # refused, unloaded, or not loaded (the reason says which)


class VersionNotFoundError(LookupError):
    """A request named a version or label that is not loaded."""


class NotReadyError(RuntimeError):
    """No version is loaded to answer an unpinned request."""


class VersionRefusedError(RuntimeError):
    """A version loaded but failed a check; the message says which."""


@dataclass(frozen=True)
class ModelSource:
    """Where versions come from: a repository's model folder (`<CATDOG_MODEL_REPOSITORY>/catdog`), whose
    integer-named folders are versions, or one export (CATDOG_MODEL_DIR), served as a repository of one."""

    folder: Path
    is_repository: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelSource:
        if settings.model_repository is not None:
            return cls(settings.model_repository / MODEL_NAME, True)
        return cls(settings.model_dir, False)

    def scan(self) -> dict[int, Path]:
        """The complete versions present, by number."""
        if self.is_repository:
            return complete_versions(self.folder)
        return {self.single_version: self.folder} if model_exists(self.folder) else {}

    @property
    def single_version(self) -> int:
        """One export's version number: its folder's name when that is a number (`.../catdog/3`), else 1."""
        return version_of(self.folder.name) or 1

    def config_bytes(self) -> bytes | None:
        """serving.json's content, None when there is none (or when serving one export)."""
        if not self.is_repository:
            return None
        try:
            return (self.folder / SERVING_CONFIG_FILE).read_bytes()
        except FileNotFoundError:
            return None


@dataclass(eq=False)
class LiveVersion:
    """A loaded version: its model, its batcher, and the requests holding it."""

    number: int
    path: Path
    model: ExportedModel  # with the pet-score threshold it is served with
    batcher: DynamicBatcher[ImageScores]
    memory_bytes: int | None
    leases: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()


@dataclass
class VersionStatus:
    number: int
    state: VersionState
    reason: str = ""
    memory_bytes: int | None = None
    model_version: str | None = None  # the export's own descriptive version (metadata.json)


# A version's folder -> its export, with the configured pet threshold resolved (app.main.load_model).
Loader = Callable[[Path], ExportedModel]


class ModelVersions:
    """The versions of the one model this service serves."""

    def __init__(
        self,
        settings: Settings,
        metrics: ServiceMetrics,
        source: ModelSource,
        loader: Loader,
        preloaded: ExportedModel | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._source = source
        self._loader = loader
        self._preloaded = preloaded
        self._live: dict[int, LiveVersion] = {}
        self._status: dict[int, VersionStatus] = {}
        self._refused: dict[int, str] = {}  # version -> fingerprint of the files that were refused
        self._default: LiveVersion | None = None
        self._config = ServingConfig()
        self._config_origin = "defaults"
        self._config_error: str | None = None
        self._config_file_seen: bytes | None = None
        self._unloaded_by_request = False
        self._last_problems: list[str] = []
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None

    # --- the request path: no awaits, nothing but dictionary lookups -------------------------------

    @property
    def default(self) -> LiveVersion | None:
        return self._default

    def resolve(self, requested: str | None = None) -> LiveVersion:
        """The version a request asked for (a number or a label), else the default.

        NotReadyError when nothing is loaded; VersionNotFoundError for a version or label not loaded.
        """
        if requested is None or requested == "":
            if self._default is None:
                raise NotReadyError("no model version is loaded")
            return self._default
        number = version_of(requested)
        if number is None:
            labelled = self._config.labels.get(requested)
            if labelled is None:
                raise VersionNotFoundError(f"no label '{requested}' (labels: {sorted(self._config.labels)})")
            number = labelled
        live = self._live.get(number)
        if live is None:
            raise VersionNotFoundError(f"version {number} is not loaded (loaded: {self.loaded_numbers()})")
        return live

    def acquire(self, requested: str | None = None) -> LiveVersion:
        """`resolve`, and hold the version until `release`: it is not unloaded while held."""
        live = self.resolve(requested)
        live.leases += 1
        live.idle.clear()
        return live

    @staticmethod
    def release(live: LiveVersion) -> None:
        live.leases -= 1
        if live.leases == 0:
            live.idle.set()

    def loaded_numbers(self) -> list[int]:
        return sorted(self._live)

    def available(self) -> list[LiveVersion]:
        return [self._live[number] for number in sorted(self._live)]

    def index(self) -> list[VersionStatus]:
        return [self._status[number] for number in sorted(self._status)]

    def labels_of(self, number: int) -> list[str]:
        return sorted(label for label, version in self._config.labels.items() if version == number)

    def describe(self) -> dict[str, Any]:
        """For /metadata: the repository, its configuration and every version seen."""
        return {
            "repository": self._source.is_repository,
            "default_version": None if self._default is None else str(self._default.number),
            "config_origin": self._config_origin,
            "config_error": self._config_error,
            "version_policy": self._config.version_policy.model_dump(exclude_none=True),
            "labels": {label: str(number) for label, number in sorted(self._config.labels.items())},
            "max_loaded_versions": self._settings.max_loaded_versions,
            "versions": [
                {
                    "version": str(status.number),
                    "state": status.state.value,
                    "reason": status.reason,
                    "memory_bytes": status.memory_bytes,
                    "model_version": status.model_version,
                    "labels": self.labels_of(status.number),
                }
                for status in self.index()
            ],
        }

    # --- loading, checking, swapping ----------------------------------------------------------------

    async def start(self) -> None:
        """The first reconcile; ModelLoadError, naming every refusal, when no version can serve."""
        problems = await self.reconcile()
        if self._default is None:
            found = self._source.folder
            detail = "; ".join(problems) or f"no model version found in {found}"
            raise ModelLoadError(f"no model version could be loaded: {detail}")

    def start_polling(self) -> None:
        interval = self._settings.repository_poll_seconds
        if self._source.is_repository and interval > 0 and self._poller is None:
            self._poller = asyncio.create_task(self._poll(interval), name="catdog-repository-poll")

    async def _poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self._unloaded_by_request:
                continue  # an unload call stands until a load call
            try:
                await self.reconcile()
            except Exception:  # a poll must never die: the next one may succeed
                logger.exception("repository poll failed", extra={"repository": str(self._source.folder)})

    async def reconcile(self, force: bool = False, config: ServingConfig | None = None) -> list[str]:
        """Bring the loaded versions in line with the repository and its serving.json (or `config`,
        from a load call: it stands until serving.json changes). `force` retries refused versions.
        Returns what could not be done, one line each (also logged)."""
        async with self._lock:
            if config is not None:
                self._config, self._config_origin, self._config_error = config, "load request", None
            else:
                self._read_config_file()
            if force:
                self._refused.clear()
                self._unloaded_by_request = False
            present = await asyncio.to_thread(self._source.scan)
            wanted = self._config.wanted(present)
            problems: list[str] = []
            # Memory first: versions leaving, except the default, which waits for its replacement.
            await self._unload_unwanted(wanted)
            for number in sorted(wanted - self._live.keys(), reverse=True):
                problem = await self._load_if_allowed(number, present[number])
                if problem:
                    problems.append(problem)
            self._choose_default(present, problems)
            await self._unload_unwanted(wanted)
            for number in list(self._status):
                if number not in present and number not in self._live:
                    del self._status[number]  # its folder is gone: forget it
            for label, number in sorted(self._config.labels.items()):
                if number not in self._live:
                    problems.append(f"label '{label}' names version {number}, which is not loaded")
            if self._config_error:
                problems.insert(0, self._config_error)
            self._publish_metrics()
            # Logged when they change, not at every poll.
            if problems != self._last_problems:
                for problem in problems:
                    logger.warning(problem, extra={"repository": str(self._source.folder)})
                self._last_problems = problems
            return problems

    async def unload_all(self) -> None:
        """Unload every version (an explicit unload call): not ready until the next load call."""
        async with self._lock:
            self._unloaded_by_request = True
            self._default = None
            for number in list(self._live):
                await self._unload(number, "unloaded by request")
            self._publish_metrics()

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        self._default = None
        for live in list(self._live.values()):
            await live.batcher.close()
        self._live.clear()

    def _read_config_file(self) -> None:
        """Apply serving.json when its content changed since it was last read (a load call's config
        stands until then); keep the configuration in force when the new one is invalid."""
        try:
            content = self._source.config_bytes()
        except OSError as exc:
            self._config_error = f"{SERVING_CONFIG_FILE}: {exc}"
            return
        if content == self._config_file_seen:
            return
        self._config_file_seen = content
        if content is None:
            self._config, self._config_origin, self._config_error = ServingConfig(), "defaults", None
            return
        try:
            self._config = parse_serving_config(content)
        except ServingConfigError as exc:
            self._config_error = f"{SERVING_CONFIG_FILE} ignored, the configuration in force stays: {exc}"
            logger.error(self._config_error, extra={"repository": str(self._source.folder)})
            return
        self._config_origin, self._config_error = SERVING_CONFIG_FILE, None
        logger.info(
            f"{SERVING_CONFIG_FILE} applied",
            extra={
                "config": self._config.model_dump(exclude_none=True),
                "repository": str(self._source.folder),
            },
        )

    async def _load_if_allowed(self, number: int, path: Path) -> str | None:
        fingerprint = await asyncio.to_thread(_fingerprint, path)
        if self._refused.get(number) == fingerprint:
            status = self._status.get(number)
            return f"version {number} stays refused until its files change: {status.reason if status else ''}"
        if len(self._live) >= self._settings.max_loaded_versions:
            reason = (
                f"not loaded: {len(self._live)} versions are loaded, CATDOG_MAX_LOADED_VERSIONS is "
                f"{self._settings.max_loaded_versions}"
            )
            self._set_status(VersionStatus(number, VersionState.UNAVAILABLE, reason))
            return f"version {number} {reason}"
        live = await self._load(number, path)
        if live is None:
            self._refused[number] = fingerprint
            return f"version {number} {self._status[number].reason}"
        self._refused.pop(number, None)
        self._live[number] = live
        return None

    async def _load(self, number: int, path: Path) -> LiveVersion | None:
        self._set_status(VersionStatus(number, VersionState.LOADING))
        logger.info("loading model version", extra={"version": number, "path": str(path)})
        started = time.perf_counter()
        before = _resident_bytes()
        try:
            model = await asyncio.to_thread(self._load_and_check, path)
        except (ModelLoadError, VersionRefusedError) as exc:
            self._refuse(number, " ".join(str(exc).split()))
            return None
        except Exception as exc:  # a corrupt export raises anything; it must not stop the service
            logger.exception("model version failed to load", extra={"version": number})
            self._refuse(number, f"{type(exc).__name__}: {' '.join(str(exc).split())}")
            return None
        settings = self._settings
        batcher = DynamicBatcher(
            functools.partial(scores, model),
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_queue_size=settings.max_queue_size,
            metrics=self._metrics,
        )
        await batcher.start()
        after = _resident_bytes()
        memory = None if before is None or after is None else max(0, after - before)
        live = LiveVersion(number, path, model, batcher, memory)
        self._set_status(
            VersionStatus(number, VersionState.AVAILABLE, "", memory, model.metadata.version),
        )
        self._metrics.version_events.labels("loaded").inc()
        logger.info(
            "model version loaded",
            extra={
                "version": number,
                "model_version": model.metadata.version,
                "runtime": model.runtime_name,
                "seconds": round(time.perf_counter() - started, 3),
                "memory_bytes": memory,
            },
        )
        return live

    def _load_and_check(self, path: Path) -> ExportedModel:
        """In a worker thread: load (metadata validated against the contract, class names included;
        probe answers checked where recorded), check that it answers probabilities, warm it up."""
        preloaded, self._preloaded = self._preloaded, None
        if preloaded is not None and preloaded.model_dir.resolve() == path.resolve():
            model = preloaded
        else:
            model = self._loader(path)
        check_answers(model)
        warm_up(model, (1, self._settings.max_batch_size))
        return model

    def _refuse(self, number: int, reason: str) -> None:
        # The reason is served (index, /metadata, TF Serving status): paths relative to the repository.
        for parent in {self._source.folder.parent, self._source.folder.resolve().parent}:
            reason = reason.replace(f"{parent}{os.sep}", "")
        self._set_status(VersionStatus(number, VersionState.UNAVAILABLE, f"refused: {reason}"))
        self._metrics.version_events.labels("refused").inc()
        logger.error("model version refused", extra={"version": number, "reason": reason})

    def _choose_default(self, present: dict[int, Path], problems: list[str]) -> None:
        target = self._config.default_target(present)
        chosen = self._live.get(target) if target is not None else None
        if chosen is None:
            if target is not None:
                problems.append(f"version {target} should be the default but is not loaded; no change")
            if self._default is not None and self._default.number in self._live:
                chosen = self._default  # keep serving what serves
            elif self._live:
                chosen = self._live[max(self._live)]
        if chosen is not self._default:
            previous = None if self._default is None else self._default.number
            self._default = chosen
            logger.info(
                "default model version changed",
                extra={"from_version": previous, "version": None if chosen is None else chosen.number},
            )

    async def _unload_unwanted(self, wanted: set[int]) -> None:
        for number in list(self._live):
            if number not in wanted and self._live[number] is not self._default:
                await self._unload(number, "not selected by the version policy")

    async def _unload(self, number: int, reason: str) -> None:
        live = self._live.pop(number)  # out of the routing table: no new request takes it
        status = self._status[number]
        status.state = VersionState.UNLOADING
        self._publish_metrics()
        if live.leases:
            try:
                await asyncio.wait_for(live.idle.wait(), self._settings.shutdown_timeout_seconds)
            except TimeoutError:
                logger.warning(
                    "requests still hold a version being unloaded; closing it",
                    extra={"version": number, "requests": live.leases},
                )
        await live.batcher.close()
        self._status[number] = VersionStatus(
            number, VersionState.UNAVAILABLE, reason, None, status.model_version
        )
        self._metrics.version_events.labels("unloaded").inc()
        logger.info("model version unloaded", extra={"version": number, "reason": reason})

    def _set_status(self, status: VersionStatus) -> None:
        self._status[status.number] = status
        self._publish_metrics()

    def _publish_metrics(self) -> None:
        self._metrics.version_state.clear()
        self._metrics.version_memory.clear()
        for status in self._status.values():
            self._metrics.version_state.labels(str(status.number), status.state.value).set(1)
        for live in self._live.values():
            if live.memory_bytes is not None:
                self._metrics.version_memory.labels(str(live.number)).set(live.memory_bytes)
        self._metrics.default_version.set(0 if self._default is None else self._default.number)


def check_answers(model: ExportedModel) -> None:
    """The version answers fixed images with probabilities: finite, summing to 1, pet scores in [0, 1].

    Exports record their answers on these images and loading compares them (catdog/probe.py); this
    also covers exports without that record and outputs that moved together."""
    images = probe_images(model.metadata.image_size)
    answers = scores(model, images)
    if len(answers) != len(images):
        raise VersionRefusedError(f"it answered {len(answers)} results for {len(images)} images")
    classes = len(model.metadata.class_names)
    for answer in answers:
        probabilities = np.asarray(answer.probabilities, dtype=np.float64)
        if probabilities.shape != (classes,) or not np.all(np.isfinite(probabilities)):
            raise VersionRefusedError(f"its probabilities are not {classes} finite numbers")
        if abs(float(probabilities.sum()) - 1.0) > 1e-3:
            raise VersionRefusedError(f"its probabilities sum to {probabilities.sum():.6f}, not 1")
        if answer.pet_score is not None and not 0.0 <= answer.pet_score <= 1.0:
            raise VersionRefusedError(f"its pet_score {answer.pet_score} is outside [0, 1]")


def _fingerprint(folder: Path) -> str:
    """Names, sizes and modification times of every file in a version: it changes when any file does."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            digest.update(f"{os.path.relpath(path, folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _resident_bytes() -> int | None:
    """This process's resident memory (Linux), None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
