"""Serving a simulator: an async context manager for tests and a blocking run for the CLI.

It only starts and stops servers; what a request gets is decided in ``app`` and ``pbx``."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from aiohttp.log import access_logger
from aiohttp.web_log import AccessLogger

from auditor.simulator.app import make_app
from auditor.simulator.pbx import Simulator


def tls_context(certfile: str | Path, keyfile: str | Path | None = None) -> ssl.SSLContext:
    """A server TLS context from a PEM certificate (chain) and key, e.g. a self-signed pair."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


@asynccontextmanager
async def serve(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    control: bool = True,
    access_log: bool = False,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[str]:
    """Serve ``sim`` until the block ends; yields the base URL, e.g. ``http://127.0.0.1:41234``
    (port 0 picks a free port). A PBX named ``hq`` is then at ``{base}/hq``."""
    runner = web.AppRunner(
        make_app(sim, control=control),
        handle_signals=False,
        access_log_class=AccessLogger,
        access_log=access_logger if access_log else None,
        # A client that gives up on a delayed answer ends its handler too, so stopping the
        # server does not wait out fault delays.
        handler_cancellation=True,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        # A deep backlog: a fleet benchmark opens hundreds of connections at once.
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024)
        await site.start()
        yield _base_url(host, runner.addresses[0][1], ssl_context is not None)
    finally:
        await runner.cleanup()


def run(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    ssl_context: ssl.SSLContext | None = None,
    control: bool = True,
    access_log: bool = False,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``sim`` until SIGINT or SIGTERM; ``ready(base_url)`` is called once listening."""
    asyncio.run(
        _run_until_signal(
            sim,
            host,
            port,
            ssl_context=ssl_context,
            control=control,
            access_log=access_log,
            ready=ready,
        )
    )


async def _run_until_signal(
    sim: Simulator,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    control: bool,
    access_log: bool,
    ready: Callable[[str], None] | None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            # Not the main thread, or no signal support: Ctrl-C still ends asyncio.run.
            continue
        installed.append(sig)
    try:
        async with serve(
            sim, host, port, ssl_context=ssl_context, control=control, access_log=access_log
        ) as base_url:
            if ready is not None:
                ready(base_url)
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _base_url(host: str, port: int, tls: bool) -> str:
    scheme = "https" if tls else "http"
    # A wildcard address is not one a client can connect to: name the loopback instead.
    if host in ("", "0.0.0.0"):  # noqa: S104 - compared, not bound
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"{scheme}://{host}:{port}"
