"""Errors reaching a PBX say what is wrong and where, as ``once`` prints them (a real
subprocess): a wrong base URL is not reported as bad credentials, a TLS failure gives
OpenSSL's reason and what to do about it, and neither is retried.

The wrong addresses are a plain aiohttp app that answers as web servers do (404, 501, an
HTML page, nginx's page for plain HTTP on its HTTPS port); the PBXs are the simulator,
over HTTP and over HTTPS with a self-signed and an expired certificate.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from auditor.simulator import Pbx, Simulator, serve, tls_context
from tests.clirun import SECRET_ENV, Cli

NGINX_400 = (
    "<html><head><title>400 The plain HTTP request was sent to HTTPS port</title></head>"
    "<body><center><h1>400 Bad Request</h1></center>"
    "<center>The plain HTTP request was sent to HTTPS port</center></body></html>"
)
WEB_PAGE = "<!DOCTYPE html><html><head><title>3CX Webclient</title></head><body></body></html>"


def _web_server() -> web.Application:
    """Answers as a web server that is not a 3CX token endpoint does, by the path's start."""

    async def answer(request: web.Request) -> web.Response:
        first = request.path.strip("/").split("/")[0]
        if first == "not-implemented":
            return web.Response(status=501, text="Not Implemented")
        if first == "web-page":
            return web.Response(text=WEB_PAGE, content_type="text/html")
        if first == "wants-https":
            return web.Response(status=400, text=NGINX_400, content_type="text/html")
        return web.Response(status=404, text="404: Not Found")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


@asynccontextmanager
async def _served(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _expired(tmp_path: Path, key: Path) -> Path:
    """A certificate for 127.0.0.1 whose validity ended yesterday, signed by ``key``."""
    openssl = shutil.which("openssl")
    assert openssl is not None
    request, cert = tmp_path / "expired.csr", tmp_path / "expired.pem"
    subprocess.run(
        [openssl, "req", "-new", "-key", str(key), "-subj", "/CN=127.0.0.1", "-out", str(request)],
        check=True,
        capture_output=True,
    )
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run(
        [
            *(openssl, "x509", "-req", "-in", str(request), "-signkey", str(key)),
            *("-days", "-1", "-extfile", str(tmp_path / "san.ext"), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert


def _target(name: str, url: str, extra: str = "") -> str:
    return f"""
[[targets]]
name = "{name}"
url = "{url}"
client_id = "auditor"
client_secret_env = "{SECRET_ENV}"
retries = 2
request_timeout = "10s"
{extra}
"""


async def test_wrong_addresses_and_tls_failures_say_what_is_wrong(
    tmp_path: Path, self_signed: tuple[Path, Path]
) -> None:
    cert, key = self_signed
    expired = _expired(tmp_path, key)
    secret = "pbx-secret-" + secrets.token_urlsafe(16)

    def simulator() -> Simulator:
        return Simulator([Pbx(name, scripts=3, client_secret=secret) for name in ("hq", "branch")])

    async with (
        _served(_web_server()) as wrong,
        serve(simulator()) as plain,
        serve(simulator(), ssl_context=tls_context(cert, key)) as tls,
        serve(simulator(), ssl_context=tls_context(expired, key)) as stale,
    ):
        tls_port = tls.rsplit(":", 1)[1]
        config = tmp_path / "auditor.toml"
        config.write_text(
            f'[database]\nurl = "sqlite:///{tmp_path / "audit.db"}"\n[log]\nformat = "json"\n'
            + _target("ok", f"{plain}/hq")
            + _target("not-found", f"{wrong}/not-found")
            + _target("not-implemented", f"{wrong}/not-implemented")
            + _target("web-page", f"{wrong}/web-page")
            + _target("wants-https", f"{wrong}/wants-https")
            # Another PBX: a target of the same PBX and client id would share the token.
            + _target("bad-secret", f"{plain}/branch").replace(
                f'client_secret_env = "{SECRET_ENV}"', 'client_secret = "not-the-secret"'
            )
            + _target("self-signed", f"{tls}/hq")
            + _target("wrong-name", f"https://localhost:{tls_port}/hq", f'ca_file = "{cert}"')
            + _target("expired", f"{stale}/hq", f'ca_file = "{expired}"')
            + _target("no-tls", f"{plain.replace('http://', 'https://')}/hq"),
            encoding="utf-8",
        )
        config.chmod(0o600)
        done = await Cli(config, secret)("once")

    assert done.code == 1, str(done)
    summary = {
        line.split(":", 1)[0]: line.split(": ", 2)[2].rsplit(" (run ", 1)[0]
        for line in done.stderr.splitlines()
        if not line.startswith("{") and ": failed: " in line
    }
    for name, status in (("not-found", 404), ("not-implemented", 501), ("web-page", 200)):
        kind = {404: "not JSON", 501: "not JSON", 200: "an HTML page"}[status]
        assert summary[name] == (
            f"{name}: login: no 3CX token endpoint at {wrong}/{name}/connect/token "
            f"(HTTP {status}, {kind}); check the target's url: the PBX's base address, "
            "like https://pbx.example.com"
        )
    assert summary["wants-https"] == (
        f"wants-https: login: no 3CX token endpoint at {wrong}/wants-https/connect/token "
        "(HTTP 400, an HTML page); the server asks for HTTPS: the url must start with https://"
    )
    # A real refusal of the credentials keeps its hint.
    assert summary["bad-secret"] == (
        "bad-secret: login refused (invalid_client: The client credentials are invalid.): "
        "check client_id 'auditor' and its secret (API key) in the 3CX admin console"
    )
    host, port = "127.0.0.1", tls_port
    expected_tls = {
        "self-signed": (
            f"TLS failed with {host}:{port}: certificate verify failed: self-signed "
            "certificate; the PBX's certificate is self-signed: set ca_file to a copy of it"
        ),
        "wrong-name": (
            f"TLS failed with localhost:{port}: certificate verify failed: Hostname mismatch"
        ),
        "expired": "certificate verify failed: certificate has expired; the PBX's "
        "certificate has expired: renew it (or check this host's clock)",
        "no-tls": "wrong version number; the server does not speak TLS on this port: does "
        "the url need http://, or another port?",
    }
    for name, part in expected_tls.items():
        assert summary[name].startswith(f"{name}: login: "), summary[name]
        assert part in summary[name], summary[name]
    assert "put a name it is issued for in url" in summary["wrong-name"]
    assert set(summary) == {*expected_tls, "not-found", "not-implemented", "web-page"} | {
        "wants-https",
        "bad-secret",
    }
    # None of these was tried twice: retrying cannot help any of them.
    logs = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert not [line for line in logs if line.get("event") == "xapi.retry"], logs
