"""No secret, in any form, in anything the program shows: a grep of everything captured.

Every secret a configuration can hold is set to a distinctive marker: the PBX's client
secret, the API token, a webhook's signing secret (as written, its base64 and its key bytes)
and the PostgreSQL password both in the URL's user part (percent-encoded: it holds an ``@``)
and in its query (``password=``, and ``sslpassword=``, a client key's passphrase). The real
commands and the real daemon then run against the simulator and a scratch PostgreSQL
database, and every output is collected: each command's stdout and stderr (errors with and
without ``-v``), the exports (JSON, CSV, the HTML report), every log line and alert of the
daemon, each HTTP answer's status, headers and body (the API with, without and with a wrong
token, the feed, the probes, ``/metrics``, the 503s while the database is gone), what the
webhook receiver was sent, and what a reload with secrets of the wrong TOML type left. No
marker may appear in any of it.

One thing is left out of the grep, on purpose: the answer to a malformed request is written
by aiohttp's parser before the application sees it, and echoes the malformed line (its
bearer token included) back to the one client that sent it. What is checked here is that
the daemon's log does not write it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import make_url

from auditor.simulator import Pbx, Simulator, serve
from tests.conftest import PG_SERVER_URL, DaemonSpawner, _admin, _run_apart, free_port

PBX_SECRET = "pbx-secret-MARK-3f9c1e"
API_TOKEN = "api-token-MARK-8d2a7b"
WEBHOOK_KEY = b"webhook-key-MARK-41c6e0a9f2d7"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()
PG_USER_PASSWORD = "pg-userinfo-MARK@5e1d"
PG_QUERY_PASSWORD = "pg-query-MARK-c47b09"
PG_SSL_PASSWORD = "pg-sslkey-MARK-9a3e6f"
# Secrets written with the wrong TOML type (a reload and check-config must not echo them).
TOKEN_NUMBER = 8675309123
WEBHOOK_FLOAT = 2718281828.459
SECRET_ARRAY = ["array-MARK-1b2c"]

MARKERS = (
    PBX_SECRET,
    API_TOKEN,
    WEBHOOK_SECRET,
    WEBHOOK_SECRET.removeprefix("whsec_"),
    WEBHOOK_KEY.decode(),
    PG_USER_PASSWORD,
    quote(PG_USER_PASSWORD, safe=""),
    PG_QUERY_PASSWORD,
    PG_SSL_PASSWORD,
    str(TOKEN_NUMBER),
    str(WEBHOOK_FLOAT).split(".")[0],
    # Every marker but the base64 holds this: a part of one shown is found too.
    "-MARK",
)


def assert_no_secret(captured: Iterable[str]) -> None:
    texts = list(captured)
    assert texts, "nothing was captured"
    for text in texts:
        for marker in MARKERS:
            assert marker not in text, f"{marker!r} shown in:\n{text[:2000]}"


def pg_url(database: str) -> str:
    """The scratch database's URL with a password in every place the driver takes one."""
    server = make_url(PG_SERVER_URL)
    return (
        f"postgresql://{server.username}:{quote(PG_USER_PASSWORD, safe='')}"
        f"@{server.host}:{server.port or 5432}/{database}"
        f"?password={PG_QUERY_PASSWORD}&sslpassword={PG_SSL_PASSWORD}&sslmode=disable"
    )


