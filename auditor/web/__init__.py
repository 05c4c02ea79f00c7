"""The daemon's HTTP side (aiohttp): probes, metrics, a read-only JSON API and an Atom feed.

::

    GET /livez      200 {"status": "ok"} while the event loop answers
    GET /readyz     200 when the database answers (checked live, 2 s), its schema is at
                    head, the scheduler runs, the daemon is not draining and has file
                    descriptors to spare; else 503.
                    {"status": "ready"|"not ready", "checks": {...}, ...detail}
    GET /metrics    Prometheus text exposition
    GET /api/v1/targets | runs | changes | alerts
                    {"items": [...], "next": "<cursor>"|null}
    GET /feed.atom  the alerts as an Atom 1.0 feed

One module per job, each importing only those above it here:

- :mod:`~auditor.web.state`: :class:`ServiceState` and the keys of the app's state;
- :mod:`~auditor.web.responses`: JSON answers, JSON errors and the middleware making them;
- :mod:`~auditor.web.limits`: what one client can hold (connections, idle time, descriptors);
- :mod:`~auditor.web.cursors`: cursors and the query parameters the API and feed share;
- :mod:`~auditor.web.probes`: ``/livez``, ``/readyz`` and ``/metrics``;
- :mod:`~auditor.web.api`: the JSON API (how it pages is described there);
- :mod:`~auditor.web.feed`: the Atom feed (its ids, its ETag);
- :mod:`~auditor.web.auth`: the bearer token in front of the API and the feed;
- :mod:`~auditor.web.app`: :func:`make_app` (routes, middleware) and :func:`start_http`.

This package knows nothing of the scheduler beyond the small :class:`ServiceState` the
daemon gives it, never writes to the store and never prints.
"""

from auditor.web.api import API_PREFIX
from auditor.web.app import base_url, make_app, split_listen, start_http
from auditor.web.cursors import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    decode_cursor,
    encode_cursor,
    parse_limit,
    parse_when,
)
from auditor.web.feed import (
    ATOM_CONTENT_TYPE,
    ATOM_NS,
    FEED_PATH,
    TAG_PREFIX,
    default_feed_instance,
    entry_id,
    entry_title,
    feed_id,
    render_feed,
)
from auditor.web.limits import accept_guard, fit_connections
from auditor.web.probes import READY_TIMEOUT_S
from auditor.web.state import FEED_INSTANCE_KEY, METRICS_KEY, STATE_KEY, STORE_KEY, ServiceState

__all__ = [
    "API_PREFIX",
    "ATOM_CONTENT_TYPE",
    "ATOM_NS",
    "DEFAULT_LIMIT",
    "FEED_INSTANCE_KEY",
    "FEED_PATH",
    "MAX_LIMIT",
    "METRICS_KEY",
    "READY_TIMEOUT_S",
    "STATE_KEY",
    "STORE_KEY",
    "TAG_PREFIX",
    "ServiceState",
    "accept_guard",
    "base_url",
    "decode_cursor",
    "default_feed_instance",
    "encode_cursor",
    "entry_id",
    "entry_title",
    "feed_id",
    "fit_connections",
    "make_app",
    "parse_limit",
    "parse_when",
    "render_feed",
    "split_listen",
    "start_http",
]
