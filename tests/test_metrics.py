"""ReadStore.fleet_health (on SQLite and PostgreSQL) and the Metrics registry."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from auditor.metrics import Metrics
from auditor.model import RunStatus, utcnow
from auditor.store import FleetHealth, RunOutcome, Store

HOUR = timedelta(hours=1)


async def add_runs(store: Store, name: str, statuses: list[RunStatus], finished: datetime) -> None:
    target = await store.record.ensure_target(name, f"http://{name}.example")
    for status in statuses:
        run = await store.record.begin_run(target, finished - timedelta(seconds=1))
        if status != "running":
            await store.record.commit_run(
                RunOutcome(
                    run_id=run,
                    target_id=target,
                    status=status,
                    finished_at=finished,
                )
            )


async def fleet(store: Store) -> datetime:
    """Four targets; returns the finish time of the oldest last-complete run."""
    now = utcnow()
    # a: complete 3 h ago, then two failures.   b: never complete (one failure).
    # c: complete 1 h ago.                      d: complete, one failure, one running.
    await add_runs(store, "a", ["ok", "failed", "incomplete"], now - 3 * HOUR)
    await add_runs(store, "b", ["failed"], now - 2 * HOUR)
    await add_runs(store, "c", ["failed", "failed", "ok"], now - HOUR)
    await add_runs(store, "d", ["ok", "failed", "running"], now - 2 * HOUR)
    return now - 3 * HOUR


def around(value: float | None, expected: float) -> bool:
    # The store reads the clock after this test did: a little older, never younger.
    return value is not None and expected <= value < expected + 60


async def test_fleet_health_counts_disconnected_by_the_threshold(store: Store) -> None:
    oldest = await fleet(store)
    expected_age = (utcnow() - oldest).total_seconds()
    one = await store.reads.fleet_health(1)
    assert one.targets == 4
    assert one.disconnected == 3  # a, b and d each have a finished failure after their last ok
    assert around(one.oldest_complete_age_s, expected_age)
    # The running run of d does not count; a has two failures in a row.
    assert (await store.reads.fleet_health(2)).disconnected == 1
    assert (await store.reads.fleet_health(3)).disconnected == 0


async def test_fleet_health_counts_a_never_complete_target_from_its_creation(
    store: Store,
) -> None:
    await fleet(store)
    only_b = await store.reads.fleet_health(1, names=["b"])
    assert only_b.targets == 1
    assert only_b.disconnected == 1
    # b was created moments ago: its age is that of its record, not of its failed run.
    assert around(only_b.oldest_complete_age_s, 0)
    only_c = await store.reads.fleet_health(1, names={"c", "not-there"})
    assert only_c == FleetHealth(
        targets=1, oldest_complete_age_s=only_c.oldest_complete_age_s, disconnected=0
    )
    assert around(only_c.oldest_complete_age_s, HOUR.total_seconds())


async def test_fleet_health_of_no_targets(store: Store) -> None:
    assert await store.reads.fleet_health(3) == FleetHealth(0, None, 0)
    await fleet(store)
    assert await store.reads.fleet_health(3, names=[]) == FleetHealth(0, None, 0)
    with pytest.raises(ValueError, match="at least 1"):
        await store.reads.fleet_health(0)


async def test_update_fleet_sets_the_gauges(store: Store) -> None:
    metrics = Metrics()
    empty = await metrics.update_fleet(store.reads, disconnected_after=1)
    assert empty.targets == 0
    assert math.isnan(gauge(metrics, "auditor_oldest_complete_run_age_seconds"))
    await fleet(store)
    health = await metrics.update_fleet(store.reads, disconnected_after=2)
    assert gauge(metrics, "auditor_targets") == health.targets == 4
    assert gauge(metrics, "auditor_targets_disconnected") == health.disconnected == 1
    assert gauge(metrics, "auditor_oldest_complete_run_age_seconds") == pytest.approx(
        health.oldest_complete_age_s
    )


def gauge(metrics: Metrics, name: str) -> float:
    body, _ = metrics.render()
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not exposed")


def test_a_given_registry_holds_only_the_auditor_metrics() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    assert metrics.registry is registry
    names = {f.name for f in text_string_to_metric_families(metrics.render()[0].decode())}
    assert names
    assert all(name.startswith("auditor_") for name in names)
    assert "process_resident_memory_bytes" in Metrics().render()[0].decode()


def test_two_metrics_objects_do_not_share_counts() -> None:
    first, second = Metrics(), Metrics()
    first.set_outbox(dead=1, pending=2)
    assert gauge(first, "auditor_outbox_pending") == 2
    assert gauge(second, "auditor_outbox_pending") == 0
