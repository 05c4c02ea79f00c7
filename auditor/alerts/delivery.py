"""The outbox worker: deliver what the outbox holds, durably, in order per sink.

A run commits its alert events and their outbox rows in one transaction; from there this
module takes over. :func:`deliver_due` claims the due rows (each sink's oldest undelivered
row only, under a lease, so replicas never send one row twice and a sink sees its alerts
in order), hands each to its sink, and records the outcome in the database:

* delivered -> ``delivered_at``;
* refused for good (``DeliveryError(permanent=True)``, e.g. HTTP 400) -> dead, listed by
  ``alerts --undelivered`` and counted by the ``auditor_outbox_dead`` gauge;
* endpoint gone (HTTP 410) -> this row and every pending row of that sink dead, and the
  sink refuses new ones until the process restarts;
* anything else -> retried at ``next_attempt_at``: exponential backoff with jitter, or the
  sink's ``Retry-After`` when longer, capped at ``alerts.delivery_retry_max``. The time is
  stored, so retries go on across restarts and a sink that is down for hours loses nothing.

:func:`resend_firing` enqueues the periodic re-sends of firing alerts to Alertmanager.
:func:`delivery_tick` is what the daemon runs on every tick: both, then the outbox counts.

The database is reached only through the store's outbox part
(:class:`~auditor.store.OutboxStore`): this module records no run and reads no history.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import structlog

from auditor.alerts.routing import SinkFilter
from auditor.alerts.sinks import AlertmanagerSink, Sink, build_sinks, close_sinks
from auditor.config import AlertsSettings
from auditor.errors import DeliveryError
from auditor.model import Alert, iso, utcnow
from auditor.store import Delivery, OutboxStore

log = structlog.get_logger("auditor.delivery")

# A lease outlives the slowest delivery it covers by this much: a lease that ran out while
# its delivery is still in flight would let a second deliverer send the same row, and one
# left by a crashed deliverer keeps its rows waiting only this long past that.
LEASE_MARGIN = timedelta(seconds=30)
# How often per re-send interval the firing alerts are looked at: a re-send goes out at most
# a quarter interval late, well within the margin the alert's end time leaves.
RESEND_CHECKS = 4
DEFAULT_BATCH = 200


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed delivery is tried again: ``initial`` x 2^(attempt-1), capped at
    ``maximum``, of which a random half is jitter (so retries of many rows spread out)."""

    initial: timedelta = timedelta(seconds=10)
    maximum: timedelta = timedelta(hours=1)

    @classmethod
    def of(cls, settings: AlertsSettings) -> RetryPolicy:
        return cls(settings.delivery_retry_min, settings.delivery_retry_max)

    def delay(self, attempt: int, retry_after: float | None = None) -> timedelta:
        """The pause after the ``attempt``-th failed attempt (1-based)."""
        ceiling = self.maximum.total_seconds()
        backoff = min(ceiling, self.initial.total_seconds() * 2.0 ** min(attempt - 1, 40))
        seconds = backoff / 2 + random.uniform(0.0, backoff / 2)
        if retry_after is not None:
            seconds = max(seconds, min(retry_after, ceiling))
        return timedelta(seconds=seconds)


@dataclass(slots=True)
class DeliveryReport:
    """What one pass did; ``pending``/``dead_total`` are the outbox counts after it (set by
    :func:`delivery_tick`)."""

    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    resent: int = 0
    disabled: list[str] = field(default_factory=list)
    pending: int | None = None
    dead_total: int | None = None

    @property
    def attempted(self) -> int:
        return self.delivered + self.retrying + self.dead


def delivery_id(delivery: Delivery) -> str:
    """The id a receiver sees (``webhook-id``): one per alert event and sink, so it stays
    the same across retries and restarts."""
    return f"msg_{delivery.alert.id}_{delivery.sink.replace(':', '-')}"


