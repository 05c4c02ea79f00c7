"""No secret follows a redirect: the daemon against a PBX that redirects.

The daemon is the real ``3cx-auditor run`` subprocess. The "PBX" is a small server here
that answers the login, or the API's GETs, with a redirect to a second server (the
"thief"), which records whatever reaches it. A client that followed a 307/308 would re-send
the login form, client secret included, to the thief; a GET led from ``https://`` to
``http://`` would send its request in clear. The thief must see nothing, and the run must
fail with a line that names where the redirect pointed.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import DaemonSpawner, daemon_config

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SECRET = "redirect-test-secret-7c1d"
TOKEN = "redirect-test-token-2b9e"


@dataclass
class Server:
    """One aiohttp server of the test; ``seen``: the requests it received, as text."""

    url: str
    seen: list[str] = field(default_factory=list)


@asynccontextmanager
async def served(
    handler: Handler | None = None, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    server = Server(url="")

    async def record(request: web.Request) -> web.StreamResponse:
        body = await request.text()
        server.seen.append(f"{request.method} {request.path_qs} {dict(request.headers)} {body}")
        if handler is None:
            return web.json_response({"stolen": True})
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def config_for(tmp_path: Path, pbx: str, extra_target: str = "") -> Path:
    path = daemon_config(
        tmp_path / "auditor.toml",
        database=f"sqlite:///{tmp_path / 'audit.db'}",
        targets=[("pbx-hq", pbx)],
        every="1s",
    )
    text = path.read_text().replace('client_secret = "secret"', f'client_secret = "{SECRET}"')
    path.write_text(text.replace("retries = 1", "retries = 1" + extra_target))
    return path


def failures(logs: list[dict[str, object]]) -> list[str]:
    return [
        str(line.get("error"))
        for line in logs
        if line.get("event") == "audit.not_complete" and line.get("status") == "failed"
    ]


@pytest.mark.parametrize("status", [307, 308, 302])
async def test_the_login_is_not_sent_where_a_redirect_points(
    tmp_path: Path, spawn_daemon: DaemonSpawner, status: int
) -> None:
    async with served() as thief:
        where = f"{thief.url}/pbx/connect/token"

        async def redirect(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, headers={"Location": where})

        async with served(redirect) as pbx:
            daemon = await spawn_daemon(config_for(tmp_path, f"{pbx.url}/pbx"))
            await daemon.until(lambda: len(failures(daemon.logs)) >= 2, "two failed audits")
            assert await daemon.stop() == 0
    assert thief.seen == []
    assert all(request.startswith("POST /pbx/connect/token") for request in pbx.seen)
    assert failures(daemon.logs)[0] == (
        f"pbx-hq: the PBX redirected the login to {where} (HTTP {status}): fix the target URL"
    )
    logged = "\n".join(str(line) for line in daemon.logs + daemon.alerts)
    assert SECRET not in logged


async def test_a_get_is_not_led_from_https_to_http(
    tmp_path: Path, spawn_daemon: DaemonSpawner, self_signed: tuple[Path, Path]
) -> None:
    cert, key = self_signed
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async with served() as thief:

        async def pbx_answer(request: web.Request) -> web.StreamResponse:
            if request.path.endswith("/connect/token"):
                return web.json_response({"access_token": TOKEN, "expires_in": 3600})
            # The same path, in clear, on another port.
            return web.Response(status=308, headers={"Location": thief.url + request.path_qs})

        async with served(pbx_answer, tls=tls) as pbx:
            config = config_for(tmp_path, f"{pbx.url}/pbx", f'\nca_file = "{cert}"')
            daemon = await spawn_daemon(config)
            await daemon.until(lambda: len(failures(daemon.logs)) >= 2, "two failed audits")
            assert await daemon.stop() == 0
    assert thief.seen == []
    assert any("GetFailoverScripts" in request for request in pbx.seen)
    first = failures(daemon.logs)[0]
    assert first.startswith("pbx-hq, page 1: the PBX redirected the GetFailoverScripts to ")
    assert f" to {thief.url}/pbx/xapi/v1/Backups/Pbx.GetFailoverScripts()?$top=" in first
    assert first.endswith("(HTTP 308): fix the target URL")
    logged = "\n".join(str(line) for line in daemon.logs + daemon.alerts)
    assert SECRET not in logged
    assert TOKEN not in logged
