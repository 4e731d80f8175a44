"""Running the app under uvicorn: the listening socket, connection cap, graceful shutdown, malloc.

`bind_socket` is called before the model loads, so a busy port ends `python -m app serve` in a
second with one line, not after a minute of loading. `serve` runs uvicorn on that socket with our
HTTP protocol (app/http_protocol.py: header deadline and limits, JSON protocol errors, a cap of
`CATDOG_MAX_CONNECTIONS` connections doing work) and a bounded graceful shutdown
(`CATDOG_SHUTDOWN_TIMEOUT_SECONDS`); when shutdown starts, uploads still arriving end with a JSON 503
instead of holding it up (app/admission.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI

from app.admission import AdmissionController
from app.http_protocol import ConnectionMetrics, HttpLimits, http_protocol_class
from app.settings import Settings

logger = logging.getLogger("catdog")

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


class PortUnavailableError(OSError):
    """The address to listen on cannot be bound (in use, not permitted, no such address)."""


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind host:port now, so the port is ours; PortUnavailableError says why not, in one line.

    Not listening yet: while the model loads, connections are refused rather than left waiting in a
    backlog; uvicorn starts listening once the app is ready to serve.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise PortUnavailableError(
            f"cannot listen on {host}:{port}: {reason} (set CATDOG_HOST / CATDOG_PORT or --host / --port)"
        ) from exc
    sock.set_inheritable(True)
    return sock


def return_freed_memory_to_the_os() -> None:
    """Make glibc give large freed blocks back to the OS instead of keeping them for reuse.

    glibc raises its mmap threshold up to 32 MiB after a large block is freed, so the next
    multi-megabyte image buffers come from the heap, whose freed pages stay in the process: a few
    large uploads would leave RSS high for good. A fixed 1 MiB threshold (and trimming the heap top
    above 4 MiB) keeps image-sized buffers in mmap, returned on free. No-op without glibc.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 1024 * 1024)
    mallopt(_M_TRIM_THRESHOLD, 4 * 1024 * 1024)


class DrainingServer(uvicorn.Server):
    """A uvicorn server that tells the app when shutdown starts (see AdmissionMiddleware)."""

    def __init__(self, config: uvicorn.Config, admission: AdmissionController | None) -> None:
        super().__init__(config)
        self.admission = admission

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.admission is not None:
            self.admission.start_draining()
        await super().shutdown(sockets)


def make_server(app: FastAPI, settings: Settings, **config: Any) -> DrainingServer:
    """The uvicorn server `serve` runs: our HTTP protocol, bounded graceful shutdown, draining."""
    admission = getattr(app.state, "admission", None)
    limits = HttpLimits(
        max_connections=settings.max_connections,
        header_timeout_s=settings.header_timeout_seconds,
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        retry_after_s=settings.retry_after_seconds,
    )
    return DrainingServer(
        uvicorn.Config(
            app,
            log_config=None,  # keep our JSON logging
            http=http_protocol_class(limits, _connection_metrics(app)),
            limit_concurrency=None,  # the protocol caps connections, counting only those doing work
            timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
            **config,
        ),
        admission if isinstance(admission, AdmissionController) else None,
    )


def _connection_metrics(app: FastAPI) -> ConnectionMetrics:
    """The app's connection counters, in its /metrics registry; made once per app."""
    metrics = getattr(app.state, "connection_metrics", None)
    if not isinstance(metrics, ConnectionMetrics):
        service = getattr(app.state, "service", None)
        registry = getattr(getattr(service, "metrics", None), "registry", None)
        metrics = app.state.connection_metrics = ConnectionMetrics(registry)
    return metrics


def serve(app: FastAPI, settings: Settings, sock: socket.socket) -> None:
    make_server(app, settings).run(sockets=[sock])
