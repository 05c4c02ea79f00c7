"""A PBX's hostile strings reach every sink as inert text.

A simulated PBX, served here, lists failover scripts named to attack whatever shows them:
HTML (``<img src=x onerror=alert(1)>.sh``), a spreadsheet formula, terminal escapes with a
bidirectional override, and rich's console markup; later it answers with an OData error
message carrying terminal escapes. The real daemon (``3cx-auditor run``, a subprocess, with
console log lines) audits it and delivers the alerts to a webhook, an Alertmanager, Apprise
JSON services that take HTML and Markdown, and Apprise e-mail to a real SMTP server
(aiosmtpd), all served here. Afterwards the CLI exports the record (JSON, CSV, HTML) and
prints the history as a table. Each output is checked in the form its reader gives it
meaning: HTML parsed, Markdown rendered, CSV read as a spreadsheet reads it.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import email
import email.policy
import fcntl
import io
import json
import os
import pty
import re
import socket
import struct
import subprocess
import sys
import termios
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session
from markdown_it import MarkdownIt

from auditor.simulator import Simulator, pbx_url, serve
from tests.clirun import Cli
from tests.conftest import DaemonSpawner, daemon_config

TARGET = "pbx-0001"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"hostile-strings-test-secret-32by").decode()

IMG = "<img src=x onerror=alert(1)>.sh"
FORMULA = '=1+cmd|"calc"!A0&HYPERLINK("https:evil.example";"open").sh'
ESCAPES = "red\x1b[31m\x1b]0;pwned\x07\u202ehs.exe"
MARKUP = "[bold red]alarm[link=mailto:x@evil.example]click.sh"
ODATA = "\x1b[2J\x1b]0;pwned\x07 <b>refused</b>"
ADDED = (FORMULA, ESCAPES, MARKUP)
# Terminal escapes and controls, which no output may carry raw.
RAW_CONTROLS = ("\x1b", "\x07", "\u202e", "\x9b")


def shown(text: str) -> str:
    """How a one-line text output shows ``text``: what is not printable as an escape."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def as_text(html: str) -> str:
    """What a browser shows of ``html``'s text (tags left as they are)."""
    return unescape(html).replace("\xa0", " ")


class Elements(HTMLParser):
    """The names of the elements of an HTML text, as a browser would make them."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


@dataclass
class Receivers:
    """What the HTTP receivers and the SMTP server got."""

    webhook: list[dict[str, Any]] = field(default_factory=list)
    alertmanager: list[dict[str, Any]] = field(default_factory=list)
    apprise: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    mails: list[EmailMessage] = field(default_factory=list)

    def webhook_kinds(self) -> list[tuple[str, str | None]]:
        return [(a["kind"], a["key"]) for a in self.webhook]


class _Mailbox:
    def __init__(self, into: list[EmailMessage]) -> None:
        self.into = into

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.into.append(message)
        return "250 OK"


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Receivers, int, int]]:
    got = Receivers()

    async def webhook(request: web.Request) -> web.Response:
        got.webhook.append(await request.json())
        return web.Response(status=204)

    async def alertmanager(request: web.Request) -> web.Response:
        got.alertmanager.extend(await request.json())
        return web.json_response({})

    async def apprise(request: web.Request) -> web.Response:
        got.apprise[request.match_info["format"]].append(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", webhook)
    app.router.add_post("/api/v2/alerts", alertmanager)
    app.router.add_post("/notify/{format}", apprise)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(
        lambda: SMTP(_Mailbox(got.mails), hostname="127.0.0.1"), "127.0.0.1", 0
    )
    try:
        yield got, runner.addresses[0][1], smtp.sockets[0].getsockname()[1]
    finally:
        smtp.close()
        await runner.cleanup()


def sinks(http: int, smtp: int) -> str:
    mail = f"mailto://127.0.0.1:{smtp}?from=auditor@example.com&to=ops@example.com&mode=insecure"
    return f"""
[[alerts.webhook]]
name = "hook"
url = "http://127.0.0.1:{http}/hook"
secret = "{WEBHOOK_SECRET}"

[[alerts.alertmanager]]
name = "am"
url = "http://127.0.0.1:{http}"

[[alerts.apprise]]
name = "chat"
urls = [
  "json://127.0.0.1:{http}/notify/html?format=html",
  "json://127.0.0.1:{http}/notify/markdown?format=markdown",
]

