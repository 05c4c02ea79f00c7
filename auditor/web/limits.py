"""What one HTTP client can hold: connections, idle time, file descriptors.

* **Idle and half-sent connections.** aiohttp's keep-alive timer runs from the moment a
  connection is made until a whole request has arrived, and again after each answer: a
  connection that sends nothing, or only part of a request, within ``idle_timeout`` is
  closed. aiohttp also bounds a request line and a header field (8190 bytes) and the
  number of headers (128): more is a 400.
* **Connections.** At most ``limit`` at once. aiohttp has no such limit (it accepts every
  connection), so :class:`CappedServer` counts them: one connection more closes the one
  that has been idle the longest (no request being handled; a connection that never sent
  a whole request counts as idle since it was made), or, when every one is busy, the new
  one. A client holding many idle connections therefore cannot lock out a probe, and the
  daemon cannot run out of descriptors because of its HTTP clients.
* **Descriptors.** :func:`fit_connections` lowers the limit to what the process's
  descriptor limit (``ulimit -n``, systemd's ``LimitNOFILE``) leaves after the daemon's
  own needs; :func:`free_descriptors` is what ``/readyz`` checks. When ``accept()`` does run
  out of descriptors, asyncio logs a traceback for every attempt, hundreds a second on
  Linux (CPython issue 151615): :func:`accept_guard` makes that one log line a minute and
  tells the daemon's :class:`~auditor.web.state.ServiceState`, so ``/readyz`` says so.

This module serves no route and touches no store.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from auditor.web.responses import Throttle
from auditor.web.state import ServiceState

log = structlog.get_logger("auditor.http")

# The fewest connections the limit is ever lowered to: the probes must get through.
MIN_CONNECTIONS: Final = 4
# /readyz says not ready with fewer free descriptors than this: an audit needs a few.
FREE_DESCRIPTORS_READY: Final = 8
# And for this long after accept() last ran out of them.
OUT_OF_DESCRIPTORS_FOR_S: Final = 60.0

_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

RawHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class CappedServer(web.Server):
    """aiohttp's server, holding at most ``limit`` connections at once (see above)."""

    def __init__(self, handler: RawHandler, *, limit: int, **kwargs: Any) -> None:
        self.limit = limit
        self.closed_for_room = 0
        # Open connections, and those of them handling no request: by how long they have
        # been idle, the longest first (a dict keeps the order of insertion).
        self._open: set[RequestHandler] = set()
        self._idle: dict[RequestHandler, None] = {}
        self._full = Throttle()
        super().__init__(self._tracked(handler), **kwargs)

    def _tracked(self, handler: RawHandler) -> RawHandler:
        async def tracked(request: web.BaseRequest) -> web.StreamResponse:
            protocol = request.protocol
            self._idle.pop(protocol, None)
            try:
                return await handler(request)
            finally:
                if protocol in self._open:
                    self._idle[protocol] = None

        return tracked

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._open.add(handler)
        self._idle[handler] = None
        if len(self._open) <= self.limit:
            return
        # The new connection is the last idle one: it is closed only when no other is idle.
        victim = next(iter(self._idle))
        self._forget(victim)
        victim.force_close()
        self.closed_for_room += 1
        if (held := self._full.due()) is not None:
            log.warning(
                "http.connection_limit",
                limit=self.limit,
                closed=self.closed_for_room,
                held=held,
                hint="the longest idle connection is closed for a new one",
            )

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self._forget(handler)
        super().connection_lost(handler, exc)

    def _forget(self, handler: RequestHandler) -> None:
        self._open.discard(handler)
        self._idle.pop(handler, None)


class CappedRunner(web.AppRunner):
    """An :class:`~aiohttp.web.AppRunner` whose server is a :class:`CappedServer`."""

    def __init__(self, app: web.Application, *, limit: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limit = limit

    async def _make_server(self) -> web.Server:
        # aiohttp builds its server (starting the app up); the same server, capped. Its
        # keyword arguments (keepalive_timeout, access logging) are only kept privately.
        made = await super()._make_server()
        return CappedServer(
            made.request_handler,
            limit=self._limit,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **made._kwargs,
        )


def descriptor_limit() -> int | None:
    """The soft limit on open descriptors (``ulimit -n``), None when there is none."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def open_descriptors() -> int | None:
    """How many descriptors the process has open (None where the system does not say);
    0 free when even looking fails for want of one."""
    for where in ("/proc/self/fd", "/dev/fd"):
        try:
            # Listing opens the directory: one descriptor more than the process holds.
            return len(os.listdir(where)) - 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in _OUT_OF_RESOURCES:
                return descriptor_limit()
            return None
    return None


def free_descriptors() -> int | None:
    limit, used = descriptor_limit(), open_descriptors()
    return None if limit is None or used is None else limit - used


def fit_connections(wanted: int, *, reserve: int) -> int:
    """``wanted`` (``[http] max_connections``), lowered to half the descriptors left free
    now less ``reserve`` (what the daemon's audits, database and sinks need), never below
    :data:`MIN_CONNECTIONS`; a lowered limit is logged once.

    Half, because a connection over the limit is closed only after ``accept()`` has taken
    what was waiting, up to the listening backlog, which :func:`listen_backlog` makes the
    limit: for a moment, twice the limit can be open.
    """
    free = free_descriptors()
    room = None if free is None else (free - reserve) // 2
    if room is None or room >= wanted:
        return wanted
    fitted = max(MIN_CONNECTIONS, room)
    log.warning(
        "http.connections_limited",
        max_connections=wanted,
        limit=fitted,
        descriptor_limit=descriptor_limit(),
        hint="raise the descriptor limit (LimitNOFILE=, ulimit -n) for more",
    )
    return fitted


def listen_backlog(limit: int) -> int:
    """The listening socket's backlog for a connection limit: asyncio accepts up to the
    backlog in one go, so it bounds how far the limit is overshot before the extra
    connections are closed."""
    return max(1, min(128, limit))


def accept_guard(
    state: ServiceState, clock: Callable[[], float] = time.monotonic
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event loop exception handler: an ``accept()`` that ran out of descriptors is
    noted in ``state`` and logged at most once a minute; anything else goes to asyncio's
    default handler."""
    throttle = Throttle(clock=clock)

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if (
            isinstance(exc, OSError)
            and exc.errno in _OUT_OF_RESOURCES
            and "accept" in str(context.get("message", ""))
        ):
            state.out_of_descriptors_at = clock()
            if (held := throttle.due()) is not None:
                log.error(
                    "http.out_of_descriptors",
                    error=exc.strerror or str(exc),
                    held=held,
                    descriptor_limit=descriptor_limit(),
                    hint="new connections wait until descriptors are free again",
                )
            return
        loop.default_exception_handler(context)

    return handle


def descriptors_ok(state: ServiceState, clock: Callable[[], float] = time.monotonic) -> bool:
    """``/readyz``'s check: enough descriptors free now, and accept() not out of them
    within the last minute."""
    recent = state.out_of_descriptors_at
    if recent is not None and clock() - recent < OUT_OF_DESCRIPTORS_FOR_S:
        return False
    free = free_descriptors()
    return free is None or free >= FREE_DESCRIPTORS_READY


__all__ = [
    "FREE_DESCRIPTORS_READY",
    "MIN_CONNECTIONS",
    "OUT_OF_DESCRIPTORS_FOR_S",
    "CappedRunner",
    "CappedServer",
    "accept_guard",
    "descriptor_limit",
    "descriptors_ok",
    "fit_connections",
    "free_descriptors",
    "listen_backlog",
    "open_descriptors",
]
