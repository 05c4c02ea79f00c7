"""The store against real SQLite files and a real PostgreSQL (see conftest.py)."""

from __future__ import annotations

import asyncio
import itertools
import pathlib
import random
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import delete, func, inspect, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from auditor.errors import StoreError
from auditor.model import (
    SCRIPTS,
    SETTINGS,
    SETTINGS_KEY,
    Change,
    FieldChange,
    RunStatus,
    content_hash,
)
from auditor.store import (
    GENESIS_HASH,
    AlertDraft,
    AlertState,
    RunOutcome,
    Store,
    change_hash,
    metadata,
)
from auditor.store.engine import SCHEMA_HEAD, head_revisions
from auditor.store.schema import chain, changes, targets, versions

Bodies = dict[tuple[str, str], dict[str, Any]]
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
HEAD = ",".join(sorted(head_revisions()))


def script(i: int, *, contents: str = "echo ok", state: str = "Connected") -> dict[str, Any]:
    return {"Filename": f"failover-{i:04d}.sh", "Contents": contents, "State": state, "Size": i}


def scripts(n: int) -> Bodies:
    bodies: Bodies = {(SCRIPTS, f"failover-{i:04d}.sh"): script(i) for i in range(n)}
    bodies[(SETTINGS, SETTINGS_KEY)] = {"Enabled": True, "PreStartScript": "failover-0000.sh"}
    return bodies


def diff(before: Bodies, after: Bodies) -> list[Change]:
    """An independent, simple diff for building the changes a run commits."""
    out: list[Change] = []
    for ref in sorted(after.keys() - before.keys()):
        out.append(Change(ref[0], ref[1], "added", None, after[ref]))
    for ref in sorted(before.keys() - after.keys()):
        out.append(Change(ref[0], ref[1], "removed", before[ref], None))
    for ref in sorted(before.keys() & after.keys()):
        old, new = before[ref], after[ref]
        if old != new:
            fields = tuple(
                FieldChange(name, old.get(name), new.get(name))
                for name in sorted(old.keys() | new.keys())
                if old.get(name) != new.get(name)
            )
            out.append(Change(ref[0], ref[1], "changed", old, new, fields))
    return out


async def current_bodies(store: Store, target_id: int) -> Bodies:
    _, snapshot = await store.record.current_snapshot(target_id)
    return {ref: dict(item.body) for ref, item in snapshot.items.items()}


async def audit(
    store: Store,
    target_id: int,
    bodies: Bodies,
    *,
    status: RunStatus = "ok",
    at: datetime | None = None,
    events: tuple[AlertDraft, ...] = (),
    states: tuple[AlertState, ...] = (),
    sinks: tuple[str, ...] = (),
    digest: str | None = None,
) -> int:
    """One run the way the audit does it: read the last snapshot, diff, commit. ``digest``
    is kept only on a target's first complete run (no previous run is named)."""
    started = at or datetime.now(UTC)
    run_id = await store.record.begin_run(target_id, started)
    found = diff(await current_bodies(store, target_id), bodies)
    await store.record.commit_run(
        RunOutcome(
            run_id=run_id,
            target_id=target_id,
            status=status,
            finished_at=started + timedelta(seconds=2),
            pages=1,
            items=len(bodies),
            reported_count=len(bodies),
            changes=found,
            events=events,
            alert_states=states,
            sinks=sinks,
            digest=digest,
        )
    )
    return run_id