# E-mail to a real SMTP server, as HTML (the service's default) and as text; only for the
# removed script, as each e-mail takes a while.
[[alerts.apprise]]
name = "mail"
urls = ["{mail}", "{mail}&format=html"]
kinds = ["script.removed"]
"""


def on_a_terminal(cli: Cli, *args: str) -> str:
    """What the command writes to a terminal (a pseudo-terminal read here)."""
    controller, terminal = pty.openpty()
    # Wide enough that no name is folded over two lines.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 400, 0, 0))
    env = {**cli.env, "TERM": "xterm"}
    command = [sys.executable, "-m", "auditor", "--config", str(cli.config), *args]
    with subprocess.Popen(command, stdout=terminal, stderr=subprocess.DEVNULL, env=env) as proc:
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the command has closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0
    os.close(controller)
    return b"".join(chunks).decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_hostile_strings_are_inert_in_every_sink(
    tmp_path: Path, receivers: tuple[Receivers, int, int], spawn_daemon: DaemonSpawner
) -> None:
    got, http_port, smtp_port = receivers
    sim = Simulator.fleet(1, scripts=3)
    pbx = sim[TARGET]
    pbx.add_script(IMG)
    api_port = free_port()
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    async with serve(sim) as base:
        config = daemon_config(
            tmp_path / "auditor.toml",
            database=database,
            targets=[(TARGET, pbx_url(base, TARGET))],
            listen=f"127.0.0.1:{api_port}",
            extra=sinks(http_port, smtp_port),
        )
        daemon = await spawn_daemon(config, env={"AUDITOR_LOG__FORMAT": "console"})

        def logged(event: str) -> bool:
            return any(event in line.get("text", "") for line in daemon.logs)

        await daemon.until(lambda: logged("audit.baseline"), "the baseline")
        for name in ADDED:
            pbx.add_script(name)
        pbx.remove_script(IMG)
        await daemon.until(
            lambda: len(got.webhook) >= 4, "the script alerts at the webhook", within=90
        )
        pbx.add_fault("status", endpoint="scripts", status=400, message=ODATA)
        await daemon.until(
            lambda: any(a["kind"] == "audit.failed" for a in got.webhook),
            "the failed audit at the webhook",
            within=90,
        )
        await daemon.until(lambda: len(got.mails) >= 2, "the e-mails", within=120)
        await daemon.until(
            lambda: len(got.alertmanager) >= 5 and sum(map(len, got.apprise.values())) >= 10,
            "every alert at every sink",
            within=90,
        )
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://127.0.0.1:{api_port}/feed.atom") as answer,
        ):
            feed = await answer.text()
        assert await daemon.stop() == 0

    # The webhook and the daemon's own alert lines are JSON: every string exact.
    by_key = {a["key"]: a for a in got.webhook if a["kind"].startswith("script.")}
    assert sorted(by_key) == sorted((*ADDED, IMG))
    assert by_key[IMG]["kind"] == "script.removed"
    assert {a["key"] for a in daemon.alerts if a["kind"].startswith("script.")} == set(by_key)
    # Messages are one line of text, each foreign character shown as an escape.
    for name, alert in by_key.items():
        assert f"'{shown(name)}'" in alert["message"]
        assert alert["message"].isprintable(), alert["message"]
    (failed,) = [a for a in got.webhook if a["kind"] == "audit.failed"]
    assert shown(ODATA) in failed["message"]
    assert failed["message"].isprintable()

    # Alertmanager: labels keep the exact identity; annotations are printable text.
    for posted in got.alertmanager:
        annotations = posted["annotations"]
        assert annotations["summary"].isprintable(), annotations
        assert all(line.isprintable() for line in annotations["description"].split("\n"))
    assert {p["labels"].get("key") for p in got.alertmanager} >= set(by_key)

    # Apprise services that take HTML and Markdown get the text escaped for them: no element
    # comes out of a PBX's string, once the HTML is parsed or the Markdown rendered.
    for sent in got.apprise["html"]:
        assert set(Elements(sent["message"]).tags) <= {"br"}, sent["message"]
    assert any(IMG in as_text(s["message"]) for s in got.apprise["html"])
    markdown = MarkdownIt("commonmark")
    for sent in got.apprise["markdown"]:
        rendered = markdown.render(sent["message"])
        assert set(Elements(rendered).tags) <= {"p", "br"}, rendered
        assert not any(c in sent["message"] for c in RAW_CONTROLS)
    assert any(IMG in as_text(markdown.render(s["message"])) for s in got.apprise["markdown"])

    # E-mail: the HTML part, when there is one, holds the name as text, never as an element.
    htmls = [
        part.get_content()
        for mail in got.mails
        for part in mail.walk()
        if part.get_content_type() == "text/html"
    ]
    assert htmls, "the e-mail with format=html has an HTML part"
    for html in htmls:
        assert "img" not in Elements(html).tags, html
        assert IMG in as_text(html)
    texts = [
        p.get_content() for m in got.mails for p in m.walk() if p.get_content_type() == "text/plain"
    ]
    assert any(IMG in text for text in texts)

    # The Atom feed: the entry HTML is escaped, titles are printable text, XML carries no
    # terminal escape.
    assert "<img" not in feed
    assert not any(c in feed for c in RAW_CONTROLS)
    assert shown(ESCAPES) in feed

    # Console log lines show the PBX's error text, inert.
    text = "\n".join(line.get("text", "") for line in daemon.logs)
    assert not any(c in text for c in RAW_CONTROLS), text
    assert any(
        "audit.not_complete" in line.get("text", "") and "pwned" in line["text"]
        for line in daemon.logs
    )

    # The record, handed over by the CLI.
    cli = Cli(config, WEBHOOK_SECRET)
    cli.env["COLUMNS"] = "400"
    exported = json.loads((await cli.ok("export", "--format", "json")).stdout)
    assert {c["key"] for c in exported["changes"]} >= {*ADDED, IMG}  # exact
    rows = list(csv.DictReader(io.StringIO((await cli.ok("export", "--format", "csv")).stdout)))
    cells = {row["key"] for row in rows}
    # A spreadsheet reads a cell starting with "'" as text; removing that "'" gives the value.
    assert "'" + FORMULA in cells
    assert FORMULA not in cells
    assert {ESCAPES, MARKUP, IMG} <= cells
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    html = (await cli.ok("export", "--format", "html")).stdout
    assert "img" not in Elements(html).tags
    assert not any(c in html for c in RAW_CONTROLS)
    lines = (await cli.ok("history")).stdout
    assert shown(ESCAPES) in lines
    assert not any(c in lines for c in RAW_CONTROLS)
    # On a terminal, a table: rich's markup in a name is shown, not acted on; terminal
    # escapes are shown escaped. Rich's own escapes (bold headers) are its SGR sequences.
    table = await asyncio.to_thread(on_a_terminal, cli, "history")
    assert MARKUP in table
    assert shown(ESCAPES) in table
    assert not any(c in re.sub(r"\x1b\[[0-9;]*m", "", table) for c in RAW_CONTROLS), table