@pytest.fixture
def scratch_database(pg_database: str) -> Iterator[str]:
    """The name of a PostgreSQL database of this test alone (a test drops it early)."""
    name = f"auditor_secrets_{uuid.uuid4().hex[:12]}"
    _run_apart(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        _run_apart(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def write_config(
    path: Path, *, database: str, base: str, hook_port: int, listen: str, broken: bool = False
) -> Path:
    """A daemon configuration holding every secret; ``broken``: each of wrong TOML type."""
    token = TOKEN_NUMBER if broken else json.dumps(API_TOKEN)
    webhook_secret = WEBHOOK_FLOAT if broken else json.dumps(WEBHOOK_SECRET)
    client_secret = json.dumps(SECRET_ARRAY if broken else PBX_SECRET)
    path.write_text(
        f"""
[database]
url = {json.dumps(database)}
[schedule]
every = "1s"
jitter = "0s"
tick = "250ms"
[audit]
shutdown_grace = "5s"
[http]
listen = "{listen}"
token = {token}
[log]
format = "json"
[alerts]
delivery_retry_min = "100ms"
delivery_retry_max = "500ms"
[[alerts.webhook]]
name = "ops"
url = "http://127.0.0.1:{hook_port}/hook"
secret = {webhook_secret}
[[targets]]
name = "pbx-hq"
url = "{base}/hq"
client_id = "auditor"
client_secret = {client_secret}
retries = 0
"""
    )
    path.chmod(0o600)
    return path


@dataclass
class Capture:
    """Everything seen: each entry one text to grep."""

    texts: list[str] = field(default_factory=list)

    def add(self, *texts: str) -> None:
        self.texts.extend(texts)

    async def run(self, config: Path, *args: str, env: dict[str, str] | None = None) -> int:
        """Run a command, capture its stdout and stderr; its exit code."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "auditor",
            "--config",
            str(config),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**_clean_env(), **(env or {})},
            cwd=config.parent,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        self.add(f"{args}\n{out.decode()}\n{err.decode()}")
        assert proc.returncode is not None
        return proc.returncode

    async def get(self, session: aiohttp.ClientSession, url: str, token: str | None) -> str:
        """GET ``url`` (with ``Authorization: Bearer token``), capture the whole answer."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with session.get(url, headers=headers) as response:
            body = await response.text(errors="replace")
            self.add(f"{response.status} {response.reason}\n{dict(response.headers)}\n{body}")
            return f"{response.status} {body}"


def _clean_env() -> dict[str, str]:
    import os

    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AUDITOR_") and k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET")
    }


@asynccontextmanager
async def webhook_receiver(port: int, capture: Capture) -> AsyncIterator[list[bytes]]:
    """A webhook endpoint on ``port`` that captures every request it is sent."""
    bodies: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        bodies.append(body)
        capture.add(f"{request.method} {request.path_qs}\n{dict(request.headers)}\n{body!r}")
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield bodies
    finally:
        await runner.cleanup()


def a_pbx() -> Pbx:
    pbx = Pbx("hq", scripts=4, seed=2, states=True, client_secret=PBX_SECRET)
    pbx.set_state(pbx.filenames[0], "Disconnected")
    return pbx


