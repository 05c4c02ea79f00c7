"""JSON answers and JSON errors, shared by every route of the web application.

A handler refuses a parameter by raising :class:`BadRequest`; :func:`errors_middleware`
turns it, a :class:`~auditor.errors.StoreError` and aiohttp's HTTP errors (404, 405, ...)
into ``{"error": "<one line>"}`` with the status they call for. A 5xx body is one fixed
line: the database's error (which names its location) and an unexpected exception (its
class, its text) go to the log, at most once a minute each (:class:`Throttle`), never to
the client. This module reads no request parameters, touches no store and decides
nothing about who may ask.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import structlog
from aiohttp import web

from auditor.errors import StoreError
from auditor.model import JSON, visible

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = structlog.get_logger("auditor.http")

DATABASE_UNAVAILABLE: Final = "the database is not available; the daemon's log says why"
INTERNAL_ERROR: Final = "internal error; the daemon's log says more"


class BadRequest(Exception):
    """A parameter the API refuses; its text is the one-line error shown to the client."""


def json_response(
    body: JSON, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return json_response({"error": message}, status=status, headers=headers)


class Throttle:
    """Lets a recurring event through at most once every ``every`` seconds.

    :meth:`due` answers None while the event is to stay quiet, else how many times it was
    held back since it last went through: a client (or a failure) that repeats itself
    thousands of times a second makes one log line a minute, not a flood.
    """

    def __init__(self, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._clock = clock
        self._last: float | None = None
        self._held = 0

    def due(self) -> int | None:
        now = self._clock()
        if self._last is not None and now - self._last < self._every:
            self._held += 1
            return None
        held, self._held, self._last = self._held, 0, now
        return held


def errors_middleware() -> Any:
    database_errors = Throttle()
    crashes = Throttle()

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as exc:
            return error_response(400, str(exc))
        except StoreError as exc:
            if (held := database_errors.due()) is not None:
                log.error("http.database_error", error=str(exc), path=request.path, held=held)
            return error_response(503, DATABASE_UNAVAILABLE)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = f"{visible(request.path[:80])}: {exc.reason.lower()}"
            return error_response(exc.status, message, headers=_allow_header(exc))
        except Exception:
            # A bug: its class and text go to the log (once a minute), not to the client.
            if (held := crashes.due()) is not None:
                log.exception("http.handler_crashed", path=request.path, held=held)
            return error_response(500, INTERNAL_ERROR)

    return errors


def _allow_header(exc: web.HTTPException) -> Mapping[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None
