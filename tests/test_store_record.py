"""The record (``store.record``) against real SQLite files and a real PostgreSQL: runs, their
contents and versions, alert events, states and outbox rows, and the chain as writers extend it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from auditor.model import SCRIPTS, FieldChange, content_hash
from auditor.store import GENESIS_HASH, RunOutcome, Store
from auditor.store.schema import versions
from tests.storedata import (
    T0,
    audit,
    build_history,
    counts,
    current_bodies,
    draft,
    script,
    scripts,
    state,
)

# -- runs and contents ---------------------------------------------------------------------


async def test_targets_are_upserted_by_name(store: Store) -> None:
    first = await store.record.ensure_target("pbx-hq", "https://old.example.com")
    again = await store.record.ensure_target("pbx-hq", "https://new.example.com")
    other = await store.record.ensure_target("pbx-branch", "https://branch.example.com")
    assert first == again != other
    rows = {t.name: t for t in await store.reads.targets()}
    assert rows["pbx-hq"].url == "https://new.example.com"
    assert rows["pbx-hq"].last_complete_run_id is None
    assert rows["pbx-hq"].created_at.tzinfo is not None


async def test_baseline_change_and_quiet_runs(store: Store, raw: AsyncEngine) -> None:
    target = await store.record.ensure_target("pbx-hq", "https://pbx-hq.example.com")
    assert await store.record.current_snapshot(target) == (
        None,
        (await store.record.current_snapshot(target))[1],
    )
    assert not (await store.record.current_snapshot(target))[1].items

    start = await counts(raw)
    baseline = scripts(30)
    base_run = await audit(store, target, baseline)
    after_base = await counts(raw)
    assert after_base["versions"] - start["versions"] == len(baseline)
    assert after_base["changes"] - start["changes"] == len(baseline)
    assert await store.reads.chain_head() == (
        (await store.reads.changes(limit=None, newest_first=True))[0].hash,
        len(baseline),
    )
    last, snapshot = await store.record.current_snapshot(target)
    assert last == base_run
    assert {ref: dict(i.body) for ref, i in snapshot.items.items()} == baseline
    assert all(i.hash == content_hash(i.body) for i in snapshot.items.values())

    changed = dict(baseline)
    changed[(SCRIPTS, "failover-0003.sh")] = script(3, contents="echo changed")
    changed[(SCRIPTS, "failover-0004.sh")] = script(4, state="Disconnected")
    del changed[(SCRIPTS, "failover-0005.sh")]
    changed[(SCRIPTS, "failover-9999.sh")] = script(9999)
    change_run = await audit(store, target, changed)
    after_change = await counts(raw)
    assert after_change["versions"] - after_base["versions"] == 3
    assert after_change["changes"] - after_base["changes"] == 4
    async with raw.connect() as conn:
        closed = (
            await conn.execute(
                select(versions.c.key, versions.c.last_run_id).where(
                    versions.c.last_run_id.is_not(None)
                )
            )
        ).all()
    assert sorted(closed) == [
        ("failover-0003.sh", base_run),
        ("failover-0004.sh", base_run),
        ("failover-0005.sh", base_run),
    ]
    recorded = await store.reads.changes("pbx-hq", run_id=change_run, limit=None)
    assert sorted((c.key, c.kind) for c in recorded) == [
        ("failover-0003.sh", "changed"),
        ("failover-0004.sh", "changed"),
        ("failover-0005.sh", "removed"),
        ("failover-9999.sh", "added"),
    ]
    state_change = next(c for c in recorded if c.key == "failover-0004.sh")
    assert state_change.fields == (FieldChange("State", "Connected", "Disconnected"),)
    assert state_change.before == script(4)

    # A run that changes nothing: its runs row, the target's pointer, nothing per item.
    quiet_run = await audit(store, target, changed)
    after_quiet = await counts(raw)
    assert {k: after_quiet[k] - after_change[k] for k in after_quiet} == {
        k: (1 if k == "runs" else 0) for k in after_quiet
    }
    assert (await store.record.current_snapshot(target))[0] == quiet_run

    # A failed run never touches contents, even if handed changes.
    failed_run = await audit(store, target, scripts(2), status="failed")
    after_failed = await counts(raw)
    assert after_failed["versions"] == after_quiet["versions"]
    assert after_failed["changes"] == after_quiet["changes"]
    assert (await store.record.current_snapshot(target))[0] == quiet_run
    assert await current_bodies(store, target) == changed
    assert await store.record.recent_statuses(target, 3) == ["failed", "ok", "ok"]
    run = await store.reads.run(failed_run)
    assert run is not None
    assert (run.status, run.target) == ("failed", "pbx-hq")
    assert (await store.reads.verify()).ok


async def test_large_baseline_spans_write_batches(store: Store) -> None:
    target = await store.record.ensure_target("pbx-big", "https://big.example.com")
    baseline = scripts(1201)
    run_id = await audit(store, target, baseline)
    assert await current_bodies(store, target) == baseline
    assert (await store.reads.chain_head())[1] == len(baseline)
    result = await store.reads.verify(batch=97)
    assert (result.ok, result.length) == (True, len(baseline))
    changes_of_run = await store.reads.changes(run_id=run_id, limit=None)
    assert [c.id for c in changes_of_run] == list(range(1, len(baseline) + 1))


async def test_timestamps_come_back_aware_in_utc(store: Store) -> None:
    target = await store.record.ensure_target("pbx", "https://pbx.example.com")
    local = datetime(2026, 3, 1, 12, 30, 15, 250_000, tzinfo=timezone(timedelta(hours=2)))
    run_id = await store.record.begin_run(target, local)
    run = await store.reads.run(run_id)
    assert run is not None
    assert run.started_at == local
    assert run.started_at.utcoffset() == timedelta(0)
    assert run.as_json()["started_at"] == "2026-03-01T10:30:15.250Z"


async def test_mark_interrupted_ends_runs_left_running(store: Store) -> None:
    a = await store.record.ensure_target("a", "https://a.example.com")
    b = await store.record.ensure_target("b", "https://b.example.com")
    run_a = await store.record.begin_run(a, T0)
    run_b = await store.record.begin_run(b, T0)
    assert await store.record.mark_interrupted(a) == 1
    found_a, found_b = await store.reads.run(run_a), await store.reads.run(run_b)
    assert found_a is not None
    assert found_b is not None
    assert (found_a.status, found_a.error) == ("failed", "interrupted")
    assert found_b.status == "running"
    assert await store.record.recent_statuses(b, 5) == []
    assert await store.record.mark_interrupted() == 1
    assert await store.record.recent_statuses(b, 5) == ["failed"]


# -- alerts --------------------------------------------------------------------------------


async def test_alert_events_states_and_outbox(store: Store, raw: AsyncEngine) -> None:
    target = await store.record.ensure_target("pbx-hq", "https://hq.example.com")
    down = draft("script.disconnected", "a.sh", T0, severity="critical")
    changed = draft(
        "script.changed", "b.sh", T0, fields=(FieldChange("Contents", "echo 1", "echo 2"),)
    )
    run_id = await store.record.begin_run(target, T0)
    recorded = await store.record.commit_run(
        RunOutcome(
            run_id=run_id,
            target_id=target,
            status="ok",
            finished_at=T0,
            events=(down, changed),
            alert_states=(state(down),),
            sinks=("log", "webhook"),
        )
    )
    assert [a.kind for a in recorded] == ["script.disconnected", "script.changed"]
    assert recorded[0].id < recorded[1].id
    assert {(a.target, a.run_id) for a in recorded} == {("pbx-hq", run_id)}
    assert [a.as_json() for a in await store.reads.alert_events("pbx-hq")] == [
        a.as_json() for a in recorded
    ]
    assert (await counts(raw))["outbox"] == 4
    assert (await store.record.alert_states(target))[down.fingerprint] == state(down)

    later = T0 + timedelta(minutes=15)
    back = draft("script.reconnected", "a.sh", later, status="resolved", severity="info")
    run_2 = await store.record.begin_run(target, later)
    await store.record.commit_run(
        RunOutcome(
            run_id=run_2,
            target_id=target,
            status="ok",
            finished_at=later,
            events=(back,),
            alert_states=(state(down, status="resolved", last_seen=later, resolved_at=later),),
        )
    )
    states = await store.record.alert_states(target)
    assert list(states) == [down.fingerprint]
    assert states[down.fingerprint].status == "resolved"
    assert states[down.fingerprint].resolved_at == later
    assert states[down.fingerprint].first_seen == T0
    assert (await counts(raw))["outbox"] == 4  # no sinks named for the second run
    newest = await store.reads.alert_events(newest_first=True, limit=1)
    assert [a.kind for a in newest] == ["script.reconnected"]
    assert await store.reads.alert_events(since=later) == newest


# -- the hash chain ------------------------------------------------------------------------


async def test_concurrent_writers_extend_one_chain(db_url: str, store: Store) -> None:
    # Two connections pools (as two replicas have) commit runs of two targets at once.
    other = await Store.open(db_url)
    try:
        hq = await store.record.ensure_target("pbx-hq", "https://hq.example.com")
        branch = await other.record.ensure_target("pbx-branch", "https://branch.example.com")

        async def evolve(s: Store, target: int, seed: int) -> int:
            rng = random.Random(seed)
            bodies = scripts(6)
            await audit(s, target, bodies)
            total = len(bodies)
            for step in range(6):
                ref = (SCRIPTS, f"failover-{rng.randrange(6):04d}.sh")
                bodies = {**bodies, ref: {**bodies[ref], "Contents": f"echo {seed}-{step}"}}
                total += 1
                await audit(s, target, bodies)
            return total

        totals = await asyncio.gather(evolve(store, hq, 1), evolve(other, branch, 2))
    finally:
        await other.close()

    result = await store.reads.verify()
    assert result.ok, result.reason
    assert result.length == sum(totals)
    history = await store.reads.changes(limit=None)
    assert [c.id for c in history] == list(range(1, sum(totals) + 1))
    assert history[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(history):
        assert after.prev_hash == before.hash
    assert {c.target for c in history} == {"pbx-hq", "pbx-branch"}


def _plain_mapping(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)


async def test_history_records_carry_what_was_committed(store: Store) -> None:
    await build_history(store)
    history = await store.reads.changes(limit=None)
    unicode_add = next(c for c in history if c.key == "failover-0042.sh")
    assert unicode_add.kind == "added"
    assert _plain_mapping(unicode_add.after) == {"Filename": "failover-0042.sh", "Note": "Zürich ✓"}
    assert unicode_add.before is None
    removed = next(c for c in history if c.kind == "removed")
    assert removed.after is None
    assert _plain_mapping(removed.before) == script(2)
