"""Helpers for the XAPI client's tests: a simulated PBX that remembers the tokens it minted,
and a tiny server of our own for what the simulator does not show.

Every expected failure goes through :meth:`Hq.failure` or :func:`assert_clean`, which check
that neither the client secret nor any token the PBX minted appears in the error's text.
Holds no fixture (see conftest.py).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from aiohttp import web
from pydantic import SecretStr

from auditor.config import TargetSettings
from auditor.errors import SourceError
from auditor.simulator import Pbx, RequestRecord, Simulator, pbx_url, serve
from auditor.xapi.client import XapiClient
from auditor.xapi.tokens import TokenCache

SECRET = "Sx9-client-secret-7Qm2"
WRONG_SECRET = "Wr0ng-secret-Zt5"
E = TypeVar("E", bound=BaseException)


class RecordingPbx(Pbx):
    """A simulated PBX that remembers every token it minted, so tests can look for them."""

    def __init__(self, name: str, **options: Any) -> None:
        self.issued: list[str] = []
        super().__init__(name, client_secret=SECRET, **options)

    def issue_token(self, client_id: str | None = None) -> str:
        token = super().issue_token(client_id)
        self.issued.append(token)
        return token


def assert_clean(text: str, tokens: Iterable[str]) -> None:
    for secret in (SECRET, WRONG_SECRET, *tokens):
        assert secret not in text, "a secret or token leaked"


def make_target(url: str, **options: Any) -> TargetSettings:
    fields: dict[str, Any] = {
        "name": "hq",
        "url": url,
        "client_id": "auditor",
        "client_secret": SecretStr(SECRET),
        "retries": 2,
        "request_timeout": timedelta(seconds=5),
        "listing_timeout": timedelta(seconds=30),
    }
    fields.update(options)
    return TargetSettings(**fields)


def make_client(target: TargetSettings, tokens: TokenCache | None = None, **kw: Any) -> XapiClient:
    return XapiClient(target, tokens=tokens, backoff_initial=0.01, backoff_max=0.05, **kw)


@dataclass
class Hq:
    """The simulated PBX "hq", served over HTTP for one test."""

    base: str
    pbx: RecordingPbx

    @property
    def url(self) -> str:
        return pbx_url(self.base, "hq")

    def target(self, **options: Any) -> TargetSettings:
        return make_target(self.url, **options)

    def client(self, tokens: TokenCache | None = None, **options: Any) -> XapiClient:
        return make_client(self.target(**options), tokens)

    def listing_requests(self) -> list[RequestRecord]:
        return self.pbx.stats.for_endpoint("scripts")

    def skips(self) -> list[int]:
        return [int(r.query.get("$skip", "0")) for r in self.listing_requests()]

    def at_skip(self, skip: int) -> list[int | None]:
        """The statuses of the listing requests at one ``$skip`` (None: dropped)."""
        return [r.status for r in self.listing_requests() if r.query.get("$skip") == str(skip)]

    async def failure(self, work: Awaitable[object], kind: type[E]) -> E:
        with pytest.raises(kind) as caught:
            await work
        error = caught.value
        assert_clean(f"{error} {error!r}", self.pbx.issued)
        if isinstance(error, SourceError):
            assert error.target == "hq"
        return error


@asynccontextmanager
async def served(scripts: int = 250, **options: Any) -> AsyncIterator[Hq]:
    pbx = RecordingPbx("hq", scripts=scripts, seed=7, **options)
    async with serve(Simulator([pbx])) as base:
        yield Hq(base, pbx)


def log_events(stream: io.StringIO) -> list[dict[str, Any]]:
    # Under journald each line starts with a "<N>" priority prefix.
    return [json.loads(re.sub(r"^<\d>", "", line)) for line in stream.getvalue().splitlines()]


# -- a server of our own, for what the simulator does not show --------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class PlainPbx:
    """A minimal XAPI: sends pages of at most ``page_cap`` items whatever ``$top`` asks for,
    ``@odata.count`` only when ``count`` is on, and settings with a field the spec lacks.
    It records every request with its headers, which the simulator does not keep."""

    scripts: int = 250
    page_cap: int = 30
    count: bool = True
    seen: list[Seen] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        self.seen.append(
            Seen(request.method, request.path, dict(request.query), dict(request.headers), form)
        )
        if request.path == "/pbx/connect/token":
            self.tokens.append(f"plain-token-{len(self.tokens) + 1:04d}")
            return web.json_response({"access_token": self.tokens[-1], "expires_in": 3600})
        if request.headers.get("Authorization") != f"Bearer {self.tokens[-1]}":
            return web.json_response({"error": {"code": "", "message": "denied"}}, status=401)
        if request.path == "/pbx/xapi/v1/Backups/Pbx.GetBackupFailoverSettings()":
            return web.json_response(
                {
                    "@odata.context": "http://x/xapi/v1/$metadata#Pbx.BackupFailoverSettings",
                    "@odata.etag": 'W/"1"',
                    "Mode": "Passive",
                    "Interval": 30,
                    "FutureField": {"added": "in a later 3CX build"},
                }
            )
        skip = int(request.query.get("$skip", "0"))
        top = min(int(request.query.get("$top", "100")), self.page_cap)
        names = [f"script-{n:04d}.sh" for n in range(self.scripts)]
        body: dict[str, Any] = {"value": [{"Filename": n} for n in names[skip : skip + top]]}
        if self.count and request.query.get("$count") == "true":
            body["@odata.count"] = self.scripts
        return web.json_response(body)

    def listing(self) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith("GetFailoverScripts()")]


@asynccontextmanager
async def served_plain(plain: PlainPbx) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", plain.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/pbx"
    finally:
        await runner.cleanup()