async def deliver_due(
    outbox: OutboxStore,
    sinks: Mapping[str, Sink],
    *,
    owner: str,
    now: datetime | None = None,
    batch: int = DEFAULT_BATCH,
    retry: RetryPolicy | None = None,
    lease_for: timedelta | None = None,
    time_budget: float | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> DeliveryReport:
    """Deliver due outbox rows of ``sinks`` until none is due, ``batch`` were attempted, or
    ``time_budget`` seconds have passed (deliveries in flight then still finish).

    Sinks are served side by side, the rows of one sink one after the other. ``now`` fixes
    the clock that decides what is due (tests); by default it is the time of each claim by
    ``clock`` (the daemon's follows the database's, so that replicas agree on leases).
    Rows of sinks not in ``sinks`` (no longer configured) are left pending. A claim holds
    its row for ``lease_for``, by default twice the slowest sink's timeout plus a margin.
    """
    retry = retry or RetryPolicy()
    report = DeliveryReport()
    if not sinks:
        return report
    if lease_for is None:
        lease_for = 2 * max(sink.timeout for sink in sinks.values()) + LEASE_MARGIN
    stop_at = None if time_budget is None else time.monotonic() + time_budget
    # A sink that failed in this pass waits for its next attempt, even if that falls due
    # while the pass is still at work on the other sinks.
    resting: set[str] = set()
    while report.attempted < batch and (stop_at is None or time.monotonic() < stop_at):
        ready = [name for name in sinks if name not in resting]
        claimed = await outbox.claim_outbox(
            owner,
            now or clock(),
            limit=min(len(ready), batch - report.attempted),
            lease_for=lease_for,
            sinks=ready,
        )
        if not claimed:
            break
        outcomes = await asyncio.gather(
            *(
                _deliver_one(
                    outbox, sinks[d.sink], d, owner=owner, now=now, retry=retry, clock=clock
                )
                for d in claimed
            )
        )
        for delivery, outcome in zip(claimed, outcomes, strict=True):
            if outcome == "delivered":
                report.delivered += 1
            elif outcome == "retrying":
                report.retrying += 1
                resting.add(delivery.sink)
            else:
                report.dead += 1
                if outcome == "disabled":
                    report.disabled.append(delivery.sink)
    return report


Outcome = Literal["delivered", "retrying", "dead", "disabled"]


async def _deliver_one(
    outbox: OutboxStore,
    sink: Sink,
    delivery: Delivery,
    *,
    owner: str,
    now: datetime | None,
    retry: RetryPolicy,
    clock: Callable[[], datetime],
) -> Outcome:
    alert = delivery.alert
    bound = log.bind(sink=delivery.sink, alert_id=alert.id, kind=alert.kind, target=alert.target)
    attempt = delivery.attempts + 1
    try:
        await sink.deliver(alert.as_json(), delivery_id=delivery_id(delivery))
    except DeliveryError as exc:
        error = str(exc)
        if exc.disable:
            await outbox.mark_dead(delivery.id, error, owner=owner)
            others = await outbox.kill_sink(
                delivery.sink, f"not sent: {delivery.sink} is disabled (HTTP 410 Gone)"
            )
            bound.error("delivery.sink_disabled", error=error, also_dead=others)
            return "disabled"
        if exc.permanent:
            await outbox.mark_dead(delivery.id, error, owner=owner)
            bound.error("delivery.dead", error=error, attempts=attempt)
            return "dead"
        await _retry_later(outbox, delivery, error, exc.retry_after, owner, now or clock(), retry)
        return "retrying"
    except Exception as exc:
        # A fault in one sink must not stop the deliveries to the others; the row is
        # retried like any failure. Only the type is kept: a message could hold a URL.
        error = f"{delivery.sink}: unexpected {type(exc).__name__}"
        bound.error("delivery.sink_fault", error=error)
        await _retry_later(outbox, delivery, error, None, owner, now or clock(), retry)
        return "retrying"
    await outbox.mark_delivered(delivery.id)
    bound.info("delivery.ok", attempts=attempt)
    return "delivered"


async def _retry_later(
    outbox: OutboxStore,
    delivery: Delivery,
    error: str,
    retry_after: float | None,
    owner: str,
    now: datetime,
    retry: RetryPolicy,
) -> None:
    attempt = delivery.attempts + 1
    # Counted from the failure (``now``), not from the claim: a slow failure (a timeout)
    # must not eat the pause that follows it.
    next_at = now + retry.delay(attempt, retry_after)
    await outbox.mark_failed(delivery.id, error, next_at, owner=owner)
    log.warning(
        "delivery.retry",
        sink=delivery.sink,
        alert_id=delivery.alert.id,
        attempts=attempt,
        next_attempt_at=iso(next_at),
        error=error,
    )


async def resend_firing(
    outbox: OutboxStore, sinks: Mapping[str, Sink], *, now: datetime | None = None
) -> int:
    """Enqueue, for every Alertmanager sink, the alerts that still fire and were last sent
    to it ``resend_every`` ago or more (or never: a sink added to the configuration learns
    what fires). Returns how many rows were enqueued. Call it on every tick: it looks at
    the database only :data:`RESEND_CHECKS` times per ``resend_every``."""
    total = 0
    for name, sink in sinks.items():
        if not isinstance(sink, AlertmanagerSink):
            continue
        moment = now or utcnow()
        last = sink.resend_checked
        if last is not None and timedelta(0) <= moment - last < sink.resend_every / RESEND_CHECKS:
            continue
        sink.resend_checked = moment

        def accept(alert: Alert, rule: SinkFilter = sink.filter) -> bool:
            return rule.matches(alert.target, alert.kind, alert.severity)

        total += await outbox.enqueue_resends(
            name, now=moment, not_since=moment - sink.resend_every, accept=accept
        )
    return total


async def delivery_tick(
    outbox: OutboxStore,
    sinks: Mapping[str, Sink],
    *,
    owner: str,
    retry: RetryPolicy | None = None,
    batch: int = DEFAULT_BATCH,
    time_budget: float | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> DeliveryReport:
    """One round of the daemon: re-sends of firing alerts, the due deliveries, the counts."""
    resent = await resend_firing(outbox, sinks, now=clock())
    report = await deliver_due(
        outbox,
        sinks,
        owner=owner,
        retry=retry,
        batch=batch,
        time_budget=time_budget,
        clock=clock,
    )
    report.resent = resent
    report.pending, report.dead_total = await outbox.outbox_counts()
    return report


async def deliver_once(
    outbox: OutboxStore, settings: AlertsSettings, *, owner: str, time_budget: float | None = None
) -> DeliveryReport:
    """One delivery round with the configured sinks, opened and closed here (``once``)."""
    sinks = build_sinks(settings)
    try:
        return await delivery_tick(
            outbox, sinks, owner=owner, retry=RetryPolicy.of(settings), time_budget=time_budget
        )
    finally:
        await close_sinks(sinks)


def deliverer_name(role: str) -> str:
    """A lease owner unique to this process: ``<role>:<host>:<pid>``."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}"


__all__ = [
    "DEFAULT_BATCH",
    "LEASE_MARGIN",
    "RESEND_CHECKS",
    "DeliveryReport",
    "RetryPolicy",
    "deliver_due",
    "deliver_once",
    "deliverer_name",
    "delivery_id",
    "delivery_tick",
    "resend_firing",
]
