"""The probes and the metrics endpoint: what orchestrators and Prometheus ask.

::

    GET /livez      200 {"status": "ok"} while the event loop answers
    GET /readyz     200 when the database answers (checked live, 2 s), its schema is at
                    head, the scheduler runs, the daemon is not draining and it has file
                    descriptors to spare (and had, the last minute); else 503.
                    {"status": "ready"|"not ready", "checks": {...}, ...detail}
    GET /metrics    Prometheus text exposition

These stay open when ``[http] token`` is set, so that orchestrators and Prometheus need no
secret. They never write to the store and never change the :class:`ServiceState` (the
daemon owns it).
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from auditor.errors import StoreError
from auditor.model import JSON
from auditor.web.limits import descriptors_ok
from auditor.web.responses import json_response
from auditor.web.state import METRICS_KEY, STATE_KEY, STORE_KEY

READY_TIMEOUT_S: Final = 2.0


async def livez(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    store = request.app[STORE_KEY]
    reachable = at_head = False
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            at_head = await store.at_head()
        reachable = True
    except (StoreError, TimeoutError):
        pass
    checks = {
        "database": state.database_ok and reachable,
        "migrations": state.migrations_at_head and at_head,
        "scheduler": state.scheduler_running,
        "draining": state.draining,
        "descriptors": descriptors_ok(state),
    }
    ready = checks["database"] and checks["migrations"] and checks["scheduler"]
    ready = ready and checks["descriptors"]
    ready = ready and not state.draining
    body: JSON = {**state.detail, "status": "ready" if ready else "not ready", "checks": checks}
    return json_response(body, status=200 if ready else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": content_type})