async def counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {
            table.name: int(
                (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            )
            for table in metadata.sorted_tables
        }


# -- schema ------------------------------------------------------------------------------


async def test_upgrade_from_empty_database_to_head(db_url: str) -> None:
    async with await Store.open(db_url) as store:
        assert not await store.at_head()
        assert await store.upgrade() == HEAD
        assert await store.at_head()
        assert await store.upgrade() == HEAD
        assert await store.reads.chain_head() == (GENESIS_HASH, 0)
        assert store.dialect == db_url.split(":")[0]


async def test_models_and_migrations_agree(store: Store, raw: AsyncEngine) -> None:
    def differences(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with raw.connect() as conn:
        assert await conn.run_sync(differences) == []
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert names == {t.name for t in metadata.sorted_tables} | {"alembic_version"}


async def test_concurrent_upgrades_in_one_process(db_url: str) -> None:
    stores = [await Store.open(db_url) for _ in range(3)]
    try:
        assert await asyncio.gather(*(s.upgrade() for s in stores)) == [HEAD] * 3
        assert await stores[0].at_head()
    finally:
        for s in stores:
            await s.close()


UPGRADE_SCRIPT = """
import asyncio, sys
from auditor.store import Store

async def main(url: str) -> None:
    store = await Store.open(url)
    try:
        await store.at_head()  # loads the migration scripts before the race
        print("ready", flush=True)
        sys.stdin.readline()
        print(await store.upgrade(), flush=True)
    finally:
        await store.close()

asyncio.run(main(sys.argv[1]))
"""


async def test_replicas_starting_together_all_migrate(db_url: str) -> None:
    # Separate processes, as replicas are: only the database can serialise them. Each
    # waits for "go" once connected, so that all three migrate at the same moment.
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            UPGRADE_SCRIPT,
            db_url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"ready\n"
    results = await asyncio.gather(*(p.communicate(b"go\n") for p in procs))
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == HEAD
    async with await Store.open(db_url) as store:
        assert await store.at_head()
        assert await store.reads.chain_head() == (GENESIS_HASH, 0)


# -- errors ------------------------------------------------------------------------------


async def test_unreachable_postgresql_is_one_line_without_the_password() -> None:
    with pytest.raises(StoreError) as caught:
        await Store.open("postgresql://auditor:s3cret-pw@127.0.0.1:1/audit")
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "postgresql://auditor:***@127.0.0.1:1/audit" in message
    assert "\n" not in message


async def test_sqlite_in_a_missing_directory_is_a_store_error(tmp_path: Any) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await Store.open(f"sqlite:///{tmp_path}/no/such/dir/audit.db")


@pytest.mark.parametrize(
    "url", ["mysql://u:pw@host/db", "not a url", "sqlite://", "sqlite:///:memory:"]
)
async def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreError) as caught:
        await Store.open(url)
    assert "pw" not in str(caught.value)


async def test_close_is_idempotent_and_refuses_work_afterwards(db_url: str) -> None:
    store = await Store.open(db_url)
    await store.upgrade()
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.record.ensure_target("pbx", "https://pbx.example.com")


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


def draft(kind: str, key: str | None, at: datetime, **extra: Any) -> AlertDraft:
    return AlertDraft(
        fingerprint=f"fp-{kind}-{key}",
        kind=kind,
        severity=extra.pop("severity", "warning"),
        status=extra.pop("status", "firing"),
        collection=SCRIPTS if key else None,
        key=key,
        at=at,
        message=f"{kind} {key}",
        **extra,
    )


def state(d: AlertDraft, **extra: Any) -> AlertState:
    values: dict[str, Any] = {
        "fingerprint": d.fingerprint,
        "kind": d.kind,
        "collection": d.collection,
        "key": d.key,
        "status": d.status,
        "severity": d.severity,
        "first_seen": d.at,
        "last_seen": d.at,
        "last_notified": d.at,
        "resolved_at": None,
        "message": d.message,
    }
    values.update(extra)
    return AlertState(**values)


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
        "before",
        "after",
        "fields",
        "at",
        "hash",
        "prev_hash",
    }
    assert as_json["prev_hash"] == GENESIS_HASH
    late = await store.reads.changes(since=T0 + timedelta(hours=2))
    assert {c.run_id for c in late} == {hq_runs[2], hq_runs[3], hq_runs[4], branch_run}


# -- the hash chain ------------------------------------------------------------------------


