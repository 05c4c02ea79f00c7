"""The store calls an audit makes on every tick: start_run (with the record's digest and the
alert states), and current_hashes and current_items when something changed.

Against real SQLite files and a real PostgreSQL (``store`` fixture in conftest.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from auditor.errors import StoreError
from auditor.model import SCRIPTS, SETTINGS, SETTINGS_KEY, Change, content_hash
from auditor.store import AlertState, RunOutcome, RunStart, Store

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def body(name: str, state: str = "Connected") -> dict[str, str]:
    return {"Filename": name, "State": state}


async def commit_among_a_bogus_one(
    store: Store, outcomes: list[RunOutcome], bogus: RunOutcome
) -> list[Any]:
    """Commit ``outcomes`` at once with ``bogus`` (a run that does not exist) in their
    middle; checks that it fails with its own error and returns what the others gave."""
    middle = len(outcomes) // 2
    results = await asyncio.gather(
        *(store.record.commit_run(o) for o in outcomes[:middle]),
        store.record.commit_run(bogus),
        *(store.record.commit_run(o) for o in outcomes[middle:]),
        return_exceptions=True,
    )
    failed = results.pop(middle)
    assert isinstance(failed, StoreError)
    assert f"run {bogus.run_id}" in str(failed)
    return results


def disconnected(fingerprint: str, target: str, script: str) -> AlertState:
    """The state of a script.disconnected alert firing since T0."""
    return AlertState(
        fingerprint=fingerprint,
        kind="script.disconnected",
        collection=SCRIPTS,
        key=script,
        status="firing",
        severity="warning",
        first_seen=T0,
        last_seen=T0,
        last_notified=T0,
        resolved_at=None,
        message=f"{target}: {script} is Disconnected",
    )


async def test_start_run_creates_the_target_once_and_follows_its_url(store: Store) -> None:
    first = await store.record.start_run("hq", "https://hq.example", T0)
    assert (first.previous_run_id, first.digest, dict(first.alerts)) == (None, None, {})
    again = await store.record.start_run("hq", "https://hq2.example", T0)
    assert again.target_id == first.target_id
    assert again.run_id > first.run_id
    [row] = await store.reads.targets()
    assert (row.name, row.url) == ("hq", "https://hq2.example")
    runs = await store.reads.runs("hq")
    assert [(r.id, r.status) for r in runs] == [
        (first.run_id, "running"),
        (again.run_id, "running"),
    ]


async def test_current_hashes_and_alert_states_follow_the_record(store: Store) -> None:
    start = await store.record.start_run("hq", "https://hq.example", T0)
    assert await store.record.current_hashes(start.target_id) == {}

    settings = {"Enabled": True, "PreStartScript": "a.sh"}
    added = [
        Change(SCRIPTS, "a.sh", "added", None, body("a.sh")),
        Change(SCRIPTS, "b.sh", "added", None, body("b.sh")),
        Change(SETTINGS, SETTINGS_KEY, "added", None, settings),
    ]
    state = disconnected("f" * 32, "hq", "b.sh")
    await store.record.commit_run(
        RunOutcome(
            run_id=start.run_id,
            target_id=start.target_id,
            status="ok",
            finished_at=T0,
            changes=added,
            alert_states=[state],
        )
    )
    second = await store.record.start_run("hq", "https://hq.example", T0)
    assert second.previous_run_id == start.run_id
    assert dict(second.alerts) == {state.fingerprint: state}

    assert await store.record.alert_states(second.target_id) == {state.fingerprint: state}
    assert await store.record.current_hashes(second.target_id) == {
        (SCRIPTS, "a.sh"): content_hash(body("a.sh")),
        (SCRIPTS, "b.sh"): content_hash(body("b.sh")),
        (SETTINGS, SETTINGS_KEY): content_hash(settings),
    }
    assert second.digest is None  # the baseline was committed without one

    # A change closes the old version: only the new content is current.
    await store.record.commit_run(
        RunOutcome(
            run_id=second.run_id,
            target_id=second.target_id,
            status="ok",
            finished_at=T0,
            changes=[
                Change(SCRIPTS, "b.sh", "changed", body("b.sh"), body("b.sh", "Disconnected"), ()),
                Change(SCRIPTS, "a.sh", "removed", body("a.sh"), None),
            ],
        )
    )
    third = await store.record.start_run("hq", "https://hq.example", T0)
    hashes = await store.record.current_hashes(third.target_id)
    assert hashes == {
        (SCRIPTS, "b.sh"): content_hash(body("b.sh", "Disconnected")),
        (SETTINGS, SETTINGS_KEY): content_hash(settings),
    }


async def commit(store: Store, start: RunStart, **outcome: Any) -> None:
    values: dict[str, Any] = {"status": "ok", "previous_run_id": start.previous_run_id}
    values.update(outcome)
    await store.record.commit_run(
        RunOutcome(run_id=start.run_id, target_id=start.target_id, finished_at=T0, **values)
    )


async def test_the_answer_digest_follows_complete_runs(store: Store) -> None:
    first = await store.record.start_run("hq", "https://hq.example", T0)
    await commit(store, first, digest="d1", changes=[Change(SCRIPTS, "a.sh", "added", None, {})])
    second = await store.record.start_run("hq", "https://hq.example", T0)
    assert (second.previous_run_id, second.digest) == (first.run_id, "d1")

    # A failed or incomplete run leaves the record, and its digest, alone.
    await commit(store, second, status="failed", error="hq: down", digest="other")
    third = await store.record.start_run("hq", "https://hq.example", T0)
    assert (third.previous_run_id, third.digest) == (first.run_id, "d1")

    # A complete run whose record does not hold what the PBX said (an ignored change)
    # clears it; the next one that does sets it again.
    await commit(store, third, digest=None)
    fourth = await store.record.start_run("hq", "https://hq.example", T0)
    assert (fourth.previous_run_id, fourth.digest) == (third.run_id, None)
    await commit(store, fourth, digest="d2")
    assert (await store.record.start_run("hq", "https://hq.example", T0)).digest == "d2"


async def test_a_digest_is_not_kept_when_another_run_completed_meanwhile(store: Store) -> None:
    """Two runs compared with the same last complete run; the second to finish cannot vouch
    that the record holds what it saw (the first may have changed it): no digest."""
    first = await store.record.start_run("hq", "https://hq.example", T0)
    await commit(store, first, digest="d1")
    one = await store.record.start_run("hq", "https://hq.example", T0)
    two = await store.record.start_run("hq", "https://hq.example", T0)
    assert one.previous_run_id == two.previous_run_id == first.run_id
    await commit(store, one, digest="d2")
    await commit(store, two, digest="d3")
    after = await store.record.start_run("hq", "https://hq.example", T0)
    assert (after.previous_run_id, after.digest) == (two.run_id, None)


async def test_current_items_reads_only_the_keys_asked_for(store: Store) -> None:
    start = await store.record.start_run("hq", "https://hq.example", T0)
    names = [f"s-{i:04d}.sh" for i in range(1200)]  # more than one batch of keys
    await store.record.commit_run(
        RunOutcome(
            run_id=start.run_id,
            target_id=start.target_id,
            status="ok",
            finished_at=T0,
            changes=[Change(SCRIPTS, n, "added", None, body(n)) for n in names],
        )
    )
    wanted = [(SCRIPTS, n) for n in names[::2]] + [(SCRIPTS, "missing.sh"), (SETTINGS, "x")]
    items = await store.record.current_items(start.target_id, wanted)
    assert sorted(i.key for i in items) == names[::2]
    assert all(i.body == body(i.key) and i.hash == content_hash(body(i.key)) for i in items)
    assert await store.record.current_items(start.target_id, []) == []
    other = await store.record.start_run("branch", "https://branch.example", T0)
    assert await store.record.current_items(other.target_id, wanted) == []


async def test_a_failing_write_among_concurrent_ones_fails_alone(store: Store) -> None:
    """On SQLite, writes queued together run as one transaction; one that fails must fail
    alone: the others are recorded, and it raises its own error."""
    starts = [
        await store.record.start_run(f"pbx-{i}", f"https://pbx-{i}.example", T0) for i in range(6)
    ]
    bogus = RunOutcome(run_id=10_000, target_id=starts[0].target_id, status="ok", finished_at=T0)
    outcomes = [
        RunOutcome(
            run_id=s.run_id,
            target_id=s.target_id,
            status="ok",
            finished_at=T0,
            changes=[Change(SCRIPTS, "a.sh", "added", None, body("a.sh"))],
        )
        for s in starts
    ]
    assert await commit_among_a_bogus_one(store, outcomes, bogus) == [[]] * 6
    for i, s in enumerate(starts):
        assert [(r.id, r.status) for r in await store.reads.runs(f"pbx-{i}")] == [(s.run_id, "ok")]
    recorded = await store.reads.changes(limit=None)
    assert sorted(c.target for c in recorded) == [f"pbx-{i}" for i in range(6)]
    assert (await store.reads.verify()).ok


async def test_start_runs_records_a_fleet_in_one_go(store: Store) -> None:
    known = await store.record.start_run("b", "https://b.example", T0)
    state = disconnected("e" * 32, "b", "x.sh")
    await store.record.commit_run(
        RunOutcome(
            run_id=known.run_id,
            target_id=known.target_id,
            status="ok",
            finished_at=T0,
            digest="d" * 64,
            changes=[Change(SCRIPTS, "x.sh", "added", None, body("x.sh"))],
            alert_states=[state],
        )
    )

    named = [("c", "https://c.example"), ("b", "https://b2.example"), ("a", "https://a.example")]
    starts = await store.record.start_runs(named, T0)
    assert [s.target_id for s in starts][1] == known.target_id
    assert len({s.target_id for s in starts}) == 3
    assert all(s.run_id > known.run_id for s in starts)
    c, b, a = starts
    assert (b.previous_run_id, b.digest, dict(b.alerts)) == (
        known.run_id,
        "d" * 64,
        {state.fingerprint: state},
    )
    assert (a.previous_run_id, a.digest, dict(a.alerts)) == (None, None, {})
    assert (c.previous_run_id, c.digest, dict(c.alerts)) == (None, None, {})
    rows = {t.name: t.url for t in await store.reads.targets()}
    assert rows == {"a": "https://a.example", "b": "https://b2.example", "c": "https://c.example"}
    for (name, _), start in zip(named, starts, strict=True):
        assert (await store.reads.runs(name))[-1].id == start.run_id
        assert (await store.reads.run(start.run_id)) is not None

    assert await store.record.start_runs([], T0) == []
    with pytest.raises(StoreError, match="twice"):
        await store.record.start_runs([("a", "https://a.example"), ("a", "https://a.example")], T0)


async def test_quiet_runs_recorded_together_fail_alone(store: Store) -> None:
    """Runs that changed nothing are written together (one statement for all of them on
    SQLite); one that cannot be recorded fails alone, with its own error."""
    starts = await store.record.start_runs(
        [(f"q-{i}", f"https://q-{i}.example") for i in range(8)], T0
    )
    began = datetime(2026, 1, 5, 8, 5, tzinfo=UTC)
    ended = datetime(2026, 1, 5, 8, 6, tzinfo=UTC)
    outcomes = [
        RunOutcome(
            run_id=s.run_id,
            target_id=s.target_id,
            status="ok" if i % 2 else "failed",
            # Half of them say when they began, the others keep the time they were started.
            started_at=began if i < 4 else None,
            finished_at=ended,
            error=None if i % 2 else "down",
            items=0 if i % 2 else None,
        )
        for i, s in enumerate(starts)
    ]
    bogus = RunOutcome(run_id=10_000, target_id=starts[0].target_id, status="ok", finished_at=T0)
    assert await commit_among_a_bogus_one(store, outcomes, bogus) == [[]] * 8
    for i, start in enumerate(starts):
        [run] = await store.reads.runs(f"q-{i}")
        assert (run.id, run.status, run.error) == (
            start.run_id,
            "ok" if i % 2 else "failed",
            None if i % 2 else "down",
        )
        assert (run.started_at, run.finished_at) == (began if i < 4 else T0, ended)
    again = await store.record.start_runs(
        [(f"q-{i}", f"https://q-{i}.example") for i in range(8)], T0
    )
    assert [s.previous_run_id for s in again] == [
        start.run_id if i % 2 else None for i, start in enumerate(starts)
    ]


async def test_sqlite_waits_for_a_lock_held_elsewhere_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    """On SQLite a short transaction runs on the event loop only when the write lock is free:
    held by another connection, it is waited for in the store's thread, while the loop
    goes on."""
    path = tmp_path / "locked.db"
    store = await Store.open(f"sqlite:///{path}")
    try:
        await store.upgrade()
        first = await store.record.start_run("hq", "https://hq.example", T0)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            # The lock is given back from the event loop: a loop waiting for it would wait
            # for itself (until SQLite's busy timeout, 30 s).
            asyncio.get_running_loop().call_later(0.2, other.execute, "COMMIT")
            second = await asyncio.wait_for(
                store.record.start_run("hq", "https://hq.example", T0), timeout=3
            )
        finally:
            other.close()
        assert second.run_id > first.run_id
        assert [r.id for r in await store.reads.runs("hq")] == [first.run_id, second.run_id]
    finally:
        await store.close()


def wal_size(path: Path) -> int:
    return Path(f"{path}-wal").stat().st_size


async def test_sqlite_log_stays_bounded_while_runs_are_recorded_on_the_loop(
    tmp_path: Path,
) -> None:
    """Runs recorded on the event loop keep the write-ahead log checkpointed: it is reused,
    not grown with every commit."""
    path = tmp_path / "wal.db"
    store = await Store.open(f"sqlite:///{path}")
    try:
        await store.upgrade()
        sizes = []
        for _ in range(6):
            for _ in range(150):
                start = await store.record.start_run("hq", "https://hq.example", T0)
                await store.record.commit_run(
                    RunOutcome(
                        run_id=start.run_id, target_id=start.target_id, status="ok", finished_at=T0
                    )
                )
            sizes.append(wal_size(path))
        assert len(await store.reads.runs("hq", limit=None)) == 900
    finally:
        await store.close()
    # Grown with every commit, it would be six times its first size by now.
    assert sizes[-1] < 1.5 * sizes[1], sizes
