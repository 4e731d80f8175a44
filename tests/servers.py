"""Run the real server (uvicorn on a loopback port) for tests that need real concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from benchmarks.common import free_port, wait_ready

__all__ = ["free_port", "uvicorn_in_thread", "wait_ready"]


@contextmanager
def uvicorn_in_thread(app: FastAPI, timeout: float = 60) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, timeout)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
