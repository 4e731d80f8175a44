"""Load shedding and resource bounds that act before a request's body is read.

`AdmissionMiddleware` (ASGI) guards every POST (the prediction routes, whatever protocol):

  admission      at most `max_in_flight` prediction requests are being read, decoded, queued or
                 inferred at once; one more is answered 503 `overloaded` with Retry-After at once,
                 before a byte of its body is read, so an overloaded server sheds in milliseconds
                 and the latency of the requests it did admit stays bounded
  body timeout   the whole body must arrive within `body_timeout_s`, else 408 `body_timeout`
                 (and the connection is closed): a stalled upload cannot hold a slot for ever
  draining       once the server is shutting down, a body still being read ends with 503
                 `shutting_down` instead of holding up the shutdown
  abandonment    a client that disconnects after sending its body cancels its request: images
                 not yet decoded or inferred are dropped (499 in the access log)
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import CLIENT_CLOSED_REQUEST, APIError, error_response

logger = logging.getLogger("catdog.admission")

# Methods that carry work; GET /healthz, /readyz, /metrics and /docs are never shed.
_GUARDED_METHODS = frozenset({"POST", "PUT"})


class AdmissionController:
    """Counts prediction requests in flight; `try_enter` refuses one over the limit."""

    def __init__(self, max_in_flight: int, registry: CollectorRegistry | None = None) -> None:
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.draining = asyncio.Event()
        # The body reads in progress (AdmissionMiddleware): draining cuts them off at once.
        self.body_reads: set[_BodyCut] = set()
        self._gauge = Gauge(
            "catdog_requests_in_flight",
            "Prediction requests being read, decoded, queued or inferred.",
            registry=registry,
        )
        self._shed = Counter(
            "catdog_requests_shed_total",
            "Prediction requests refused with 503 before their body was read (CATDOG_MAX_IN_FLIGHT).",
            registry=registry,
        )

    def try_enter(self) -> bool:
        if self.in_flight >= self.max_in_flight:
            self._shed.inc()
            return False
        self.in_flight += 1
        self._gauge.set(self.in_flight)
        return True

    def leave(self) -> None:
        self.in_flight -= 1
        self._gauge.set(self.in_flight)

    def start_draining(self) -> None:
        """Shutdown begins: new POSTs get 503, and bodies still arriving end with 503 now."""
        self.draining.set()
        for cut in list(self.body_reads):
            cut.fire("draining")


class AdmissionMiddleware:
    """Admission control, a body read deadline and shutdown draining for POST requests."""

    def __init__(
        self, app: ASGIApp, controller: AdmissionController, body_timeout_s: float, retry_after_s: int
    ) -> None:
        self.app = app
        self.controller = controller
        self.body_timeout_s = body_timeout_s
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _GUARDED_METHODS:
            await self.app(scope, receive, send)
            return
        controller = self.controller
        if controller.draining.is_set() or not controller.try_enter():
            shutting_down = controller.draining.is_set()
            message = (
                "the service is shutting down"
                if shutting_down
                else f"the service is at capacity: {controller.max_in_flight} requests in flight; "
                "retry shortly"
            )
            # Overloaded: the connection stays open; uvicorn discards the unread body and the client
            # reads its 503 instead of a reset. Shutting down: the connection closes.
            headers = {"Retry-After": str(self.retry_after_s)}
            if shutting_down:
                headers["Connection"] = "close"
            response = error_response(
                503,
                "shutting_down" if shutting_down else "overloaded",
                message,
                headers=headers,
                path=scope["path"],
            )
            await response(scope, receive, send)
            return
        task = asyncio.current_task()
        gone = _ClientGone(task, receive)
        try:
            await self.app(scope, self._guarded_receive(receive, gone), gone.wrap_send(send))
        except asyncio.CancelledError:
            if not gone.fired:
                raise
            _uncancel(task)
            logger.info(
                "client disconnected; the work for its request was abandoned",
                extra={"method": scope["method"], "path": scope["path"]},
            )
            # Nobody reads it: the status the access log and the metrics record.
            await Response(status_code=CLIENT_CLOSED_REQUEST)(scope, receive, send)
        finally:
            gone.stop()
            controller.leave()

    def _guarded_receive(self, receive: Receive, gone: _ClientGone) -> Receive:
        """`receive`, cut off at the body deadline or when draining starts.

        One timer per body read, no extra task: on the hot path of every prediction request. The
        timer (or `AdmissionController.start_draining`) cancels the task reading the body, and the
        reason it was cancelled becomes the 408 or 503.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        controller = self.controller
        body_done = False

        async def guarded() -> Message:
            nonlocal body_done
            if body_done:
                # After the body, receive() only waits for a disconnect: no deadline applies.
                return await receive()
            if controller.draining.is_set():
                raise self._shutting_down()
            cut = _BodyCut(asyncio.current_task())
            timer = loop.call_at(deadline, cut.fire, "timeout")
            controller.body_reads.add(cut)
            try:
                message = await receive()
            except asyncio.CancelledError:
                if cut.reason is None:
                    raise  # cancelled by someone else (the client went away): not ours to handle
                _uncancel(cut.task)
                if cut.reason == "draining":
                    raise self._shutting_down() from None
                raise APIError(
                    408,
                    "body_timeout",
                    f"the request body did not arrive within {self.body_timeout_s:g} s",
                    {"body_timeout_seconds": self.body_timeout_s},
                    headers={"Connection": "close"},
                ) from None
            finally:
                timer.cancel()
                controller.body_reads.discard(cut)
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
                gone.watch()
            return message

        return guarded

    def _shutting_down(self) -> APIError:
        return APIError(
            503,
            "shutting_down",
            "the service is shutting down; the request body was not complete",
            headers={"Retry-After": str(self.retry_after_s), "Connection": "close"},
        )


class _ClientGone:
    """Once the body is read, waits for the client to disconnect and then cancels the request's task:
    an image still queued for a decode thread or the batcher is dropped (the pool skips a cancelled
    job, the batcher a cancelled future) instead of being worked on for nobody. A decode already
    running in a thread finishes; its bounds (app/service.py, catdog/imaging.py) limit what it costs.
    """

    __slots__ = ("fired", "receive", "responding", "task", "watcher")

    def __init__(self, task: asyncio.Task[object] | None, receive: Receive) -> None:
        self.task = task
        self.receive = receive
        self.fired = False
        self.responding = False
        self.watcher: asyncio.Task[None] | None = None

    def watch(self) -> None:
        if self.watcher is None and self.task is not None:
            self.watcher = asyncio.get_running_loop().create_task(self._wait())

    async def _wait(self) -> None:
        # After the body, uvicorn's receive() returns only when the client goes (or the response is
        # complete, which `responding` tells apart).
        message = await self.receive()
        if message["type"] == "http.disconnect" and not self.responding and self.task is not None:
            self.fired = True
            self.task.cancel()

    def wrap_send(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.responding = True
            await send(message)

        return sending

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()


class _BodyCut:
    """Cuts off one body read: `fire(reason)` cancels the reading task once, remembering why."""

    __slots__ = ("reason", "task")

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self.task = task
        self.reason: str | None = None

    def fire(self, reason: str) -> None:
        if self.reason is None and self.task is not None:
            self.reason = reason
            self.task.cancel()


def _uncancel(task: asyncio.Task[object] | None) -> None:
    # Python 3.11+: the cancellation was handled here, so the task is not "being cancelled" any more.
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()
