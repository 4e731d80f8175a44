"""What routes get from the app: the loaded model and the batcher, created once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from app.batching import DynamicBatcher
from app.errors import APIError
from app.metrics import ServiceMetrics
from app.model import ImageScores, ServedModel
from app.settings import Settings
from catdog.saved_model import ExportedModel


@dataclass
class ServiceState:
    settings: Settings
    metrics: ServiceMetrics
    # Loaded before the app was built (python -m app serve does, to fail before binding a port);
    # when None the lifespan loads settings.model_dir itself.
    preloaded: ExportedModel | None = None
    model: ServedModel | None = None
    batcher: DynamicBatcher[ImageScores] | None = None

    @property
    def ready(self) -> bool:
        return self.model is not None and self.batcher is not None and self.batcher.running


@dataclass(frozen=True)
class Service:
    """A ready service, as a route sees it."""

    settings: Settings
    model: ServedModel
    batcher: DynamicBatcher[ImageScores]


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def get_service(request: Request) -> Service:
    state = get_state(request)
    if not state.ready or state.model is None or state.batcher is None:
        raise APIError(
            503,
            "not_ready",
            "the model is not loaded yet or the service is shutting down",
            headers={"Retry-After": str(state.settings.retry_after_seconds)},
        )
    return Service(state.settings, state.model, state.batcher)
