"""Prometheus metrics, in a registry per app so several apps (tests) never share counters.

HTTP requests are measured by prometheus-fastapi-instrumentator's middleware (route template,
status, duration), which reports each request to `ServiceMetrics.request_done`. Its ready-made
metrics are not used: they label the route `handler` (hard-coded), and the README and dashboards
use `route` (`catdog_http_requests_total{method, route, status}`). The batcher reports through
`app.batching.BatcherMetrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass
class ServiceMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "catdog_http_requests_total",
            "HTTP requests by method, route template and status code.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "catdog_http_request_duration_seconds",
            "Wall time from request arrival to response, by route template.",
            ("route",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "catdog_queue_wait_seconds",
            "Time an image waits in the batching queue before its model call starts.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_latency = Histogram(
            "catdog_inference_duration_seconds",
            "Duration of one batched model call.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "catdog_batch_size",
            "Images per model call.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "catdog_queue_depth", "Images waiting for a model call.", registry=self.registry
        )
        self.rejected = Counter(
            "catdog_queue_rejected_total",
            "Images refused because the queue was full.",
            registry=self.registry,
        )

        # The model repository (app/model_versions.py).
        self.version_state = Gauge(
            "catdog_model_version_state",
            "1 for each model version in its current state (LOADING, AVAILABLE, UNLOADING, UNAVAILABLE).",
            ("version", "state"),
            registry=self.registry,
        )
        self.default_version = Gauge(
            "catdog_model_default_version",
            "The model version answering requests that name none (0: none ready).",
            registry=self.registry,
        )
        self.version_memory = Gauge(
            "catdog_model_version_memory_bytes",
            "Resident memory the process grew by while loading and warming up each loaded version.",
            ("version",),
            registry=self.registry,
        )
        self.version_events = Counter(
            "catdog_model_version_events_total",
            "Model versions loaded, refused (failed to load or check) and unloaded.",
            ("event",),
            registry=self.registry,
        )

    def instrument(self, app: FastAPI) -> None:
        """Count and time every HTTP request to `app` (adds the instrumentator's middleware)."""
        instrumentator = Instrumentator(should_group_status_codes=False, registry=self.registry)
        instrumentator.add(self.request_done).instrument(app)

    def request_done(self, info: Info) -> None:
        # The instrumentator names requests that match no route "none"; this service says "unmatched".
        route = "unmatched" if info.modified_handler == "none" else info.modified_handler
        self.requests.labels(info.method, route, info.modified_status).inc()
        self.request_latency.labels(route).observe(info.modified_duration)

    # The batcher's reports (app.batching.BatcherMetrics).

    def images_rejected(self, count: int) -> None:
        self.rejected.inc(count)

    def queue_depth_changed(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def batch_done(self, batch_size: int, inference_seconds: float, queue_seconds: Sequence[float]) -> None:
        self.inference_latency.observe(inference_seconds)
        self.batch_size.observe(batch_size)
        for waited in queue_seconds:
            self.queue_wait.observe(waited)
