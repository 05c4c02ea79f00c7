"""The daemon's HTTP side, served for real on 127.0.0.1 over a store filled by real audits.

Two simulated PBXs are audited four times (a baseline; scripts and settings changed; one
PBX down; back), so the store holds ok and failed runs, changes and alerts. The app is then
served with ``start_http`` and asked over HTTP with aiohttp; every expected answer is read
from the store itself, so the API is checked against the record, not against numbers
written here.
"""

from __future__ import annotations

import asyncio
import errno
import math
import shutil
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog.testing
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from auditor.audit import AuditResult
from auditor.config import Settings
from auditor.errors import ConfigError
from auditor.metrics import RUN_STATUSES, Metrics
from auditor.model import ALERT_KINDS, iso, utcnow
from auditor.store import Store
from auditor.web.app import base_url, make_app, start_http
from auditor.web.cursors import encode_cursor
from auditor.web.limits import OUT_OF_DESCRIPTORS_FOR_S, accept_guard
from auditor.web.state import ServiceState
from tests.recording import Plan, Recording, record_in_thread

TOKEN = "test-token-0123456789"
RUN_KEYS = {"id", "target", "started_at", "finished_at", "status", "items", "pages", "error"}
CHANGE_KEYS = {"id", "run_id", "target", "collection", "key", "kind", "before", "after"}
CHANGE_KEYS |= {"fields", "at", "hash", "prev_hash"}
ALERT_KEYS = {"id", "fingerprint", "kind", "severity", "status", "target", "collection", "key"}
ALERT_KEYS |= {"run_id", "at", "message", "fields"}
TARGET_KEYS = {
    "name",
    "url",
    "next_run_at",
    "lease_owner",
    "lease_until",
    "last_complete_run_id",
    "active",
}


@dataclass
class Recorded:
    store: Store
    results: list[AuditResult]
    settings: Settings


@dataclass
class Served:
    url: str
    http: aiohttp.ClientSession
    state: ServiceState
    metrics: Metrics
    recorded: Recorded

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
        async with self.http.get(self.url + path, **kwargs) as response:
            body: Any = (
                await response.json()
                if response.content_type == "application/json"
                else await response.text()
            )
            return response.status, body, response


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """Audited once per module (in a loop of its own); each test works on a copy."""
    database = tmp_path_factory.mktemp("recording") / "audit.db"
    return record_in_thread(
        database, Plan(hq_scripts=12, branch_scripts=4, seeds=(5, 2), page_size=5)
    )


@pytest.fixture
async def recorded(recording: Recording, tmp_path: Path) -> AsyncIterator[Recorded]:
    for path in recording.database.parent.glob(recording.database.name + "*"):
        shutil.copy(path, tmp_path / path.name)
    store = await Store.open(f"sqlite:///{tmp_path / recording.database.name}")
    try:
        yield Recorded(store=store, results=recording.results, settings=recording.settings)
    finally:
        await store.close()


ServeApp = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve_app(recorded: Recorded) -> AsyncIterator[ServeApp]:
    runners: list[Any] = []
    async with aiohttp.ClientSession() as http:

        async def start(token: str | None = None, state: ServiceState | None = None) -> Served:
            state = state or ServiceState()
            metrics = Metrics()
            app = make_app(
                store=recorded.store,
                state=state,
                metrics=metrics,
                token=SecretStr(token) if token is not None else None,
            )
            runner = await start_http(app, "127.0.0.1:0")
            runners.append(runner)
            return Served(base_url(runner), http, state, metrics, recorded)

        try:
            yield start
        finally:
            for runner in runners:
                await runner.cleanup()


@pytest.fixture
async def served(serve_app: ServeApp) -> Served:
    return await serve_app()


def ready_state() -> ServiceState:
    return ServiceState(database_ok=True, migrations_at_head=True, scheduler_running=True)


# -- the record the fixtures made --------------------------------------------------------


def test_the_record_has_what_the_api_tests_need(recorded: Recorded) -> None:
    statuses = Counter(r.status for r in recorded.results)
    assert statuses["ok"] >= 6
    assert statuses["failed"] >= 1
    kinds = {a.kind for r in recorded.results for a in r.alerts}
    assert {"script.added", "script.removed", "settings.changed"} <= kinds


