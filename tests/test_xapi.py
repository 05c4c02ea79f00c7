"""The XAPI client against the built-in simulator (and a tiny server of its own), over HTTP.

Every expected failure goes through :meth:`Hq.failure` or :func:`assert_clean`, which check
that neither the client secret nor any token the PBX minted appears in the error's text.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog
from aiohttp import web
from pydantic import SecretStr

from auditor import __version__
from auditor.config import TargetSettings
from auditor.errors import (
    AuthError,
    BadQueryError,
    BadResponseError,
    IncompleteListingError,
    QueryError,
    SourceError,
    UnavailableError,
)
from auditor.logs import configure
from auditor.simulator import Pbx, RequestRecord, Simulator, pbx_url, serve, tls_context
from auditor.simulator.pbx import DownMode
from auditor.xapi import TokenCache, XapiClient

SECRET = "Sx9-client-secret-7Qm2"
WRONG_SECRET = "Wr0ng-secret-Zt5"
E = TypeVar("E", bound=BaseException)

# A deprecated call in the client would break on the next release of its dependency.
pytestmark = pytest.mark.filterwarnings("error::DeprecationWarning")


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


@pytest.fixture
async def hq() -> AsyncIterator[Hq]:
    async with served() as running:
        yield running


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """structlog output of the test, as JSON lines (configured before any client is made)."""
    stream = io.StringIO()
    configure("debug", "json", stream=stream)
    try:
        yield stream
    finally:
        structlog.reset_defaults()


def log_events(stream: io.StringIO) -> list[dict[str, Any]]:
    # Under journald each line starts with a "<N>" priority prefix.
    return [json.loads(re.sub(r"^<\d>", "", line)) for line in stream.getvalue().splitlines()]


# -- paging ----------------------------------------------------------------------------------


async def test_pages_through_1000_scripts_with_one_login() -> None:
    async with served(scripts=1000) as hq, hq.client() as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == hq.pbx.items()
        assert len(listing.items) == 1000
        assert (listing.pages, listing.reported_count, listing.relists, listing.top) == (
            10,
            1000,
            0,
            100,
        )
        assert hq.pbx.stats.logins == 1
        assert client.stats.logins == 1
        assert hq.pbx.stats.max_top == 100
        queries = [r.query for r in hq.listing_requests()]
        assert queries == [
            {"$top": "100", "$skip": str(skip), "$count": "true"} for skip in range(0, 1000, 100)
        ]
        assert all(r.status == 200 for r in hq.listing_requests())


async def test_a_pbx_limit_below_page_size_makes_the_client_continue_with_that_limit() -> None:
    async with served(scripts=1000, max_top=40) as hq, hq.client() as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == hq.pbx.items()
        assert (listing.top, listing.pages, listing.reported_count) == (40, 25, 1000)
        first, *rest = hq.listing_requests()
        assert (first.query["$top"], first.query["$skip"], first.status) == ("100", "0", 400)
        assert [(r.query["$top"], r.query["$skip"], r.status) for r in rest] == [
            ("40", str(skip), 200) for skip in range(0, 1000, 40)
        ]
        # The refused $top is counted too: the client sent 100, never more.
        assert hq.pbx.stats.max_top == 100
        assert hq.pbx.stats.logins == 1


async def test_a_smaller_page_size_ends_on_a_short_page_without_an_extra_request() -> None:
    async with served(scripts=95) as hq, hq.client(page_size=30) as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == hq.pbx.items()
        assert hq.skips() == [0, 30, 60, 90]
        assert {r.query["$top"] for r in hq.listing_requests()} == {"30"}
        assert listing.pages == 4


async def test_an_empty_listing_is_complete_after_one_page() -> None:
    async with served(scripts=0) as hq, hq.client() as client:
        listing = await client.list_failover_scripts()

        assert (listing.items, listing.pages, listing.reported_count) == ((), 1, 0)


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


async def test_short_pages_advance_skip_by_the_items_received() -> None:
    plain = PlainPbx(scripts=250, page_cap=30)
    async with served_plain(plain) as url, make_client(make_target(url)) as client:
        listing = await client.list_failover_scripts()

    assert [item["Filename"] for item in listing.items] == [
        f"script-{n:04d}.sh" for n in range(250)
    ]
    assert [int(s.query["$skip"]) for s in plain.listing()] == list(range(0, 250, 30))
    assert {s.query["$top"] for s in plain.listing()} == {"100"}
    assert (listing.pages, listing.reported_count) == (9, 250)


async def test_without_a_count_the_client_pages_until_an_empty_page() -> None:
    plain = PlainPbx(scripts=250, page_cap=30, count=False)
    async with served_plain(plain) as url, make_client(make_target(url)) as client:
        listing = await client.list_failover_scripts()

    assert len(listing.items) == 250
    assert [int(s.query["$skip"]) for s in plain.listing()] == [*range(0, 250, 30), 250]
    assert (listing.pages, listing.reported_count) == (10, None)


async def test_request_headers() -> None:
    plain = PlainPbx(scripts=5)
    async with served_plain(plain) as url, make_client(make_target(url)) as client:
        await client.list_failover_scripts()
        await client.get_failover_settings()

    login, *calls = plain.seen
    assert (login.method, login.path) == ("POST", "/pbx/connect/token")
    assert login.form == {
        "client_id": "auditor",
        "client_secret": SECRET,
        "grant_type": "client_credentials",
    }
    assert "Authorization" not in login.headers
    assert [c.method for c in calls] == ["GET", "GET"]
    for request in plain.seen:
        assert request.headers["Accept"] == "application/json"
        assert request.headers["User-Agent"] == f"3cx-auditor/{__version__}"
    for call in calls:
        assert call.headers["Authorization"] == f"Bearer {plain.tokens[0]}"
    assert len(plain.tokens) == 1


async def test_settings_drop_odata_annotations_and_keep_unknown_fields() -> None:
    plain = PlainPbx()
    async with served_plain(plain) as url, make_client(make_target(url)) as client:
        settings = await client.get_failover_settings()

    assert settings == {
        "Mode": "Passive",
        "Interval": 30,
        "FutureField": {"added": "in a later 3CX build"},
    }


async def test_settings_from_the_simulator(hq: Hq) -> None:
    async with hq.client() as client:
        settings = await client.get_failover_settings()

    assert settings == hq.pbx.settings
    assert not any(key.startswith("@") for key in settings)


# -- a listing that shifts ---------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, -1], ids=["inserted", "removed"])
async def test_a_listing_that_shifted_is_listed_again(hq: Hq, count: int) -> None:
    hq.pbx.add_fault("shift", endpoint="scripts", skip=100, count=count, times=1)
    async with hq.client() as client:
        listing = await client.list_failover_scripts()

    assert len(hq.pbx) == 250 + count
    assert list(listing.items) == hq.pbx.items()
    assert (listing.relists, listing.reported_count) == (1, 250 + count)
    assert hq.skips().count(0) == 2


async def test_a_listing_that_keeps_shifting_is_incomplete(hq: Hq) -> None:
    hq.pbx.add_fault("shift", endpoint="scripts", skip=100, count=1, times=None)
    async with hq.client(max_relist=2) as client:
        error = await hq.failure(client.list_failover_scripts(), IncompleteListingError)

    assert "shifted while paging 3 times" in str(error)
    assert hq.skips().count(0) == 3
    assert hq.pbx.stats.logins == 1


@pytest.mark.parametrize("mode", ["count", "no_count"])
async def test_a_pbx_ignoring_skip_is_incomplete_at_once(hq: Hq, mode: str) -> None:
    """Every page is the first one: a page of keys already listed ends each attempt (without
    @odata.count paging would otherwise go on until listing_timeout)."""
    hq.pbx.add_fault("ignore_skip", endpoint="scripts", mode=mode, times=None)
    async with hq.client(max_relist=2, listing_timeout="60s") as client:
        error = await hq.failure(client.list_failover_scripts(), IncompleteListingError)

    assert "shifted while paging 3 times" in str(error)
    assert "page 2 held only keys already listed" in str(error)
    assert "ignoring $skip" in str(error)
    # Two pages per attempt, three attempts, one login.
    assert hq.skips() == [0, 100] * 3
    assert hq.pbx.stats.logins == 1


# -- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried(hq: Hq, status: int) -> None:
    hq.pbx.add_fault("status", endpoint="scripts", skip=100, status=status, times=2)
    async with hq.client(retries=2) as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == hq.pbx.items()
        assert hq.at_skip(100) == [status, status, 200]
        assert client.stats.retries == 2


async def test_a_persistent_500_on_page_3_names_the_pbx_and_the_page(hq: Hq) -> None:
    hq.pbx.add_fault("status", endpoint="scripts", skip=200, status=500, times=None)
    async with hq.client(retries=2) as client:
        error = await hq.failure(client.list_failover_scripts(), UnavailableError)

    assert str(error).startswith("hq, page 3: ")
    assert "HTTP 500" in str(error)
    assert (error.page, error.status) == (3, 500)
    assert hq.skips() == [0, 100, 200, 200, 200]


async def test_retry_after_is_honoured(hq: Hq, log_stream: io.StringIO) -> None:
    hq.pbx.add_fault("status", endpoint="scripts", skip=100, status=429, retry_after=1, times=1)
    async with hq.client() as client:
        listing = await client.list_failover_scripts()

    assert len(listing.items) == 250
    assert hq.at_skip(100) == [429, 200]
    retries = [e for e in log_events(log_stream) if e["event"] == "xapi.retry"]
    # Backoff alone would wait at most 0.05s here.
    assert [e["wait_s"] for e in retries] == [1.0]


async def test_retry_after_is_capped_by_max_retry_after(hq: Hq, log_stream: io.StringIO) -> None:
    hq.pbx.add_fault("status", endpoint="scripts", skip=0, status=503, retry_after=3600, times=1)
    async with make_client(hq.target(), max_retry_after=0.2) as client:
        await client.list_failover_scripts()

    retries = [e for e in log_events(log_stream) if e["event"] == "xapi.retry"]
    assert [e["wait_s"] for e in retries] == [0.2]


async def test_a_persistent_429_is_unavailable(hq: Hq) -> None:
    hq.pbx.add_fault("status", endpoint="scripts", status=429, retry_after=0, times=None)
    async with hq.client(retries=1) as client:
        error = await hq.failure(client.list_failover_scripts(), UnavailableError)

    assert (error.status, error.page) == (429, 1)
    assert hq.at_skip(0) == [429, 429]


async def test_a_login_answered_503_is_retried(hq: Hq) -> None:
    hq.pbx.add_fault("status", endpoint="token", status=503, times=1)
    async with hq.client() as client:
        await client.list_failover_scripts()

    assert hq.pbx.stats.logins == 2
    assert hq.pbx.stats.tokens_issued == 1


async def test_dropped_connections_are_retried(hq: Hq) -> None:
    # aiohttp resends a GET once by itself after a disconnect: two drops reach the client once.
    hq.pbx.add_fault("drop", endpoint="scripts", skip=100, times=2)
    async with hq.client() as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == hq.pbx.items()
        assert hq.at_skip(100) == [None, None, 200]
        assert client.stats.retries == 1


async def test_persistently_dropped_connections_are_unavailable(hq: Hq) -> None:
    hq.pbx.add_fault("drop", endpoint="scripts", skip=100, times=None)
    async with hq.client(retries=1) as client:
        error = await hq.failure(client.list_failover_scripts(), UnavailableError)

    assert str(error) == "hq, page 2: GetFailoverScripts $skip=100: connection dropped by the PBX"


async def test_a_truncated_body_is_retried(hq: Hq) -> None:
    hq.pbx.add_fault("truncate", endpoint="scripts", skip=100, mode="length", times=1)
    async with hq.client() as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == hq.pbx.items()
        assert client.stats.retries == 1
        assert hq.at_skip(100) == [200, 200]


async def test_a_body_that_stays_truncated_is_a_bad_response(hq: Hq) -> None:
    hq.pbx.add_fault("truncate", endpoint="scripts", skip=100, mode="length", times=None)
    async with hq.client(retries=2) as client:
        error = await hq.failure(client.list_failover_scripts(), BadResponseError)

    assert str(error).startswith("hq, page 2: ")
    assert "truncated body" in str(error)
    assert len(hq.at_skip(100)) == 3


@pytest.mark.parametrize("action", ["truncate", "garbage"])
async def test_a_200_that_is_not_json_is_a_bad_response_without_retry(hq: Hq, action: str) -> None:
    # "cut": a complete 200 whose body is half a JSON document.
    mode = {"mode": "cut"} if action == "truncate" else {}
    hq.pbx.add_fault(action, endpoint="scripts", skip=100, times=None, **mode)
    async with hq.client(retries=3) as client:
        error = await hq.failure(client.list_failover_scripts(), BadResponseError)

        assert str(error).startswith("hq, page 2: GetFailoverScripts $skip=100: answer is not JSON")
        assert error.page == 2
        assert hq.at_skip(100) == [200]
        assert client.stats.retries == 0
    if action == "garbage":
        assert "Bad Gateway" in str(error)


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("value", "'value' is a dict, not a list"),
        ("items", "item 100 is a str, not an object"),
        ("filename", "item 100 has no string 'Filename'"),
        ("count", "'@odata.count' is '250', not an integer"),
        ("missing", "answer has no 'value' list"),
    ],
)
async def test_wrong_types_are_bad_responses(hq: Hq, mode: str, why: str) -> None:
    hq.pbx.add_fault("wrong_types", endpoint="scripts", skip=100, mode=mode, times=None)
    async with hq.client() as client:
        error = await hq.failure(client.list_failover_scripts(), BadResponseError)

    assert str(error) == f"hq, page 2: GetFailoverScripts: {why}"
    assert hq.at_skip(100) == [200]


async def test_settings_of_the_wrong_type_are_a_bad_response(hq: Hq) -> None:
    hq.pbx.add_fault("wrong_types", endpoint="settings")
    async with hq.client() as client:
        error = await hq.failure(client.get_failover_settings(), BadResponseError)

    assert str(error) == "hq: GetBackupFailoverSettings: answer is a JSON list, not an object"


async def test_a_login_answer_without_a_token_is_a_bad_response(hq: Hq) -> None:
    hq.pbx.add_fault("wrong_types", endpoint="token")
    async with hq.client() as client:
        error = await hq.failure(client.list_failover_scripts(), BadResponseError)

    assert str(error) == "hq: login answer has no access_token"
    assert hq.pbx.stats.logins == 1


# -- tokens ------------------------------------------------------------------------------------


async def test_a_token_expiring_mid_listing_costs_one_login(hq: Hq) -> None:
    hq.pbx.add_fault("expire_token", endpoint="scripts", skip=100, times=1)
    async with hq.client() as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == hq.pbx.items()
        assert hq.at_skip(100) == [401, 200]
        assert hq.pbx.stats.logins == 2
        assert (client.stats.logins, client.stats.relogins) == (2, 1)


async def test_a_second_401_is_an_auth_error(hq: Hq) -> None:
    hq.pbx.add_fault("expire_token", endpoint="scripts", skip=100, times=2)
    async with hq.client() as client:
        error = await hq.failure(client.list_failover_scripts(), AuthError)

    assert (error.page, error.status) == (2, 401)
    assert "another client may be logging in with client id 'auditor'" in str(error)
    assert hq.at_skip(100) == [401, 401]
    assert hq.pbx.stats.logins == 2


async def test_clients_sharing_a_token_cache_log_in_once(hq: Hq) -> None:
    tokens = TokenCache()
    async with hq.client(tokens) as first, hq.client(tokens) as second:
        one, two = await asyncio.gather(
            first.list_failover_scripts(), second.list_failover_scripts()
        )

        assert list(one.items) == list(two.items) == hq.pbx.items()
        assert hq.pbx.stats.logins == 1
        assert first.stats.logins + second.stats.logins == 1
        assert first.stats.relogins == second.stats.relogins == 0


async def test_clients_with_their_own_caches_break_each_other_but_recover(hq: Hq) -> None:
    # One live token per client id: each login revokes the other client's token, so every
    # request after the other's login is answered 401 once and costs a login. Both finish,
    # at the price of many logins: share one TokenCache instead.
    async with hq.client() as first, hq.client() as second:
        await first.list_failover_scripts()
        await second.list_failover_scripts()
        again = await first.list_failover_scripts()

        assert list(again.items) == hq.pbx.items()
        assert (first.stats.logins, first.stats.relogins) == (2, 1)
        assert hq.pbx.stats.logins == 3

        one, two = await asyncio.gather(
            first.list_failover_scripts(), second.list_failover_scripts()
        )
        assert list(one.items) == list(two.items) == hq.pbx.items()
        assert first.stats.relogins > 1
        assert second.stats.relogins >= 1
        assert hq.pbx.stats.logins > 4


async def test_a_wrong_secret_is_an_auth_error_and_not_retried(hq: Hq) -> None:
    async with hq.client(client_secret=SecretStr(WRONG_SECRET), retries=4) as client:
        error = await hq.failure(client.list_failover_scripts(), AuthError)

    assert str(error).startswith("hq: login refused (invalid_client: ")
    assert "client_id 'auditor'" in str(error)
    assert (hq.pbx.stats.logins, hq.pbx.stats.failed_logins) == (1, 1)
    assert hq.listing_requests() == []


async def test_clients_waiting_on_a_refused_login_do_not_log_in_again(hq: Hq) -> None:
    tokens = TokenCache()
    wrong = SecretStr(WRONG_SECRET)
    async with (
        hq.client(tokens, client_secret=wrong) as one,
        hq.client(tokens, client_secret=wrong) as two,
    ):
        outcomes = await asyncio.gather(
            one.list_failover_scripts(), two.get_failover_settings(), return_exceptions=True
        )

    assert [type(o) for o in outcomes] == [AuthError, AuthError]
    assert_clean(repr(outcomes), hq.pbx.issued)
    assert str(outcomes[0]) == str(outcomes[1])
    assert hq.pbx.stats.failed_logins == 1


# -- a PBX that is down ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_closed_port_is_unavailable_after_retries() -> None:
    port = free_port()
    async with make_client(make_target(f"http://127.0.0.1:{port}/hq", retries=2)) as client:
        with pytest.raises(UnavailableError) as caught:
            await client.list_failover_scripts()

        error = caught.value
        assert_clean(str(error), [])
        assert str(error).startswith(f"hq: login: cannot connect to 127.0.0.1:{port}")
        assert (client.stats.requests, client.stats.retries) == (3, 2)


@pytest.mark.parametrize(
    ("mode", "why", "status"),
    [
        ("drop", "hq: login: connection dropped by the PBX", None),
        ("status", "hq: login answered HTTP 503", 503),
    ],
)
async def test_a_pbx_that_is_down(hq: Hq, mode: DownMode, why: str, status: int | None) -> None:
    hq.pbx.set_down(True, mode=mode)
    async with hq.client(retries=2) as client:
        error = await hq.failure(client.list_failover_scripts(), UnavailableError)

    assert str(error) == why
    assert error.status == status
    assert hq.pbx.stats.by_endpoint["token"] == 3


async def test_a_pbx_going_down_mid_listing_names_the_page(hq: Hq) -> None:
    async with hq.client(retries=1) as client:
        await client.list_failover_scripts()
        hq.pbx.set_down(True, mode="status")
        error = await hq.failure(client.list_failover_scripts(), UnavailableError)

    assert str(error).startswith("hq, page 1: GetFailoverScripts: HTTP 503")


# -- query options -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["argument", "target", "single page"])
async def test_a_bad_filter_is_refused_before_any_request(hq: Hq, where: str) -> None:
    bad = "Filename eq 'a' and"
    async with hq.client(filter=bad if where == "target" else None) as client:
        work = (
            client.get_failover_scripts(top=10, filter=bad)
            if where == "single page"
            else client.list_failover_scripts(filter=bad if where == "argument" else None)
        )
        with pytest.raises(QueryError, match=r"^\$filter: ") as caught:
            await work

    assert_clean(str(caught.value), hq.pbx.issued)
    assert hq.pbx.stats.requests_total == 0


async def test_a_filter_the_pbx_refuses_keeps_its_message(hq: Hq) -> None:
    async with hq.client() as client:
        error = await hq.failure(
            client.list_failover_scripts(filter="matchesPattern(Filename,'^flush')"),
            BadQueryError,
        )

    assert str(error).startswith(
        "hq, page 1: GetFailoverScripts: the PBX refused the query: "
        "The query specified in the URI is not valid. $filter: matchesPattern()"
    )
    assert error.status == 400
    assert hq.at_skip(0) == [400]


async def test_search_and_filter_reach_the_pbx_unchanged() -> None:
    names = ["a b.sh", "x & y+z.sh", "50% #1.sh", "plain.sh"]
    async with served(scripts=0) as hq:
        for name in names:
            hq.pbx.add_script(name)
        async with hq.client() as client:
            found = await client.list_failover_scripts(search="x & y+z")
            filtered = await client.list_failover_scripts(
                filter="Filename eq '50% #1.sh' or Filename eq 'a b.sh'"
            )

    assert [i["Filename"] for i in found.items] == ["x & y+z.sh"]
    assert [i["Filename"] for i in filtered.items] == ["50% #1.sh", "a b.sh"]
    first, second = hq.listing_requests()
    assert first.query["$search"] == '"x & y+z"'
    assert second.query["$filter"] == "Filename eq '50% #1.sh' or Filename eq 'a b.sh'"


async def test_one_page_with_every_option(hq: Hq) -> None:
    async with hq.client() as client:
        page = await client.get_failover_scripts(
            top=5, skip=10, search="flush arp", filter="endswith(Filename,'.sh')", count=True
        )

    (request,) = hq.listing_requests()
    assert request.query == {
        "$top": "5",
        "$skip": "10",
        "$search": '"flush arp"',
        "$filter": "endswith(Filename,'.sh')",
        "$count": "true",
    }
    assert (page.top, page.skip, page.count, page.items) == (5, 10, 0, ())


# -- TLS and time limits -----------------------------------------------------------------------


async def test_tls_with_a_self_signed_certificate(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    pbx = RecordingPbx("hq", scripts=3)
    async with serve(Simulator([pbx]), ssl_context=tls_context(cert, key)) as base:
        hq = Hq(base, pbx)
        assert hq.url.startswith("https://")
        async with hq.client(retries=3) as client:
            error = await hq.failure(client.list_failover_scripts(), UnavailableError)
            assert "TLS failed" in str(error)
            assert "ca_file" in str(error)
            # A certificate that does not verify fails the same way every time.
            assert client.stats.requests == 1
        assert pbx.stats.requests_total == 0

        async with hq.client(ca_file=cert) as client:
            assert len((await client.list_failover_scripts()).items) == 3
        async with hq.client(verify_tls=False) as client:
            assert len((await client.list_failover_scripts()).items) == 3


async def test_listing_timeout_bounds_the_whole_listing(hq: Hq) -> None:
    hq.pbx.add_fault("delay", endpoint="scripts", skip=100, seconds=10)
    async with hq.client(listing_timeout=timedelta(milliseconds=200)) as client:
        error = await hq.failure(client.list_failover_scripts(), UnavailableError)

    assert (
        str(error) == "hq: GetFailoverScripts: listing not finished within 0.2s (listing_timeout)"
    )


async def test_a_slow_answer_times_out_and_is_retried(hq: Hq) -> None:
    hq.pbx.add_fault("delay", endpoint="scripts", skip=100, seconds=10, times=1)
    async with hq.client(request_timeout=timedelta(milliseconds=200)) as client:
        listing = await client.list_failover_scripts()

        assert len(listing.items) == 250
        assert client.stats.retries == 1


async def test_a_closed_client_refuses_requests(hq: Hq) -> None:
    client = hq.client()
    await client.list_failover_scripts()
    await client.close()
    await client.close()
    error = await hq.failure(client.list_failover_scripts(), UnavailableError)

    assert str(error) == "hq: client is closed"


# -- secrets -----------------------------------------------------------------------------------


async def test_secret_and_token_echoed_by_the_pbx_are_scrubbed(hq: Hq) -> None:
    async with hq.client(retries=0) as client:
        await client.list_failover_scripts()
        token = hq.pbx.issued[-1]
        hq.pbx.add_fault(
            "status", endpoint="scripts", status=400, message=f"bad {SECRET} or {token}"
        )
        error = await hq.failure(client.list_failover_scripts(), BadQueryError)

    assert str(error) == "hq, page 1: GetFailoverScripts: the PBX refused the query: bad *** or ***"


async def test_no_secret_or_token_in_the_logs_of_a_troubled_listing(
    hq: Hq, log_stream: io.StringIO
) -> None:
    pbx = hq.pbx
    pbx.add_fault("status", endpoint="token", status=503, message=f"echo {SECRET}", times=1)
    pbx.add_fault("status", endpoint="scripts", skip=0, status=502, times=2)
    pbx.add_fault("drop", endpoint="scripts", skip=100, times=2)
    pbx.add_fault("expire_token", endpoint="scripts", skip=100, times=1)
    pbx.add_fault("truncate", endpoint="scripts", skip=200, times=1)
    pbx.add_fault(
        "status", endpoint="scripts", skip=200, status=500, message=f"x {SECRET}", times=1
    )
    async with hq.client(retries=4) as client:
        listing = await client.list_failover_scripts()

        assert list(listing.items) == pbx.items()
        events = log_events(log_stream)
        assert sum(e["event"] == "xapi.retry" for e in events) == client.stats.retries >= 5
        assert sum(e["event"] == "xapi.relogin" for e in events) == client.stats.relogins == 1
        assert len(pbx.issued) == 2
    assert_clean(log_stream.getvalue(), pbx.issued)
