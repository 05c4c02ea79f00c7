"""What the web application holds: the daemon's :class:`ServiceState` and the app's keys.

:func:`auditor.web.app.make_app` puts the store, the state, the metrics and the feed
instance on the application under these keys; the handlers read them from there. This
module is data only: it handles no request and imports no other module of the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from auditor.metrics import Metrics
from auditor.store import Store


@dataclass
class ServiceState:
    """What the daemon tells ``/readyz``; the service owns it and flips the flags.

    ``database_ok`` and ``migrations_at_head`` are the daemon's own view after start-up;
    ``/readyz`` confirms both with a live query, so a database lost later shows too.
    ``detail`` is merged into the ``/readyz`` body (e.g. ``{"replica": "host-1"}``).
    ``out_of_descriptors_at`` is when (``time.monotonic()``) accepting a connection last
    failed for want of a file descriptor.
    """

    database_ok: bool = False
    migrations_at_head: bool = False
    scheduler_running: bool = False
    draining: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    out_of_descriptors_at: float | None = None


STORE_KEY: Final = web.AppKey("store", Store)
STATE_KEY: Final = web.AppKey("state", ServiceState)
METRICS_KEY: Final = web.AppKey("metrics", Metrics)
FEED_INSTANCE_KEY: Final = web.AppKey("feed_instance", str)
