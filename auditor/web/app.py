"""The web application put together: its routes and middleware, and serving it.

:func:`make_app` puts the store, the daemon's :class:`ServiceState`, the metrics and the
feed instance on the application and routes each path to its handler; :func:`start_http`
serves it. The handlers live in their own modules (:mod:`~auditor.web.probes`,
:mod:`~auditor.web.api`, :mod:`~auditor.web.feed`); this module handles no request itself
and knows nothing of the scheduler beyond the :class:`ServiceState` it is given.
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web
from pydantic import SecretStr

from auditor.errors import ConfigError
from auditor.metrics import Metrics
from auditor.store import Store
from auditor.web.api import api_alerts, api_changes, api_runs, api_targets
from auditor.web.auth import bearer_middleware
from auditor.web.feed import FEED_PATH, atom_feed, default_feed_instance
from auditor.web.probes import livez, metrics_endpoint, readyz
from auditor.web.responses import errors_middleware
from auditor.web.state import (
    FEED_INSTANCE_KEY,
    METRICS_KEY,
    STATE_KEY,
    STORE_KEY,
    ServiceState,
)

_INSTANCE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,63}")


def make_app(
    *,
    store: Store,
    state: ServiceState,
    metrics: Metrics,
    token: SecretStr | None,
    feed_instance: str | None = None,
) -> web.Application:
    """The daemon's web application; serve it with :func:`start_http`.

    ``feed_instance`` names this auditor in the Atom ids (letters, digits, ``.``, ``_``,
    ``~``, ``-``; at most 64); by default it is derived from the database URL.
    """
    if feed_instance is None:
        feed_instance = default_feed_instance(store.url_for_display)
    elif not _INSTANCE.fullmatch(feed_instance):
        raise ConfigError(
            [
                "config: feed instance: must be 1 to 64 letters, digits, '.', '_', '~' or '-'"
                f" (got {feed_instance!r})"
            ]
        )
    middlewares = [errors_middleware()]
    if token is not None:
        if not token.get_secret_value().strip():
            # An empty token must not mean "no authentication" (the settings refuse it too).
            raise ConfigError(["config: http.token: is empty"])
        middlewares.append(bearer_middleware(token))
    app = web.Application(middlewares=middlewares)
    app[STORE_KEY] = store
    app[STATE_KEY] = state
    app[METRICS_KEY] = metrics
    app[FEED_INSTANCE_KEY] = feed_instance
    app.router.add_get("/livez", livez, allow_head=True)
    app.router.add_get("/readyz", readyz, allow_head=True)
    app.router.add_get("/metrics", metrics_endpoint, allow_head=True)
    app.router.add_get("/api/v1/targets", api_targets)
    app.router.add_get("/api/v1/runs", api_runs)
    app.router.add_get("/api/v1/changes", api_changes)
    app.router.add_get("/api/v1/alerts", api_alerts)
    app.router.add_get(FEED_PATH, atom_feed)
    return app


def split_listen(listen: str) -> tuple[str | None, int]:
    """``"127.0.0.1:9337"``, ``"[::1]:9337"``, ``"localhost:9337"`` or ``":9337"`` (every
    interface) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError([f"config: http.listen: must be host:port (got {listen!r})"])
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or None, int(port)


async def start_http(app: web.Application, listen: str) -> web.AppRunner:
    """Serve ``app`` on ``listen`` (``host:port``); the caller ends it with ``runner.cleanup()``.

    Access logs are off (probes and scrapes every few seconds would drown the journal) and
    signals are left to the daemon.
    """
    host, port = split_listen(listen)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConfigError([f"config: http.listen: cannot listen on {listen}: {reason}"]) from None
    return runner


def base_url(runner: web.AppRunner) -> str:
    """``http://host:port`` of the first address ``runner`` listens on (IPv6 in brackets)."""
    host, port = runner.addresses[0][:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
