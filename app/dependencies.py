"""What routes get from the app: the loaded model and the batcher, created once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from app.batching import DynamicBatcher
from app.errors import APIError
from app.metrics import ServiceMetrics
from app.model import Classifier
from app.settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    metrics: ServiceMetrics
    classifier: Classifier | None = None
    batcher: DynamicBatcher | None = None

    @property
    def ready(self) -> bool:
        return self.classifier is not None and self.batcher is not None and self.batcher.running


@dataclass(frozen=True)
class Service:
    """A ready service, as a route sees it."""

    settings: Settings
    classifier: Classifier
    batcher: DynamicBatcher


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def get_service(request: Request) -> Service:
    state = get_state(request)
    if not state.ready or state.classifier is None or state.batcher is None:
        raise APIError(
            503,
            "not_ready",
            "the model is not loaded yet or the service is shutting down",
            headers={"Retry-After": str(state.settings.retry_after_seconds)},
        )
    return Service(state.settings, state.classifier, state.batcher)
