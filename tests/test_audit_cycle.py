"""A cycle over several targets (``audit_many``, what ``once`` runs): its runs are recorded as
running when the cycle starts, each with the time its audit began once recorded, and a
cycle cancelled while targets wait for their turn leaves no run running.

Against the simulator over real HTTP and a real database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from auditor.audit import audit_many
from auditor.config import Settings, TargetSettings
from auditor.errors import StoreError
from auditor.simulator import Pbx, Simulator, serve
from auditor.store import Store
from auditor.store.schema import runs

NAMES = ("pbx-a", "pbx-b", "pbx-c")


@pytest.fixture
async def fleet() -> AsyncIterator[tuple[dict[str, Pbx], str]]:
    pbxs = {name: Pbx(name, scripts=12, seed=i + 1) for i, name in enumerate(NAMES)}
    async with serve(Simulator(pbxs.values())) as base:
        yield pbxs, base


async def logged_in(pbx: Pbx) -> None:
    """Until the auditor has logged in to ``pbx`` (its audit has begun); 10 s at most."""
    for _ in range(500):
        if pbx.stats.logins:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{pbx.name}: no login within 10 s")


def settings_for(db_url: str, base: str) -> Settings:
    return Settings(
        database={"url": db_url},
        audit={"max_concurrent": 1},
        targets=tuple(
            TargetSettings(
                name=name,
                url=f"{base}/{name}",
                client_id="auditor",
                client_secret=SecretStr("secret"),
                retries=0,
                request_timeout="10s",
            )
            for name in NAMES
        ),
    )


async def test_each_run_starts_when_its_audit_begins(
    db_url: str, store: Store, fleet: tuple[dict[str, Pbx], str]
) -> None:
    pbxs, base = fleet
    settings = settings_for(db_url, base)
    # One at a time, the first one slow: the others wait for their turn.
    pbxs["pbx-a"].add_fault("delay", endpoint="scripts", seconds=0.3)
    results = await audit_many(settings, store.record, settings.targets)
    assert [(r.target, r.status, r.items) for r in results] == [(n, "ok", 12) for n in NAMES]
    runs = [(await store.reads.runs(name))[0] for name in NAMES]
    assert [r.id for r in runs] == [r.run_id for r in results]
    for earlier, later in itertools.pairwise(runs):
        assert earlier.finished_at is not None
        assert later.started_at >= earlier.finished_at
    first = runs[0]
    assert first.finished_at is not None
    assert (first.finished_at - first.started_at).total_seconds() >= 0.3


async def test_a_cycle_cancelled_while_targets_wait_leaves_no_run_running(
    db_url: str, store: Store, fleet: tuple[dict[str, Pbx], str]
) -> None:
    pbxs, base = fleet
    settings = settings_for(db_url, base)
    pbxs["pbx-a"].add_fault("delay", endpoint="scripts", seconds=30)
    cycle = asyncio.ensure_future(audit_many(settings, store.record, settings.targets))
    # Until pbx-a's audit has begun, the others waiting for their turn.
    await logged_in(pbxs["pbx-a"])
    assert all([await store.reads.runs(name) for name in NAMES])
    cycle.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cycle

    runs = {name: await store.reads.runs(name) for name in NAMES}
    assert {name: [r.status for r in rs] for name, rs in runs.items()} == {
        name: ["failed"] for name in NAMES
    }
    assert runs["pbx-a"][0].error == "pbx-a: audit cancelled (shutdown or timeout)"
    for name in ("pbx-b", "pbx-c"):
        assert (
            runs[name][0].error == f"{name}: audit cancelled before it began (shutdown or timeout)"
        )

    # The next cycle is the baseline: nothing was diffed against the cancelled runs.
    pbxs["pbx-a"].clear_faults()
    results = await audit_many(settings, store.record, settings.targets)
    assert [(r.status, r.baseline) for r in results] == [("ok", True)] * 3


async def test_a_target_whose_ca_file_cannot_be_loaded_fails_alone(
    db_url: str, store: Store, fleet: tuple[dict[str, Pbx], str], tmp_path: Path
) -> None:
    bad = tmp_path / "not-a-certificate.pem"
    bad.write_text("this is not PEM\n")
    settings = settings_for(db_url, base=fleet[1])
    broken = settings.targets[1].model_copy(
        update={"url": "https://127.0.0.1:9/pbx-b", "ca_file": bad}
    )
    targets = (settings.targets[0], broken, settings.targets[2])
    results = await audit_many(settings, store.record, targets)
    assert [(r.target, r.status) for r in results] == [
        ("pbx-a", "ok"),
        ("pbx-b", "failed"),
        ("pbx-c", "ok"),
    ]
    assert results[1].error is not None
    assert results[1].error.startswith(f"pbx-b: cannot load ca_file {bad}")
    assert [a.kind for a in results[1].alerts] == ["audit.failed"]
    assert [r.status for r in await store.reads.runs("pbx-b")] == ["failed"]


async def test_a_cycle_whose_record_fails_stops_the_audits_still_to_come(
    db_url: str, store: Store, raw: AsyncEngine, fleet: tuple[dict[str, Pbx], str]
) -> None:
    """An audit failing outside what a run records (here its run row is gone when the run
    is to be written) stops the cycle; the targets still waiting record their runs as
    cancelled, and none is left running."""
    pbxs, base = fleet
    settings = settings_for(db_url, base)
    pbxs["pbx-a"].add_fault("delay", endpoint="scripts", seconds=0.5)
    cycle = asyncio.ensure_future(audit_many(settings, store.record, settings.targets))
    await logged_in(pbxs["pbx-a"])
    [gone] = await store.reads.runs("pbx-a")
    async with raw.begin() as conn:
        await conn.execute(delete(runs).where(runs.c.id == gone.id))
    with pytest.raises(StoreError, match=f"run {gone.id} of pbx-a does not exist"):
        await cycle
    assert await store.reads.runs("pbx-a") == []
    # pbx-b may have taken the freed slot and begun before the cancellation came.
    for name in ("pbx-b", "pbx-c"):
        [run] = await store.reads.runs(name)
        assert run.status == "failed"
        assert run.error is not None
        assert run.error.startswith(f"{name}: audit cancelled")