# -- probes ------------------------------------------------------------------------------


async def test_livez(served: Served) -> None:
    status, body, _ = await served.get("/livez")
    assert (status, body) == (200, {"status": "ok"})


async def test_readyz_follows_the_state(served: Served) -> None:
    status, body, _ = await served.get("/readyz")
    assert status == 503
    assert body["status"] == "not ready"
    assert body["checks"] == {
        "database": False,
        "migrations": False,
        "scheduler": False,
        "draining": False,
        "descriptors": True,
    }

    served.state.database_ok = served.state.migrations_at_head = True
    served.state.scheduler_running = True
    served.state.detail["replica"] = "host-1"
    status, body, _ = await served.get("/readyz")
    assert status == 200
    assert body == {
        "replica": "host-1",
        "status": "ready",
        "checks": {
            "database": True,
            "migrations": True,
            "scheduler": True,
            "draining": False,
            "descriptors": True,
        },
    }

    served.state.draining = True
    status, body, _ = await served.get("/readyz")
    assert (status, body["status"], body["checks"]["draining"]) == (503, "not ready", True)

    served.state.draining = False
    served.state.scheduler_running = False
    status, body, _ = await served.get("/readyz")
    assert (status, body["checks"]["scheduler"]) == (503, False)


async def test_readyz_says_when_accept_ran_out_of_descriptors(serve_app: ServeApp) -> None:
    state = ready_state()
    served = await serve_app(state=state)
    assert (await served.get("/readyz"))[0] == 200
    # What asyncio's accept loop hands the loop's exception handler, hundreds of times a
    # second while the process has no descriptor left (CPython issue 151615).
    loop = asyncio.get_running_loop()
    guard = accept_guard(state)
    context = {
        "message": "socket.accept() out of system resource",
        "exception": OSError(errno.EMFILE, "Too many open files"),
    }
    with structlog.testing.capture_logs() as logged:
        for _ in range(1000):
            guard(loop, context)
    assert [line["event"] for line in logged] == ["http.out_of_descriptors"]
    status, body, _ = await served.get("/readyz")
    assert (status, body["checks"]["descriptors"]) == (503, False)
    # A minute later, with descriptors free again, it is ready again.
    assert state.out_of_descriptors_at is not None
    state.out_of_descriptors_at -= OUT_OF_DESCRIPTORS_FOR_S
    assert (await served.get("/readyz"))[0] == 200


async def test_readyz_needs_the_schema_at_head(serve_app: ServeApp, tmp_path: Path) -> None:
    served = await serve_app(state=ready_state())
    assert (await served.get("/readyz"))[0] == 200
    async with await Store.open(f"sqlite:///{tmp_path / 'empty.db'}") as empty:
        app = make_app(store=empty, state=ready_state(), metrics=Metrics(), token=None)
        runner = await start_http(app, "127.0.0.1:0")
        try:
            async with served.http.get(base_url(runner) + "/readyz") as response:
                body = await response.json()
                assert response.status == 503
        finally:
            await runner.cleanup()
    assert body["checks"]["database"] is True
    assert body["checks"]["migrations"] is False


async def test_readyz_checks_the_database_live(serve_app: ServeApp) -> None:
    served = await serve_app(state=ready_state())
    assert (await served.get("/readyz"))[0] == 200
    await served.recorded.store.close()
    status, body, _ = await served.get("/readyz")
    assert status == 503
    assert body["checks"]["database"] is False
    assert body["checks"]["migrations"] is False
    # The probes stay answerable and the API answers one fixed line: the store's error
    # names the database's location, which goes to the log, not to the client.
    assert (await served.get("/livez"))[0] == 200
    status, body, _ = await served.get("/api/v1/runs")
    assert status == 503
    assert body == {"error": "the database is not available; the daemon's log says why"}


# -- metrics -----------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[(name, frozenset(labels.items()))]


