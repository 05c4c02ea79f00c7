"""The read side (``store.reads``) against real SQLite files and a real PostgreSQL: snapshots
at past runs, the filters and cursors of runs and history, and the verification of the chain.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from auditor.errors import StoreError
from auditor.model import SCRIPTS, SETTINGS, SETTINGS_KEY, Change, FieldChange
from auditor.store import GENESIS_HASH, RunOutcome, Store, change_hash
from auditor.store.schema import chain, changes, targets
from tests.storedata import T0, Bodies, audit, build_history, draft, script, scripts

# -- snapshots, runs and history ----------------------------------------------------------


async def test_snapshot_at_reconstructs_every_complete_run(store: Store) -> None:
    rng = random.Random(20260105)
    hq = await store.record.ensure_target("pbx-hq", "https://hq.example.com")
    branch = await store.record.ensure_target("pbx-branch", "https://branch.example.com")
    expected: dict[int, Bodies] = {}
    not_complete: list[int] = []
    bodies = {hq: scripts(12), branch: scripts(5)}
    next_name = 100
    for step in range(10):
        for target in (hq, branch):
            current = dict(bodies[target])
            for ref in rng.sample(sorted(k for k in current if k[0] == SCRIPTS), 2):
                choice = rng.random()
                if choice < 0.4:
                    current[ref] = {**current[ref], "Contents": f"echo {step}-{rng.random()}"}
                elif choice < 0.7:
                    del current[ref]
            if rng.random() < 0.5:
                next_name += 1
                current[(SCRIPTS, f"failover-{next_name:04d}.sh")] = script(next_name)
            if step in (3, 7) and target == hq:
                not_complete.append(await audit(store, target, current, status="incomplete"))
                continue
            bodies[target] = current
            expected[await audit(store, target, current)] = current

    for run_id, wanted in expected.items():
        snapshot = await store.reads.snapshot_at(run_id)
        assert {ref: dict(i.body) for ref, i in snapshot.items.items()} == wanted, run_id
    for run_id in not_complete:
        with pytest.raises(StoreError, match="not complete"):
            await store.reads.snapshot_at(run_id)
    with pytest.raises(StoreError, match="no run"):
        await store.reads.snapshot_at(10**6)
    assert (await store.reads.verify()).ok


async def test_read_side_filters_and_cursors(store: Store) -> None:
    hq = await store.record.ensure_target("pbx-hq", "https://hq.example.com")
    branch = await store.record.ensure_target("pbx-branch", "https://branch.example.com")
    hq_runs = [await audit(store, hq, scripts(3 + i), at=T0 + timedelta(hours=i)) for i in range(5)]
    branch_run = await audit(store, branch, scripts(2), at=T0 + timedelta(hours=2, minutes=30))

    assert [r.id for r in await store.reads.runs("pbx-hq", limit=None)] == hq_runs
    assert [r.id for r in await store.reads.runs(limit=None)] == sorted([*hq_runs, branch_run])
    window = await store.reads.runs(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3))
    assert [r.id for r in window] == sorted([hq_runs[1], hq_runs[2], branch_run])
    page_1 = await store.reads.runs("pbx-hq", limit=2)
    page_2 = await store.reads.runs("pbx-hq", limit=2, after_id=page_1[-1].id)
    assert [r.id for r in page_1 + page_2] == hq_runs[:4]
    assert [r.id for r in await store.reads.runs("pbx-hq", newest_first=True, limit=2)] == [
        hq_runs[4],
        hq_runs[3],
    ]
    assert [r.id for r in await store.reads.runs("pbx-hq", before_id=hq_runs[2])] == hq_runs[:2]
    assert await store.reads.runs("no-such-target") == []

    history = await store.reads.changes("pbx-hq", limit=None)
    assert {c.target for c in history} == {"pbx-hq"}
    assert len(history) == 3 + 1 + 1 + 1 + 1 + 1  # baseline of 3 + settings, then one added each
    as_json = history[0].as_json()
    assert set(as_json) == {
        "id",
        "run_id",
        "target",
        "collection",
        "key",
        "kind",
        "baseline",
        "before",
        "after",
        "fields",
        "at",
        "hash",
        "prev_hash",
    }
    assert as_json["prev_hash"] == GENESIS_HASH
    # Each target's first complete run is its baseline, pbx-branch's after pbx-hq's changes;
    # the mark is the same whatever window is read.
    baselines = {hq_runs[0], branch_run}
    everything = await store.reads.changes(limit=None)
    assert {(c.run_id, c.baseline) for c in everything} == {
        (run, run in baselines) for run in [*hq_runs, branch_run]
    }
    for part in (
        await store.reads.changes("pbx-branch", limit=None),
        await store.reads.changes(newest_first=True, limit=3),
        await store.reads.changes(run_id=branch_run),
        await store.reads.changes(after_id=2, before_id=5),
    ):
        assert part
        assert all(c.baseline is (c.run_id in baselines) for c in part)
    late = await store.reads.changes(since=T0 + timedelta(hours=2))
    assert {c.run_id for c in late} == {hq_runs[2], hq_runs[3], hq_runs[4], branch_run}


# -- the hash chain ------------------------------------------------------------------------


async def swap_ids(engine: AsyncEngine, a: int, b: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(changes).where(changes.c.id == a).values(id=-1))
        await conn.execute(update(changes).where(changes.c.id == b).values(id=a))
        await conn.execute(update(changes).where(changes.c.id == -1).values(id=b))


async def rewrite_consistently(engine: AsyncEngine, record: int) -> None:
    """Edit a record and recompute its own hash, as an informed forger would."""
    async with engine.begin() as conn:
        row = (await conn.execute(select(changes).where(changes.c.id == record))).one()
        name = (
            await conn.execute(select(targets.c.name).where(targets.c.id == row.target_id))
        ).scalar_one()
        forged_after = {"Filename": row.key, "Contents": "echo forged"}
        forged = change_hash(
            row.prev_hash,
            id=row.id,
            run_id=row.run_id,
            target=name,
            collection=row.collection,
            key=row.key,
            kind=row.kind,
            before=row.before,
            after=forged_after,
            fields=row.fields,
            at=row.at,
        )
        await conn.execute(
            update(changes).where(changes.c.id == record).values(after=forged_after, hash=forged)
        )


@pytest.mark.parametrize(
    ("tamper", "first_bad", "reason"),
    [
        ("edit", 7, "does not match its hash"),
        ("forge", 8, "does not link to record 7"),
        ("delete", 7, "record 7 is missing"),
        ("delete_last", 12, "record 12 is missing"),
        ("reorder", 6, "does not link to record 5"),
        ("head", 12, "head"),
        ("retime", 9, "does not match its hash"),
    ],
)
async def test_verify_names_the_first_tampered_record(
    store: Store, raw: AsyncEngine, tamper: str, first_bad: int, reason: str
) -> None:
    length = await build_history(store)
    intact = await store.reads.verify(batch=4)
    assert (intact.ok, intact.first_bad) == (True, None)
    assert (intact.head, intact.length) == await store.reads.chain_head()

    async with raw.begin() as conn:
        if tamper == "edit":
            await conn.execute(
                update(changes).where(changes.c.id == 7).values(after={"Contents": "evil"})
            )
        elif tamper == "delete":
            await conn.execute(delete(changes).where(changes.c.id == 7))
        elif tamper == "delete_last":
            await conn.execute(delete(changes).where(changes.c.id == length))
        elif tamper == "head":
            await conn.execute(update(chain).values(head="f" * 64))
        elif tamper == "retime":
            await conn.execute(
                update(changes).where(changes.c.id == 9).values(at=T0 - timedelta(days=1))
            )
    if tamper == "forge":
        await rewrite_consistently(raw, 7)
    if tamper == "reorder":
        await swap_ids(raw, 6, 7)

    result = await store.reads.verify(batch=4)
    assert not result.ok
    assert result.first_bad == first_bad
    assert reason in (result.reason or "")
    assert result.length == length


async def test_a_field_missing_on_one_side_reads_back_as_missing(store: Store) -> None:
    """A key that appears or disappears is told apart from one set to null, in the record as
    in the alert: ``missing`` survives the round trip through the JSON columns."""
    hq = await store.record.ensure_target("pbx-hq", "https://hq.example.com")
    await audit(store, hq, scripts(1), at=T0)
    fields = (
        FieldChange("Added", None, 1, missing="old"),
        FieldChange("Gone", "x", None, missing="new"),
        FieldChange("Nulled", "y", None),
    )
    before = {"Enabled": True, "Gone": "x", "Nulled": "y"}
    after = {"Enabled": True, "Added": 1, "Nulled": None}
    run_id = await store.record.begin_run(hq, T0 + timedelta(hours=1))
    event = draft("settings.changed", None, T0 + timedelta(hours=1), fields=fields)
    await store.record.commit_run(
        RunOutcome(
            run_id=run_id,
            target_id=hq,
            status="ok",
            finished_at=T0 + timedelta(hours=1, seconds=2),
            pages=1,
            items=2,
            reported_count=1,
            changes=[Change(SETTINGS, SETTINGS_KEY, "changed", before, after, fields)],
            events=(event,),
        )
    )
    [record] = await store.reads.changes(run_id=run_id)
    assert [f.as_json() for f in record.fields] == [f.as_json() for f in fields]
    [alert] = await store.reads.alert_events("pbx-hq")
    assert [f.as_json() for f in alert.fields] == [f.as_json() for f in fields]
    assert (await store.reads.verify()).ok
