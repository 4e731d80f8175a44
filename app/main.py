"""The FastAPI application factory. Run it with `python -m app serve` (see app/__main__.py)."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from app import fronts, openapi, web
from app.admission import AdmissionController, AdmissionMiddleware
from app.errors import install_error_handlers
from app.metrics import ServiceMetrics
from app.middleware import BodySizeLimitMiddleware, HeadAsGetMiddleware, RequestContextMiddleware
from app.model_versions import ModelSource, ModelVersions
from app.service import ServiceState
from app.settings import Settings, get_settings
from catdog.runtimes import log_tensorflow_device, runtime_thread_count
from catdog.saved_model import ExportedModel, load_exported_model

logger = logging.getLogger("catdog")


def load_model(settings: Settings, model_dir: Path | None = None) -> ExportedModel:
    """Load and validate one export (settings.model_dir unless given), with CATDOG_PET_THRESHOLD applied;
    `catdog.saved_model.ModelLoadError` says what is wrong."""
    exported = load_exported_model(model_dir or settings.model_dir, settings.runtime, settings.pet_threshold)
    logger.info(
        "model loaded",
        extra={
            "model_dir": str(exported.model_dir),
            "version": exported.metadata.version,
            "outputs": exported.metadata.outputs,
            "seconds": round(exported.load_seconds, 3),
            "runtime": exported.runner.runtime,
            "precision": exported.runner.precision,
            "runtime_setting": settings.runtime,
            "runtime_reason": exported.runtime_reason,
        },
    )
    if exported.runner.runtime == "tensorflow":
        log_tensorflow_device()
    if settings.runtime == "auto" and exported.runner.runtime == "tensorflow" and exported.metadata.derived:
        # Derived models exist but none could be used: say so louder than the info line above.
        logger.warning(
            "CATDOG_RUNTIME=auto fell back to TensorFlow", extra={"runtime_reason": exported.runtime_reason}
        )
    return exported


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.service
    settings = state.settings
    # Load and warm up before the server accepts a single connection: /readyz is honest from the start.
    versions = ModelVersions(
        settings,
        state.metrics,
        ModelSource.from_settings(settings),
        functools.partial(load_model, settings),
        state.preloaded,
    )
    await versions.start()
    versions.start_polling()
    default = versions.default
    assert default is not None  # start() raises otherwise
    model = default.model
    if settings.pet_threshold is not None and not model.metadata.has_pet_score:
        logger.warning(
            "CATDOG_PET_THRESHOLD is ignored: this model has no pet_score output",
            extra={"pet_threshold": settings.pet_threshold, "model_version": model.metadata.version},
        )
    state.decoder.start()
    threads = runtime_thread_count()
    state.versions = versions
    logger.info(
        "ready",
        extra={
            "url": listening_url(settings.host, settings.port),
            "version": default.number,
            "loaded_versions": versions.loaded_numbers(),
            "model_version": model.metadata.version,
            "runtime": model.runtime_name,
            "pet_threshold": model.pet_threshold,
            "pet_threshold_source": model.pet_threshold_source,
            "max_batch_size": settings.max_batch_size,
            "max_wait_ms": settings.max_wait_ms,
            "runtime_threads": threads.count,
            "runtime_threads_source": threads.source,
            "decode_threads": state.decoder.threads,
        },
    )
    try:
        yield
    finally:
        state.versions = None
        await versions.close()
        state.decoder.close()
        logger.info("stopped")


def listening_url(host: str, port: int) -> str:
    """The address the service listens on, as a URL (an IPv6 host in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def create_app(settings: Settings | None = None, model: ExportedModel | None = None) -> FastAPI:
    """`model`: an export already loaded from settings.model_dir (`load_model`, so with the configured
    pet threshold); else the lifespan loads it."""
    settings = settings or get_settings()
    metrics = ServiceMetrics()
    app = FastAPI(
        title=openapi.TITLE,
        version=openapi.VERSION,
        summary=openapi.SUMMARY,
        description=openapi.DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # replaced by install_docs: same page, assets served locally
        redoc_url=None,
    )
    app.state.service = ServiceState(settings=settings, metrics=metrics, preloaded=model)
    install_error_handlers(app)
    for front in fronts.FRONTS:
        for router in front.routers:
            app.include_router(router)
    app.mount(web.ASSETS_URL, web.assets(), name="web")
    openapi.install_docs(app)
    openapi.install_schema(app, lambda path: fronts.front_of(path).sends_validation_errors)
    # Added last = runs first. Outermost, every response gets a request id and an access log line;
    # then every request is counted and timed, a 413 from the size limit included.
    # Then admission control and the body read deadline for POSTs (app/admission.py); innermost,
    # HEAD answered as GET.
    app.add_middleware(HeadAsGetMiddleware)
    app.state.admission = AdmissionController(settings.max_in_flight, metrics.registry)
    app.add_middleware(
        AdmissionMiddleware,
        controller=app.state.admission,
        body_timeout_s=settings.body_timeout_seconds,
        retry_after_s=settings.retry_after_seconds,
    )
    app.add_middleware(BodySizeLimitMiddleware, limit_of=functools.partial(fronts.body_limit, settings))
    metrics.instrument(app)
    app.add_middleware(RequestContextMiddleware)
    return app
