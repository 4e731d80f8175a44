"""Structured JSON logs (python-json-logger), each line carrying the id of the request it belongs to.

A line: {"time", "level", "logger", "message", "request_id" (inside a request), every `extra=`
field, "exception" (with a traceback)}; time is UTC ISO 8601 with milliseconds.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(request_id: str | None) -> contextvars.Token[str | None]:
    return _request_id.set(request_id)


def reset_request_id(token: contextvars.Token[str | None]) -> None:
    _request_id.reset(token)


class _RequestIdFilter(logging.Filter):
    """Adds the current request's id to the record (as a field) when there is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id()
        if request_id is not None:
            record.request_id = request_id
        return True


def json_handler(stream: TextIO | None = None) -> logging.Handler:
    """A handler writing JSON lines to `stream` (default: stderr), with the request id when there is one."""
    formatter = JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "exception"},
        # uvicorn's color_message repeats message with terminal colour codes.
        reserved_attrs=[*RESERVED_ATTRS, "taskName", "color_message"],
    )
    # asctime as 2026-01-02T03:04:05.678+00:00 (logging.Formatter.formatTime's own knobs).
    formatter.converter = time.gmtime
    formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
    formatter.default_msec_format = "%s.%03d+00:00"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    return handler


def configure_logging(level: str = "INFO") -> None:
    """Route our loggers and uvicorn's through one JSON handler on stderr."""
    root = logging.getLogger()
    root.handlers = [json_handler()]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    # Our middleware writes one access line per request with its id; uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