async def test_metrics_series_exist_from_the_start(served: Served) -> None:
    status, text, response = await served.get("/metrics")
    assert status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    found = samples(text)
    for status_label in RUN_STATUSES:
        assert value(found, "auditor_runs_total", status=status_label) == 0
    for kind in ALERT_KINDS:
        assert value(found, "auditor_alerts_total", kind=kind) == 0
    assert value(found, "auditor_audit_duration_seconds_count") == 0
    assert value(found, "auditor_items_seen_total") == 0
    assert math.isnan(value(found, "auditor_oldest_complete_run_age_seconds"))
    for name in ("auditor_targets", "auditor_targets_disconnected", "auditor_outbox_dead"):
        assert value(found, name) == 0
    assert value(found, "process_resident_memory_bytes") > 0
    # No per-target labels by default.
    assert not any("target" in dict(labels) for _name, labels in found)


async def test_metrics_move_with_observed_runs(served: Served) -> None:
    results = served.recorded.results
    for result in results:
        served.metrics.observe_run(result, 0.5)
    health = await served.metrics.update_fleet(
        served.recorded.store.reads,
        disconnected_after=served.recorded.settings.alerts.disconnected_after,
    )
    served.metrics.set_outbox(dead=2, pending=5)
    found = samples((await served.get("/metrics"))[1])

    statuses: Counter[str] = Counter(r.status for r in results)
    for status_label in RUN_STATUSES:
        assert value(found, "auditor_runs_total", status=status_label) == statuses[status_label]
    kinds = Counter(a.kind for r in results for a in r.alerts)
    for kind in ALERT_KINDS:
        assert value(found, "auditor_alerts_total", kind=kind) == kinds[kind]
    assert value(found, "auditor_audit_duration_seconds_count") == len(results)
    assert value(found, "auditor_audit_duration_seconds_sum") == pytest.approx(0.5 * len(results))
    assert value(found, "auditor_audit_duration_seconds_bucket", le="0.25") == 0
    assert value(found, "auditor_audit_duration_seconds_bucket", le="0.5") == len(results)
    items = sum(r.items or 0 for r in results if r.status == "ok")
    assert items > 0
    assert value(found, "auditor_items_seen_total") == items

    # The PBX that was down is back: nothing is disconnected, both targets are counted.
    assert health.targets == 2
    assert health.disconnected == 0
    assert value(found, "auditor_targets") == 2
    assert value(found, "auditor_targets_disconnected") == 0
    age = value(found, "auditor_oldest_complete_run_age_seconds")
    assert health.oldest_complete_age_s is not None
    assert 0 <= age <= health.oldest_complete_age_s + 60
    assert value(found, "auditor_outbox_dead") == 2
    assert value(found, "auditor_outbox_pending") == 5


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus)")
async def test_metrics_pass_promtool(served: Served) -> None:
    for result in served.recorded.results:
        served.metrics.observe_run(result, 1.5)
    text = (await served.get("/metrics"))[1]
    promtool = await asyncio.create_subprocess_exec(
        "promtool",
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    said, _ = await promtool.communicate(text.encode())
    assert promtool.returncode == 0, said.decode()


# -- the JSON API ------------------------------------------------------------------------


async def test_items_are_the_cli_json_shapes(served: Served) -> None:
    store = served.recorded.store
    expected: dict[str, list[Any]] = {
        "runs": [r.as_json() for r in await store.reads.runs(limit=None)],
        "changes": [c.as_json() for c in await store.reads.changes(limit=None)],
        "alerts": [a.as_json() for a in await store.reads.alert_events(limit=None)],
    }
    keys = {"runs": RUN_KEYS, "changes": CHANGE_KEYS, "alerts": ALERT_KEYS}
    for kind, wanted in expected.items():
        status, body, _ = await served.get(f"/api/v1/{kind}", params={"limit": "1000"})
        assert status == 200
        assert body["next"] is None
        assert body["items"] == wanted
        assert all(set(item) >= keys[kind] for item in body["items"])
        ids = [item["id"] for item in body["items"]]
        assert ids == sorted(ids)


async def test_targets(served: Served) -> None:
    rows = await served.recorded.store.reads.targets()
    status, body, _ = await served.get("/api/v1/targets")
    assert status == 200
    assert [t["name"] for t in body["items"]] == sorted(r.name for r in rows)
    assert all(set(t) == TARGET_KEYS for t in body["items"])
    by_name = {r.name: r for r in rows}
    for item in body["items"]:
        assert item["url"] == by_name[item["name"]].url
        assert item["last_complete_run_id"] == by_name[item["name"]].last_complete_run_id
    status, body, _ = await served.get("/api/v1/targets", params={"target": "pbx-hq"})
    assert [t["name"] for t in body["items"]] == ["pbx-hq"]
    assert body["items"][0]["active"] is True


async def test_a_target_that_left_the_configuration_is_listed_inactive(served: Served) -> None:
    store = served.recorded.store
    rows = await store.reads.targets()
    kept = rows[0]
    await store.schedule.sync_targets([(kept.name, kept.url)], lambda _name: utcnow())
    _status, body, _ = await served.get("/api/v1/targets")
    assert {t["name"]: t["active"] for t in body["items"]} == {
        r.name: r.name == kept.name for r in rows
    }


async def test_target_filter(served: Served) -> None:
    for kind in ("runs", "changes", "alerts"):
        status, body, _ = await served.get(f"/api/v1/{kind}", params={"target": "pbx-branch"})
        assert status == 200
        assert body["items"], kind
        assert {item["target"] for item in body["items"]} == {"pbx-branch"}
        status, body, _ = await served.get(f"/api/v1/{kind}", params={"target": "nobody"})
        assert (status, body) == (200, {"items": [], "next": None})


async def test_since_until_filter_runs(served: Served) -> None:
    runs = await served.recorded.store.reads.runs(limit=None)
    middle = runs[len(runs) // 2].started_at
    later = runs[-2].started_at
    status, body, _ = await served.get(
        "/api/v1/runs", params={"since": iso(middle), "until": iso(later)}
    )
    assert status == 200
    expected = [r.id for r in runs if middle <= r.started_at < later]
    assert expected
    assert [item["id"] for item in body["items"]] == expected
    # An offset written with "+" unescaped arrives as a space; it still means UTC+2.
    shifted = middle.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert "+02:00" in shifted
    status, body, _ = await served.get(f"/api/v1/runs?since={shifted}")
    assert status == 200
    assert [item["id"] for item in body["items"]] == [r.id for r in runs if r.started_at >= middle]
    status, body, _ = await served.get("/api/v1/runs", params={"since": "1d"})
    assert [item["id"] for item in body["items"]] == [r.id for r in runs]


async def test_since_filters_changes_and_alerts_by_their_time(served: Served) -> None:
    store = served.recorded.store
    changes = await store.reads.changes(limit=None)
    alerts = await store.reads.alert_events(limit=None)
    # The API reads times to the millisecond (as written by iso()): compare with that cut.
    cut = datetime.fromisoformat(iso(changes[-1].at).replace("Z", "+00:00"))
    _status, body, _ = await served.get("/api/v1/changes", params={"since": iso(cut)})
    assert [c["id"] for c in body["items"]] == [c.id for c in changes if c.at >= cut]
    _status, body, _ = await served.get("/api/v1/alerts", params={"until": iso(cut)})
    assert [a["id"] for a in body["items"]] == [a.id for a in alerts if a.at < cut]


@pytest.mark.parametrize("kind", ["runs", "changes", "alerts", "targets"])
async def test_cursor_walk_visits_every_item_once(served: Served, kind: str) -> None:
    store = served.recorded.store
    if kind == "targets":
        everything: list[Any] = [t.name for t in await store.reads.targets()]
        position = "name"
    else:
        readers: dict[str, Callable[..., Awaitable[Sequence[Any]]]] = {
            "runs": store.reads.runs,
            "changes": store.reads.changes,
            "alerts": store.reads.alert_events,
        }
        read = readers[kind]
        everything = [item.id for item in await read(limit=None)]
        position = "id"
    limit = 3 if kind != "targets" else 1
    seen: list[Any] = []
    pages = 0
    params = {"limit": str(limit)}
    while True:
        status, body, _ = await served.get(f"/api/v1/{kind}", params=params)
        assert status == 200
        pages += 1
        assert 1 <= len(body["items"]) <= limit
        seen.extend(item[position] for item in body["items"])
        if body["next"] is None:
            break
        params = {"limit": str(limit), "cursor": body["next"]}
    assert seen == everything
    assert pages == math.ceil(len(everything) / limit)


async def test_cursor_keeps_the_filters_it_is_sent_with(served: Served) -> None:
    runs = await served.recorded.store.reads.runs("pbx-hq", limit=None)
    status, body, _ = await served.get("/api/v1/runs", params={"target": "pbx-hq", "limit": "2"})
    assert status == 200
    params = {"target": "pbx-hq", "limit": "100", "cursor": body["next"]}
    status, rest, _ = await served.get("/api/v1/runs", params=params)
    assert status == 200
    assert [r["id"] for r in body["items"] + rest["items"]] == [r.id for r in runs]


@pytest.mark.parametrize(
    ("path", "params", "mentions"),
    [
        ("/api/v1/runs", {"limit": "0"}, "limit"),
        ("/api/v1/runs", {"limit": "1001"}, "limit"),
        ("/api/v1/runs", {"limit": "ten"}, "limit"),
        ("/api/v1/changes", {"since": "yesterday"}, "since"),
        ("/api/v1/changes", {"since": "99999999d"}, "since"),
        ("/api/v1/alerts", {"until": "2026-13-01"}, "until"),
        ("/api/v1/runs", {"since": "2026-02-01T00:00Z", "until": "2026-01-01T00:00Z"}, "until"),
        ("/api/v1/runs", {"cursor": "%%%"}, "cursor"),
        ("/api/v1/runs", {"cursor": encode_cursor("alerts", 3)}, "cursor"),
        ("/api/v1/targets", {"cursor": encode_cursor("targets", 3)}, "cursor"),
        ("/api/v1/runs", {"taget": "pbx-hq"}, "taget"),
        ("/api/v1/targets", {"since": "1d"}, "since"),
    ],
)
async def test_bad_parameters_are_400_with_one_line(
    served: Served, path: str, params: dict[str, str], mentions: str
) -> None:
    status, body, _ = await served.get(path, params=params)
    assert status == 400
    assert set(body) == {"error"}
    assert body["error"].startswith(mentions + ":")
    assert "\n" not in body["error"]


async def test_repeated_parameter_is_400(served: Served) -> None:
    status, body, _ = await served.get("/api/v1/runs?target=pbx-hq&target=pbx-branch")
    assert status == 400
    assert body["error"].startswith("target:")


async def test_unknown_path_and_method_answer_json(served: Served) -> None:
    status, body, _ = await served.get("/api/v1/nothing")
    assert status == 404
    assert "error" in body
    async with served.http.post(served.url + "/api/v1/runs") as response:
        assert response.status == 405
        assert "GET" in response.headers["Allow"]
        assert "error" in await response.json()


# -- the bearer token --------------------------------------------------------------------


async def test_token_guards_the_api_only(serve_app: ServeApp) -> None:
    served = await serve_app(token=TOKEN, state=ready_state())
    status, body, response = await served.get("/api/v1/runs")
    assert status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in str(body)
    for wrong in ("Bearer nope", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"):
        status, body, response = await served.get("/api/v1/runs", headers={"Authorization": wrong})
        assert status == 401, wrong
        assert "WWW-Authenticate" in response.headers
    status, body, _ = await served.get("/api/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert body["items"]
    status, _, _ = await served.get("/api/v1/targets", headers={"Authorization": f"bearer {TOKEN}"})
    assert status == 200
    # Probes and metrics need no secret.
    for path in ("/livez", "/readyz", "/metrics"):
        assert (await served.get(path))[0] == 200, path


async def test_without_token_the_api_is_open(served: Served) -> None:
    assert (await served.get("/api/v1/alerts"))[0] == 200


# -- listening ---------------------------------------------------------------------------


async def test_start_http_reports_an_address_in_use(served: Served) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    app = make_app(store=served.recorded.store, state=ServiceState(), metrics=Metrics(), token=None)
    with pytest.raises(ConfigError) as caught:
        await start_http(app, f"127.0.0.1:{port}")
    (problem,) = caught.value.problems
    assert problem.startswith(f"config: http.listen: cannot listen on 127.0.0.1:{port}: ")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_start_http_on_ipv6(recorded: Recorded) -> None:
    app = make_app(store=recorded.store, state=ServiceState(), metrics=Metrics(), token=None)
    runner = await start_http(app, "[::1]:0")
    try:
        url = base_url(runner)
        assert url.startswith("http://[::1]:")
        async with aiohttp.ClientSession() as http, http.get(url + "/livez") as response:
            assert response.status == 200
    finally:
        await runner.cleanup()