async def build_history(store: Store) -> int:
    """Twelve chained records over two targets; returns the chain length."""
    hq = await store.record.ensure_target("pbx-hq", "https://hq.example.com")
    branch = await store.record.ensure_target("pbx-branch", "https://branch.example.com")
    await audit(store, hq, scripts(4), at=T0)  # records 1-5
    await audit(store, branch, scripts(1), at=T0)  # records 6-7
    edited = scripts(4)
    edited[(SCRIPTS, "failover-0001.sh")] = script(1, contents="rm -rf /tmp/x")
    del edited[(SCRIPTS, "failover-0002.sh")]
    edited[(SCRIPTS, "failover-0042.sh")] = {"Filename": "failover-0042.sh", "Note": "Zürich ✓"}
    await audit(store, hq, edited, at=T0 + timedelta(hours=1))  # records 8-10
    more = dict(edited)
    more[(SETTINGS, SETTINGS_KEY)] = {"Enabled": False, "PreStartScript": "failover-0042.sh"}
    more[(SCRIPTS, "failover-0043.sh")] = {"Filename": "failover-0043.sh", "Ratio": 0.1}
    await audit(store, hq, more, at=T0 + timedelta(hours=2))  # records 11-12
    length = (await store.reads.chain_head())[1]
    assert length == 12
    return length


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


def test_schema_head_constant_matches_the_migrations() -> None:
    assert head_revisions() == {SCHEMA_HEAD}


async def test_ensure_schema_migrates_a_new_database_and_then_only_checks(
    tmp_path: pathlib.Path,
) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        assert await store.ensure_schema() == SCHEMA_HEAD
        assert await store.at_head()
        assert await store.ensure_schema() == SCHEMA_HEAD
    finally:
        await store.close()


def _old_database_with_data(path: pathlib.Path) -> None:
    """A database at revision 0001 holding a target and a run that reference each other."""
    import sqlite3
    import subprocess

    root = pathlib.Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url=sqlite:///{path}", "upgrade", "0001"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(
            "INSERT INTO targets (id, name, url, created_at) "
            "VALUES (1, 'pbx-old', 'https://old.example.com', '2026-01-01 00:00:00')"
        )
        db.execute(
            "INSERT INTO runs (id, target_id, started_at, status) "
            "VALUES (1, 1, '2026-01-01 00:00:00', 'ok')"
        )
        db.execute("UPDATE targets SET last_complete_run_id = 1")


async def test_upgrade_keeps_a_populated_sqlite_database(tmp_path: pathlib.Path) -> None:
    """Batch migrations copy tables on SQLite: with data and foreign keys they must still pass."""
    path = tmp_path / "old.db"
    await asyncio.to_thread(_old_database_with_data, path)
    store = await Store.open(f"sqlite:///{path}")
    try:
        assert await store.ensure_schema() == SCHEMA_HEAD
        (target,) = await store.reads.targets()
        assert (target.name, target.last_complete_run_id) == ("pbx-old", 1)
        assert [r.id for r in await store.reads.runs("pbx-old")] == [1]
    finally:
        await store.close()


def _alembic(url: str, *command: str) -> None:
    import subprocess

    root = pathlib.Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={url}", *command],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


async def test_the_newest_migration_goes_down_and_up_on_a_populated_database(
    db_url: str, store: Store
) -> None:
    """Downgrading the newest migration and upgrading again keeps every record (on SQLite
    the batch mode copies the targets table that every other table refers to)."""
    bodies = scripts(3)
    target = await store.record.ensure_target("hq", "https://hq.example")
    first = await audit(store, target, bodies, at=T0, digest="d" * 64)
    assert (await store.record.start_run("hq", "https://hq.example", T0)).digest == "d" * 64
    await store.close()
    await asyncio.to_thread(_alembic, db_url, "downgrade", "-1")
    await asyncio.to_thread(_alembic, db_url, "upgrade", "head")
    async with await Store.open(db_url) as again:
        assert await again.at_head()
        [row] = await again.reads.targets()
        assert (row.name, row.last_complete_run_id) == ("hq", first)
        next_run = await again.record.start_run("hq", "https://hq.example", T0)
        # The digest went with the column: the next run diffs in full and sets it again.
        assert (next_run.previous_run_id, next_run.digest) == (first, None)
        assert len(await again.record.current_hashes(next_run.target_id)) == len(bodies)
        assert (await again.reads.verify()).ok
