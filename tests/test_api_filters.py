"""The JSON API's filters (``key``, ``kind``, ``collection`` on /changes; ``kind``,
``severity``, ``firing`` on /alerts), the names the CLI's ``history`` and ``alerts`` use,
served for real over a record made by real audits of the simulator.

Every expected answer is the unfiltered record, filtered here in Python: the API is checked
against the record, not against numbers written in the test.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from auditor.metrics import Metrics
from auditor.model import SETTINGS
from auditor.store import Store
from auditor.web.app import base_url, make_app, start_http
from auditor.web.state import ServiceState
from tests.recording import Plan, Recording, record_in_thread


@dataclass
class Api:
    url: str
    http: aiohttp.ClientSession
    store: Store

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        async with self.http.get(self.url + path, params=params) as response:
            return response.status, await response.json()

    async def every(self, path: str, **params: str) -> list[dict[str, Any]]:
        """Every item, following ``next`` one small page at a time."""
        items: list[dict[str, Any]] = []
        query = {**params, "limit": "2"}
        while True:
            status, body = await self.get(path, **query)
            assert status == 200, body
            items += body["items"]
            if body["next"] is None:
                return items
            query["cursor"] = body["next"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    database = tmp_path_factory.mktemp("recording") / "audit.db"
    plan = Plan(hq_scripts=12, branch_scripts=4, seeds=(5, 2), disconnect=True)
    return record_in_thread(database, plan)


@pytest.fixture
async def api(recording: Recording, tmp_path: Path) -> AsyncIterator[Api]:
    for path in recording.database.parent.glob(recording.database.name + "*"):
        shutil.copy(path, tmp_path / path.name)
    async with (
        await Store.open(f"sqlite:///{tmp_path / recording.database.name}") as store,
        aiohttp.ClientSession() as http,
    ):
        app = make_app(store=store, state=ServiceState(), metrics=Metrics(), token=None)
        runner = await start_http(app, "127.0.0.1:0")
        try:
            yield Api(base_url(runner) + "/api/v1", http, store)
        finally:
            await runner.cleanup()


async def test_change_filters(api: Api) -> None:
    changes = [c.as_json() for c in await api.store.reads.changes(limit=None)]
    assert await api.every("/changes", key="zz-added.sh") == [
        c for c in changes if c["key"] == "zz-added.sh"
    ]
    assert await api.every("/changes", kind="removed") == [
        c for c in changes if c["kind"] == "removed"
    ]
    both = await api.every("/changes", kind="removed,changed", target="pbx-hq")
    assert both == [
        c for c in changes if c["kind"] in ("removed", "changed") and c["target"] == "pbx-hq"
    ]
    assert {c["kind"] for c in both} == {"removed", "changed"}
    settings = await api.every("/changes", collection="settings")
    assert settings == [c for c in changes if c["collection"] == SETTINGS]
    assert settings == await api.every("/changes", collection=SETTINGS)
    assert len(settings) == 3


async def test_alert_filters(api: Api) -> None:
    alerts = [a.as_json() for a in await api.store.reads.alert_events(limit=None)]
    firing = await api.every("/alerts", firing="true")
    assert [(a["kind"], a["status"]) for a in firing] == [("script.disconnected", "firing")]
    assert firing == [a for a in alerts if a["kind"] == "script.disconnected"][-1:]
    assert await api.every("/alerts", kind="script.added,audit.failed") == [
        a for a in alerts if a["kind"] in ("script.added", "audit.failed")
    ]
    # A resolution (info) counts with the severity of the condition it ends.
    condition = {a["fingerprint"]: a["severity"] for a in alerts if a["status"] == "firing"}
    rank = {"info": 0, "warning": 1, "critical": 2}

    def at_least(level: str) -> list[dict[str, Any]]:
        return [
            a
            for a in alerts
            if rank[condition[a["fingerprint"]] if a["status"] == "resolved" else a["severity"]]
            >= rank[level]
        ]

    critical = await api.every("/alerts", severity="critical")
    assert [(a["kind"], a["severity"]) for a in critical] == [
        ("target.disconnected", "critical"),
        ("target.reconnected", "info"),
    ]
    assert critical == at_least("critical")
    warning = await api.every("/alerts", severity="warning")
    assert warning == at_least("warning")
    assert ("audit.failed", "resolved") in {(a["kind"], a["status"]) for a in warning}
    assert "script.added" not in {a["kind"] for a in warning}
    assert await api.every("/alerts", severity="info") == alerts


@pytest.mark.parametrize(
    ("path", "params", "error"),
    [
        ("/changes", {"kind": "deleted"}, "kind: 'deleted' is not one of added, removed, changed"),
        ("/changes", {"collection": "scripts,other"}, "collection: 'other' is not one of"),
        ("/changes", {"severity": "critical"}, "severity: not a parameter of /api/v1/changes"),
        ("/alerts", {"kind": "script.add"}, "kind: 'script.add' is not one of script.added,"),
        ("/alerts", {"severity": "high"}, "severity: 'high' is not one of info, warning, critical"),
        ("/alerts", {"firing": "false"}, "firing: the only value is true (got 'false')"),
        ("/alerts", {"key": "x.sh"}, "key: not a parameter of /api/v1/alerts"),
        ("/runs", {"kind": "added"}, "kind: not a parameter of /api/v1/runs"),
    ],
)
async def test_a_bad_filter_is_400_naming_it(
    api: Api, path: str, params: dict[str, str], error: str
) -> None:
    status, body = await api.get(path, **params)
    assert status == 400
    assert body["error"].startswith(error)
