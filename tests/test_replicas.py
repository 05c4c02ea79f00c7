"""Sharing a fleet: the store's schedule and leases (replicas of the daemon: test_takeover.py).

The store tests run on SQLite and PostgreSQL (``store`` fixture); the concurrent claims
need PostgreSQL (the ``postgres`` marker; conftest.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from auditor.store import RunOutcome, Store

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def placed(offsets: dict[str, float]) -> dict[str, datetime]:
    return {name: at(offset) for name, offset in offsets.items()}


async def sync(store: Store, first: dict[str, datetime]) -> None:
    await store.schedule.sync_targets(
        [(name, f"https://{name}.example.com") for name in first], lambda name: first[name]
    )


async def due_names(store: Store, when: datetime, owner: str = "probe") -> list[str]:
    """Who could be claimed at ``when``, without keeping the claims."""
    claims = await store.schedule.claim_due(owner, when, 1000, timedelta(seconds=1))
    for claim in claims:
        await store.schedule.finish_claim(claim.id, owner, claim.due)
    return [c.name for c in claims]


# -- the schedule in the targets table -------------------------------------------------------


async def test_sync_places_new_targets_and_keeps_known_times(store: Store) -> None:
    await sync(store, placed({"a": 0, "b": 10}))
    rows = {t.name: t for t in await store.reads.targets()}
    assert rows["a"].next_run_at == at(0)
    assert rows["b"].next_run_at == at(10)
    assert rows["a"].url == "https://a.example.com"

    # Known targets keep their time (a restart does not reschedule); the URL follows.
    await store.schedule.sync_targets(
        [("a", "https://a2.example.com"), ("b", "https://b.example.com")], lambda _n: at(999)
    )
    rows = {t.name: t for t in await store.reads.targets()}
    assert rows["a"].next_run_at == at(0)
    assert rows["a"].url == "https://a2.example.com"
    assert rows["b"].next_run_at == at(10)


async def test_targets_leaving_the_config_are_not_claimed_until_they_return(store: Store) -> None:
    await sync(store, placed({"a": 0, "b": 0}))
    await sync(store, placed({"a": 0}))
    assert await due_names(store, at(60)) == ["a"]
    assert {t.name for t in await store.reads.targets()} == {"a", "b"}  # the record stays

    # Back in the configuration: placed afresh, not due at its stale old time.
    await sync(store, placed({"a": 0, "b": 120}))
    assert await due_names(store, at(60)) == ["a"]
    assert await due_names(store, at(120)) == ["a", "b"]


async def test_a_target_only_audited_by_once_gets_a_time(store: Store) -> None:
    await store.record.ensure_target("a", "https://a.example.com")
    assert await due_names(store, at(3600)) == []
    await sync(store, placed({"a": 5}))
    assert [t.next_run_at for t in await store.reads.targets()] == [at(5)]


# -- claims and leases ----------------------------------------------------------------------


async def test_claims_take_due_targets_soonest_first_up_to_the_limit(store: Store) -> None:
    await sync(store, placed({"late": 30, "first": 0, "second": 10, "future": 1000}))
    claims = await store.schedule.claim_due("me", at(50), 2, LEASE)
    assert [(c.name, c.due, c.lease_until) for c in claims] == [
        ("first", at(0), at(50) + LEASE),
        ("second", at(10), at(50) + LEASE),
    ]
    assert [c.name for c in await store.schedule.claim_due("me", at(50), 5, LEASE)] == ["late"]
    # Leased ones are skipped, whoever asks, until the lease runs out.
    assert await store.schedule.claim_due("other", at(60), 5, LEASE) == []
    later = await store.schedule.claim_due("other", at(50) + LEASE + timedelta(seconds=1), 5, LEASE)
    assert [c.name for c in later] == ["first", "second", "late"]
    assert await store.schedule.claim_due("me", at(50), 0, LEASE) == []


async def test_finishing_a_claim_sets_the_next_time_only_while_the_lease_is_ours(
    store: Store,
) -> None:
    await sync(store, placed({"a": 0}))
    (claim,) = await store.schedule.claim_due("me", at(1), 1, LEASE)
    assert await store.schedule.finish_claim(claim.id, "someone-else", at(500)) is False
    assert await store.schedule.finish_claim(claim.id, "me", at(100)) is True
    (row,) = await store.reads.targets()
    assert (row.next_run_at, row.lease_owner, row.lease_until) == (at(100), None, None)
    assert await store.schedule.finish_claim(claim.id, "me", at(200)) is False  # no longer held
    assert await due_names(store, at(99)) == []
    assert await due_names(store, at(100)) == ["a"]


async def test_renewing_keeps_only_our_leases(store: Store) -> None:
    await sync(store, placed({"a": 0, "b": 0, "c": 0}))
    mine = await store.schedule.claim_due("me", at(1), 2, timedelta(seconds=10))
    theirs = await store.schedule.claim_due("them", at(1), 5, timedelta(seconds=10))
    ids = [c.id for c in mine + theirs]
    renewed = await store.schedule.renew_leases("me", ids, timedelta(seconds=290), at(10))
    assert renewed == {c.id for c in mine}
    # Renewed: still held after the first lease would have run out; theirs is free again.
    free = await store.schedule.claim_due("other", at(100), 5, LEASE)
    assert [c.name for c in free] == [c.name for c in theirs]
    assert await store.schedule.claim_due("other", at(301), 5, LEASE) != []
    assert await store.schedule.renew_leases("me", [], LEASE) == set()


async def test_without_a_time_leases_and_due_times_follow_the_databases_clock(
    store: Store,
) -> None:
    before = await store.schedule.database_time()
    hour = timedelta(hours=1)
    await sync(store, {"due": before - hour, "later": before + hour})
    (claim,) = await store.schedule.claim_due("me", None, 5, LEASE)
    after = await store.schedule.database_time()
    assert claim.name == "due"
    assert before + LEASE <= claim.lease_until <= after + LEASE
    # Alive by the database's clock: nobody else gets it, and its holder keeps it.
    assert await store.schedule.claim_due("other", None, 5, LEASE) == []
    assert await store.schedule.renew_leases("me", [claim.id], hour) == {claim.id}
    row = next(t for t in await store.reads.targets() if t.name == "due")
    assert row.lease_until is not None
    assert after + hour <= row.lease_until <= await store.schedule.database_time() + hour
    run = await store.record.begin_run(claim.id, before)
    assert await store.schedule.interrupt_orphaned_runs() == 0
    # A holder that stops renewing loses it once the database's clock passes its end.
    assert await store.schedule.renew_leases("me", [claim.id], timedelta(0)) == {claim.id}
    (taken,) = await store.schedule.claim_due("other", None, 5, LEASE)
    assert (taken.name, taken.interrupted_runs) == ("due", 1)
    ended = await store.reads.run(run)
    assert ended is not None
    assert ended.status == "failed"
    assert ended.finished_at is not None
    assert ended.finished_at >= after


async def test_release_gives_back_our_leases_and_ends_our_unfinished_runs(store: Store) -> None:
    await sync(store, placed({"a": 0, "b": 0, "c": 0}))
    mine = await store.schedule.claim_due("me", at(1), 2, LEASE)
    (theirs,) = await store.schedule.claim_due("them", at(1), 5, LEASE)
    run_mine = await store.record.begin_run(mine[0].id, at(2))
    run_theirs = await store.record.begin_run(theirs.id, at(2))
    assert await store.schedule.lease_owners() == ["me", "them"]

    assert await store.schedule.release_leases("me") == 2
    assert await store.schedule.lease_owners() == ["them"]
    ended, going = await store.reads.run(run_mine), await store.reads.run(run_theirs)
    assert ended is not None
    assert going is not None
    assert ended.status == "failed"
    assert ended.error is not None
    assert "interrupted" in ended.error
    assert going.status == "running"
    # The due time is kept: released targets are due again at once.
    assert sorted(await due_names(store, at(3))) == sorted(c.name for c in mine)


async def test_a_claim_ends_the_runs_a_dead_holder_left_running(store: Store) -> None:
    await sync(store, placed({"a": 0}))
    (dead,) = await store.schedule.claim_due("dead", at(1), 1, timedelta(seconds=10))
    left = await store.record.begin_run(dead.id, at(2))
    (claim,) = await store.schedule.claim_due("me", at(20), 1, LEASE)
    assert claim.interrupted_runs == 1
    run = await store.reads.run(left)
    assert run is not None
    assert run.status == "failed"
    assert run.finished_at == at(20)


async def test_orphaned_runs_are_ended_only_where_no_lease_is_alive(store: Store) -> None:
    await sync(store, placed({"leased": 0, "expired": 0, "free": 0}))
    (leased,) = await store.schedule.claim_due("alive", at(1), 1, LEASE)
    (expired,) = await store.schedule.claim_due("dead", at(1), 1, timedelta(seconds=5))
    free = next(t for t in await store.reads.targets() if t.name == "free")
    runs = [await store.record.begin_run(t, at(2)) for t in (leased.id, expired.id, free.id)]
    done = await store.record.begin_run(free.id, at(2))
    await store.record.commit_run(
        RunOutcome(run_id=done, target_id=free.id, status="ok", finished_at=at(3))
    )

    assert await store.schedule.interrupt_orphaned_runs(at(30)) == 2
    statuses = []
    for run_id in runs:
        run = await store.reads.run(run_id)
        assert run is not None
        statuses.append(run.status)
    assert statuses == ["running", "failed", "failed"]
    ok = await store.reads.run(done)
    assert ok is not None
    assert ok.status == "ok"


async def test_next_due_is_the_soonest_active_time(store: Store) -> None:
    assert await store.schedule.next_due() is None
    await sync(store, placed({"a": 40, "b": 20}))
    assert await store.schedule.next_due() == at(20)
    await sync(store, placed({"a": 40}))
    assert await store.schedule.next_due() == at(40)


@pytest.mark.postgres
async def test_concurrent_claims_split_the_due_targets(pg_url: str) -> None:
    """Five stores (five connection pools, as five replicas) claim at the same moment:
    every due target goes to exactly one of them."""
    stores = [await Store.open(pg_url) for _ in range(5)]
    try:
        await stores[0].upgrade()
        names = {f"pbx-{i:03d}": float(i % 7) for i in range(120)}
        await sync(stores[0], placed(names))
        claimed: Counter[str] = Counter()
        for _round in range(4):
            batches = await asyncio.gather(
                *(
                    s.schedule.claim_due(f"replica-{i}", at(10), 9, LEASE)
                    for i, s in enumerate(stores)
                )
            )
            for batch in batches:
                claimed.update(c.name for c in batch)
        assert set(claimed) == set(names)
        assert max(claimed.values()) == 1
    finally:
        for s in stores:
            await s.close()