async def malformed_request(port: int) -> bytes:
    """A request whose Authorization header holds a control character: aiohttp's parser
    refuses it before the application sees it (and its exception quotes the header)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /api/v1/runs HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {API_TOKEN}".encode()
        + b"\x01\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read(4096)
    writer.close()
    return answer


async def test_commands_show_no_secret(tmp_path: Path, scratch_database: str) -> None:
    capture = Capture()
    hook_port = free_port()
    url = pg_url(scratch_database)
    async with (
        serve(Simulator([a_pbx()])) as base,
        webhook_receiver(hook_port, capture) as delivered,
    ):
        listen = f"127.0.0.1:{free_port()}"
        config = write_config(
            tmp_path / "auditor.toml", database=url, base=base, hook_port=hook_port, listen=listen
        )
        assert await capture.run(config, "check-config") == 0
        assert await capture.run(config, "db", "upgrade") == 0
        assert await capture.run(config, "once") == 0
        for args in (
            ("runs",),
            ("runs", "--json"),
            ("history", "--json"),
            ("alerts", "--json"),
            ("show", "--target", "pbx-hq"),
            ("verify",),
        ):
            assert await capture.run(config, *args) == 0, capture.texts[-1]
        exports = {fmt: tmp_path / f"export.{fmt}" for fmt in ("json", "csv", "html")}
        for fmt, path in exports.items():
            assert await capture.run(config, "export", "--format", fmt, "-o", str(path)) == 0
            capture.add(path.read_text())
        # The report's header names the database, its passwords masked.
        assert "password=***" in exports["html"].read_text()

        # The database gone: every command fails with one line naming it, masked.
        missing = write_config(
            tmp_path / "missing.toml",
            database=pg_url(scratch_database + "_missing"),
            base=base,
            hook_port=hook_port,
            listen=listen,
        )
        assert await capture.run(missing, "runs") == 1
        assert "password=***" in capture.texts[-1]
        assert "does not exist" in capture.texts[-1]
        assert await capture.run(missing, "-v", "runs") == 1
        assert await capture.run(missing, "once") == 1

        broken = write_config(
            tmp_path / "broken.toml",
            database=url,
            base=base,
            hook_port=hook_port,
            listen=listen,
            broken=True,
        )
        assert await capture.run(broken, "check-config") == 2
        for key in ("http.token", "alerts.webhook[0].secret", "targets[0].client_secret"):
            assert f"config: {key}: " in capture.texts[-1]
    assert delivered, "once delivered no alert to the webhook"
    assert_no_secret(capture.texts)


async def test_the_daemon_shows_no_secret(
    tmp_path: Path, scratch_database: str, spawn_daemon: DaemonSpawner
) -> None:
    capture = Capture()
    hook_port, http_port = free_port(), free_port()
    web_base = f"http://127.0.0.1:{http_port}"
    async with (
        serve(Simulator([a_pbx()])) as base,
        webhook_receiver(hook_port, capture) as delivered,
        aiohttp.ClientSession() as session,
    ):
        path = tmp_path / "auditor.toml"

        def configure(*, broken: bool = False) -> Path:
            return write_config(
                path,
                database=pg_url(scratch_database),
                base=base,
                hook_port=hook_port,
                listen=f"127.0.0.1:{http_port}",
                broken=broken,
            )

        daemon = await spawn_daemon(configure())
        await daemon.until(lambda: daemon.events("audit.baseline"), "the baseline")
        await daemon.until(lambda: delivered, "a webhook delivery")
        (started,) = daemon.events("service.started")
        assert "password=***" in started["database"]
        assert started["database_tls"] == (
            "sslmode=disable, sslmode in the URL: no TLS; this connection: not encrypted"
        )

        for where in ("/livez", "/readyz", "/metrics", "/feed.atom", "/api/v1/targets"):
            assert (await capture.get(session, web_base + where, API_TOKEN)).startswith("200")
        for where in ("/api/v1/runs", "/api/v1/changes", "/api/v1/alerts"):
            assert (await capture.get(session, web_base + where, API_TOKEN)).startswith("200")
            assert (await capture.get(session, web_base + where, None)).startswith("401")
            assert (await capture.get(session, web_base + where, "wrong")).startswith("401")

        answer = await malformed_request(http_port)
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
        await daemon.until(
            lambda: any("Error handling request" in json.dumps(line) for line in daemon.logs),
            "aiohttp's log line of the malformed request",
        )
        assert_no_secret(json.dumps(line) for line in daemon.logs)
        (parser_line,) = [line for line in daemon.logs if line.get("logger") == "aiohttp.server"]
        assert parser_line["error"] == "BadHttpMessage"
        assert parser_line["status"] == 400

        # A reload with every secret of the wrong TOML type: refused, nothing echoed.
        configure(broken=True)
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.until(
            lambda: len(daemon.events("config.reload_refused")) >= 3, "the reload refused"
        )

        # The database gone: the API answers 503 naming it, masked.
        _run_apart(_admin(f'DROP DATABASE "{scratch_database}" WITH (FORCE)'))

        async def unavailable() -> bool:
            return (await capture.get(session, web_base + "/api/v1/runs", API_TOKEN)).startswith(
                "503"
            )

        await daemon.until(unavailable, "a 503 from the API")
        assert "password=***" in capture.texts[-1]
        for where in ("/api/v1/changes", "/api/v1/alerts", "/api/v1/targets", "/feed.atom"):
            await capture.get(session, web_base + where, API_TOKEN)
        await capture.get(session, web_base + "/readyz", None)
        await daemon.until(
            lambda: daemon.events("service.database_error"), "the database error logged"
        )
        assert await daemon.stop() == 0

    capture.add(*(json.dumps(line) for line in daemon.logs + daemon.alerts))
    assert_no_secret(capture.texts)
