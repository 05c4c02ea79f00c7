"""The ops feed: ``/feed.atom`` read by a real feed parser, and ``/api/v1/alerts`` walked by
its cursor, over HTTP on 127.0.0.1 from a store filled by real audits.

One simulated PBX is audited through a baseline, changes (one script named with markup, an
ampersand and a control character, which XML cannot carry), a disconnection and the return;
every expected answer is read back from the store.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import feedparser
import pytest
from pydantic import SecretStr

from auditor.errors import ConfigError
from auditor.metrics import Metrics
from auditor.model import Alert, iso
from auditor.store import Store
from auditor.web.app import base_url, make_app, start_http
from auditor.web.feed import ATOM_CONTENT_TYPE, entry_id, entry_title, feed_id, render_feed
from auditor.web.state import ServiceState
from tests.recording import Plan, record_in_thread

TOKEN = "feed-token-0123456789"
ODD_NAME = '<img src="x" onerror="alert(1)"> & \x01 odd.sh'


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    database = tmp_path_factory.mktemp("feed") / "audit.db"
    record_in_thread(database, Plan(hq_scripts=6, branch_scripts=3, seeds=(3, 4), added=ODD_NAME))
    return database


@pytest.fixture
async def store(recording: Path, tmp_path: Path) -> AsyncIterator[Store]:
    for path in recording.parent.glob(recording.name + "*"):
        shutil.copy(path, tmp_path / path.name)
    opened = await Store.open(f"sqlite:///{tmp_path / recording.name}")
    try:
        yield opened
    finally:
        await opened.close()


@dataclass
class Served:
    url: str
    http: aiohttp.ClientSession

    async def get(self, path: str, **kwargs: Any) -> tuple[int, bytes, aiohttp.ClientResponse]:
        async with self.http.get(self.url + path, **kwargs) as response:
            return response.status, await response.read(), response


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve_app(store: Store) -> AsyncIterator[Serve]:
    runners = []
    async with aiohttp.ClientSession() as http:

        async def start(token: str | None = None, feed_instance: str | None = None) -> Served:
            app = make_app(
                store=store,
                state=ServiceState(),
                metrics=Metrics(),
                token=SecretStr(token) if token is not None else None,
                feed_instance=feed_instance,
            )
            runner = await start_http(app, "127.0.0.1:0")
            runners.append(runner)
            return Served(base_url(runner), http)

        try:
            yield start
        finally:
            for runner in runners:
                await runner.cleanup()


def parse(body: bytes) -> Any:
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    return parsed


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_the_feed_is_atom_with_one_entry_per_alert_newest_first(
    serve_app: Serve, store: Store
) -> None:
    served = await serve_app()
    alerts = newest_by_time(await store.reads.alert_events(limit=None))
    assert len(alerts) > 5
    assert len({a.kind for a in alerts}) >= 4

    status, body, response = await served.get("/feed.atom", params={"limit": "1000"})
    assert status == 200, body
    assert response.headers["Content-Type"] == ATOM_CONTENT_TYPE
    parsed = parse(body)

    entries = parsed.entries
    assert [e.id for e in entries] == [entry_id_of(parsed, a) for a in alerts]
    assert len({e.id for e in entries}) == len(entries)
    for entry, alert in zip(entries, alerts, strict=True):
        assert entry.title == entry_title(alert).replace("\x01", "\ufffd")
        assert when(entry.updated) == when(entry.published) == when(iso(alert.at))
        terms = {(t.scheme.rsplit(":", 1)[-1], t.term) for t in entry.tags}
        assert {
            ("kind", alert.kind),
            ("severity", alert.severity),
            ("status", alert.status),
            ("target", alert.target),
        } == terms
        assert entry.content[0].type == "text/html"
    times = [when(e.updated) for e in entries]
    assert times == sorted(times, reverse=True)

    feed = parsed.feed
    assert feed.id.startswith("tag:3cx-auditor,2026:db-")
    assert when(feed.updated) == times[0]
    assert feed.title == "3cx-auditor alerts"
    assert [link.href for link in feed.links if link.rel == "self"] == [
        served.url + "/feed.atom?limit=1000"
    ]


def newest_by_time(alerts: list[Alert]) -> list[Alert]:
    return sorted(alerts, key=lambda a: (a.at, a.id), reverse=True)


def entry_id_of(parsed: Any, alert: Alert) -> str:
    instance = parsed.feed.id.removeprefix("tag:3cx-auditor,2026:")
    return entry_id(instance, alert.id)


async def test_markup_and_control_characters_are_carried_as_text(
    serve_app: Serve, store: Store
) -> None:
    served = await serve_app()
    odd = [
        a
        for a in await store.reads.alert_events(limit=None, newest_first=True)
        if a.key == ODD_NAME
    ]
    assert [a.kind for a in odd] == ["script.added"]
    status, body, _ = await served.get("/feed.atom", params={"limit": "1000"})
    assert status == 200
    parsed = parse(body)
    entry = next(e for e in parsed.entries if e.id == entry_id_of(parsed, odd[0]))
    # A control character is shown as an escape, never carried into the XML.
    shown = ODD_NAME.replace("\x01", "\\u0001")
    assert entry.title == f"[{odd[0].severity}] script.added pbx-hq: {shown}"
    # type="html" content: the markup arrives escaped, as text of the HTML, never as an element.
    assert "&lt;img src=" in entry.content[0].value
    assert "<img" not in entry.content[0].value


async def test_ids_are_stable_and_the_etag_answers_304(serve_app: Serve, store: Store) -> None:
    served = await serve_app()
    _, first, response = await served.get("/feed.atom")
    _, second, _ = await served.get("/feed.atom")
    assert first == second
    parsed = parse(first)
    assert len(parsed.entries) == min(100, len(await store.reads.alert_events(limit=None)))
    etag = response.headers["ETag"]
    status, body, _ = await served.get("/feed.atom", headers={"If-None-Match": etag})
    assert (status, body) == (304, b"")

    # Another server on the same database publishes the same ids...
    again = await serve_app()
    _, third, _ = await again.get("/feed.atom")
    assert [e.id for e in parse(third).entries] == [e.id for e in parsed.entries]
    # ...and a configured instance name replaces the derived one.
    named = await serve_app(feed_instance="audit.example")
    _, fourth, _ = await named.get("/feed.atom", params={"limit": "3"})
    renamed = parse(fourth)
    assert renamed.feed.id == feed_id("audit.example")
    newest = newest_by_time(await store.reads.alert_events(limit=3, newest_first=True))
    assert [e.id for e in renamed.entries] == [entry_id("audit.example", a.id) for a in newest]


async def test_target_and_limit(serve_app: Serve, store: Store) -> None:
    served = await serve_app()
    for target in ("pbx-hq", "pbx-branch", "pbx-none"):
        expected = newest_by_time(
            await store.reads.alert_events(target, limit=2, newest_first=True)
        )
        status, body, _ = await served.get("/feed.atom", params={"target": target, "limit": "2"})
        assert status == 200
        parsed = parse(body)
        assert [e.id for e in parsed.entries] == [entry_id_of(parsed, a) for a in expected]
    status, body, _ = await served.get("/feed.atom", params={"target": "pbx-none"})
    assert parse(body).feed.updated == "1970-01-01T00:00:00.000Z"
    for params in ({"limit": "0"}, {"limit": "1001"}, {"since": "1d"}, {"token": TOKEN}):
        status, body, _ = await served.get("/feed.atom", params=params)
        assert status == 400, (params, body)


async def test_the_token_guards_the_feed_and_is_never_taken_from_the_query(
    serve_app: Serve,
) -> None:
    served = await serve_app(token=TOKEN)
    status, _, response = await served.get("/feed.atom")
    assert status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = await served.get("/feed.atom", params={"token": TOKEN})
    assert status == 401
    status, _, _ = await served.get("/feed.atom", headers={"Authorization": "Bearer wrong"})
    assert status == 401
    status, body, _ = await served.get("/feed.atom", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    parse(body)
    # The probes stay open.
    assert (await served.get("/livez"))[0] == 200


async def test_alerts_api_cursor_walk_since(serve_app: Serve, store: Store) -> None:
    served = await serve_app(token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    every = await store.reads.alert_events(limit=None)
    cut = every[len(every) // 2].at
    expected = [a.as_json() for a in every if a.at >= cut]
    assert 2 < len(expected) < len(every)

    seen: list[Any] = []
    params = {"since": iso(cut), "limit": "2"}
    pages = 0
    while True:
        async with served.http.get(
            served.url + "/api/v1/alerts", params=params, headers=auth
        ) as response:
            assert response.status == 200
            page = await response.json()
        pages += 1
        seen.extend(page["items"])
        if page["next"] is None:
            break
        params = {"since": iso(cut), "limit": "2", "cursor": page["next"]}
    assert seen == expected
    assert pages >= len(expected) // 2


def test_render_feed_is_well_formed_for_any_text() -> None:
    alert = Alert(
        id=7,
        fingerprint="f" * 32,
        kind="script.changed",
        severity="warning",
        status="firing",
        target="pbx\x0b]]>",
        collection="failover_scripts",
        key="a\ud800b.sh",
        run_id=3,
        at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        message="changed <b>x</b> & \x1f",
    )
    body = render_feed([alert], instance="x", self_url="http://h/feed.atom?a=1&b=<2>")
    parsed = parse(body)
    assert parsed.entries[0].id == "tag:3cx-auditor,2026:x/alert/7"
    # The key is shown escaped (a lone surrogate too); the target cannot hold such a
    # character (the configuration refuses it) but would still leave well-formed XML.
    assert parsed.entries[0].title == "[warning] script.changed pbx\ufffd]]>: a\\ud800b.sh"
    assert parsed.feed.links[0].href == "http://h/feed.atom?a=1&b=<2>"


def test_a_bad_feed_instance_is_refused(tmp_path: Path) -> None:
    async def attempt() -> None:
        async with await Store.open(f"sqlite:///{tmp_path / 'a.db'}") as store:
            make_app(
                store=store,
                state=ServiceState(),
                metrics=Metrics(),
                token=None,
                feed_instance="has space",
            )

    with pytest.raises(ConfigError, match="feed instance"):
        asyncio.run(attempt())
