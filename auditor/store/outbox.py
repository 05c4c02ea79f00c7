"""Alert delivery: the outbox, claimed and settled by :mod:`auditor.alerts.delivery`.

Order is kept per sink: only the oldest undelivered live row of a sink (its head) can be
claimed, so a row waiting for its retry holds back the rows behind it; a dead row holds back
nothing. A claim is a lease (owner, until): replicas never work on one row at once, and a
crashed deliverer's rows come back when its lease runs out. PostgreSQL claimers skip the rows
another claimer has locked (SKIP LOCKED); SQLite has one writer.

This part writes only ``outbox`` rows (reading the alert events they carry, and locking the
firing alert states while re-sends are enqueued); a run's own rows are enqueued by
:mod:`auditor.store.record` in the run's transaction. It sends nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Row, Select, and_, func, insert, or_, select, update

from auditor.model import Alert, AlertStatus, Severity, utcnow
from auditor.store.database import BATCH, Part, batched
from auditor.store.records import Delivery, field_changes
from auditor.store.schema import alert_events, alerts, outbox, targets


class OutboxStore(Part):
    """The outbox: deliveries claimed under a lease, settled, retried, given up, re-sent."""

    async def claim_outbox(
        self,
        owner: str,
        now: datetime,
        *,
        limit: int,
        lease_for: timedelta,
        sinks: Collection[str] | None = None,
    ) -> list[Delivery]:
        """Lease up to ``limit`` due deliveries, at most one per sink (each sink's head).

        ``sinks`` restricts the claim to those sink names (the ones this process can send to).
        """
        if sinks is not None and not sinks:
            return []
        earlier = outbox.alias("earlier")
        blocked = (
            select(earlier.c.id)
            .where(
                earlier.c.sink == outbox.c.sink,
                earlier.c.id < outbox.c.id,
                earlier.c.delivered_at.is_(None),
                earlier.c.dead.is_(False),
            )
            .exists()
        )
        heads = (
            select(outbox.c.id)
            .where(
                outbox.c.delivered_at.is_(None),
                outbox.c.dead.is_(False),
                outbox.c.next_attempt_at <= now,
                or_(outbox.c.lease_until.is_(None), outbox.c.lease_until <= now),
                ~blocked,
            )
            .order_by(outbox.c.id)
            .limit(limit)
        )
        if sinks is not None:
            heads = heads.where(outbox.c.sink.in_(sorted(sinks)))
        if self.dialect == "postgresql":
            heads = heads.with_for_update(skip_locked=True, of=outbox)
        with self._errors("cannot claim alert deliveries"):
            async with self._write() as conn:
                ids = list((await conn.execute(heads)).scalars())
                if not ids:
                    return []
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id.in_(ids))
                    .values(lease_owner=owner, lease_until=now + lease_for)
                )
                stmt = _deliveries().where(outbox.c.id.in_(ids)).order_by(outbox.c.id)
                rows = (await conn.execute(stmt)).all()
        return [_delivery(r) for r in rows]

    async def _settle(
        self, delivery_id: int, owner: str | None, action: str, **values: Any
    ) -> bool:
        stmt = update(outbox).where(outbox.c.id == delivery_id, outbox.c.delivered_at.is_(None))
        if owner is not None:
            # A deliverer whose lease ran out (and was taken over) must not undo the new
            # holder's work; a delivery that did happen is recorded whoever holds the row.
            stmt = stmt.where(outbox.c.lease_owner == owner)
        stmt = stmt.values(lease_owner=None, lease_until=None, **values)
        with self._errors(f"cannot record {action} of delivery {delivery_id}"):
            async with self._write() as conn:
                return bool((await conn.execute(stmt)).rowcount)

    async def mark_delivered(self, delivery_id: int, at: datetime | None = None) -> bool:
        """Record a delivery as done; False when it was already settled."""
        return await self._settle(
            delivery_id,
            None,
            "the success",
            delivered_at=at or utcnow(),
            attempts=outbox.c.attempts + 1,
        )

    async def mark_failed(
        self, delivery_id: int, error: str, next_attempt_at: datetime, *, owner: str | None = None
    ) -> bool:
        """Record a failed attempt; the row is due again at ``next_attempt_at``."""
        return await self._settle(
            delivery_id,
            owner,
            "the failure",
            attempts=outbox.c.attempts + 1,
            last_error=error,
            next_attempt_at=next_attempt_at,
        )

    async def mark_dead(self, delivery_id: int, error: str, *, owner: str | None = None) -> bool:
        """Give a delivery up for good (the sink refused it); it stays listed as dead."""
        return await self._settle(
            delivery_id,
            owner,
            "the refusal",
            attempts=outbox.c.attempts + 1,
            last_error=error,
            dead=True,
        )

    async def kill_sink(self, sink: str, error: str) -> int:
        """Mark every pending delivery of ``sink`` dead (its endpoint is gone); how many."""
        stmt = (
            update(outbox)
            .where(
                outbox.c.sink == sink,
                outbox.c.delivered_at.is_(None),
                outbox.c.dead.is_(False),
            )
            .values(dead=True, last_error=error, lease_owner=None, lease_until=None)
        )
        with self._errors(f"cannot disable sink {sink}"):
            async with self._write() as conn:
                return int((await conn.execute(stmt)).rowcount)

    async def release_deliveries(self, owner: str | None = None) -> int:
        """Give up the leases ``owner`` holds (on shutdown), without counting an attempt.

        Without an owner, every lease: for a process that knows it is the only deliverer
        (SQLite, behind its file lock) and restarts after a crash.
        """
        stmt = update(outbox).where(
            outbox.c.lease_owner.is_not(None), outbox.c.delivered_at.is_(None)
        )
        if owner is not None:
            stmt = stmt.where(outbox.c.lease_owner == owner)
        stmt = stmt.values(lease_owner=None, lease_until=None)
        with self._errors("cannot release alert deliveries"):
            async with self._write() as conn:
                return int((await conn.execute(stmt)).rowcount)

    async def undelivered(
        self, sink: str | None = None, *, dead_only: bool = False, limit: int | None = None
    ) -> list[Delivery]:
        """Deliveries not done, pending and dead (only dead with ``dead_only``), oldest first."""
        stmt = _deliveries().where(outbox.c.delivered_at.is_(None))
        if dead_only:
            stmt = stmt.where(outbox.c.dead.is_(True))
        if sink is not None:
            stmt = stmt.where(outbox.c.sink == sink)
        stmt = stmt.order_by(outbox.c.id).limit(limit)
        with self._errors("cannot read undelivered alerts"):
            async with self._read() as conn:
                rows = (await conn.execute(stmt)).all()
        return [_delivery(r) for r in rows]

    async def outbox_counts(self) -> tuple[int, int]:
        """How many deliveries are pending and how many are dead."""
        stmt = (
            select(outbox.c.dead, func.count())
            .where(outbox.c.delivered_at.is_(None))
            .group_by(outbox.c.dead)
        )
        with self._errors("cannot count undelivered alerts"):
            async with self._read() as conn:
                counts = {bool(dead): int(n) for dead, n in (await conn.execute(stmt)).all()}
        return counts.get(False, 0), counts.get(True, 0)

    async def enqueue_resends(
        self,
        sink: str,
        *,
        now: datetime,
        not_since: datetime,
        accept: Callable[[Alert], bool] = lambda _alert: True,
    ) -> int:
        """Enqueue for ``sink`` the newest firing event of each alert that still fires.

        Skipped: alerts ``accept`` refuses, and alerts for which the sink has a pending row
        or one enqueued at or after ``not_since``. The alert rows are locked meanwhile, so
        a run that resolves one of them commits (and enqueues the resolution) after this,
        never in between: the sink gets the resolution last. Returns how many were enqueued.
        """
        firing = select(alerts.c.fingerprint).where(alerts.c.status == "firing")
        if self.dialect == "postgresql":
            firing = firing.with_for_update()
        with self._errors(f"cannot enqueue re-sends for {sink}"):
            async with self._write() as conn:
                fingerprints = list((await conn.execute(firing)).scalars())
                chosen: list[int] = []
                for batch in batched(fingerprints, BATCH):
                    busy = (
                        select(alert_events.c.fingerprint)
                        .select_from(
                            outbox.join(alert_events, alert_events.c.id == outbox.c.event_id)
                        )
                        .where(
                            outbox.c.sink == sink,
                            alert_events.c.fingerprint.in_(batch),
                            or_(
                                and_(outbox.c.delivered_at.is_(None), outbox.c.dead.is_(False)),
                                outbox.c.created_at >= not_since,
                            ),
                        )
                    )
                    latest = (
                        select(func.max(alert_events.c.id))
                        .where(
                            alert_events.c.fingerprint.in_(batch),
                            alert_events.c.fingerprint.not_in(busy),
                            alert_events.c.status == "firing",
                        )
                        .group_by(alert_events.c.fingerprint)
                    )
                    stmt = _events().where(alert_events.c.id.in_(latest))
                    found = [_alert(r) for r in (await conn.execute(stmt)).all()]
                    chosen.extend(a.id for a in found if accept(a))
                rows = [
                    {
                        "event_id": event_id,
                        "sink": sink,
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                    for event_id in sorted(chosen)
                ]
                for batch_rows in batched(rows, BATCH):
                    await conn.execute(insert(outbox), batch_rows)
        return len(rows)


def _events() -> Select[Any]:
    return select(alert_events, targets.c.name.label("target")).join(
        targets, targets.c.id == alert_events.c.target_id
    )


def _alert(r: Row[Any]) -> Alert:
    return Alert(
        id=r.id,
        fingerprint=r.fingerprint,
        kind=r.kind,
        severity=cast(Severity, r.severity),
        status=cast(AlertStatus, r.status),
        target=r.target,
        collection=r.collection,
        key=r.key,
        run_id=r.run_id,
        at=r.at,
        message=r.message,
        fields=field_changes(r.fields),
    )


def _deliveries() -> Select[Any]:
    return (
        select(
            outbox.c.id.label("delivery_id"),
            outbox.c.sink,
            outbox.c.attempts,
            outbox.c.next_attempt_at,
            outbox.c.created_at,
            outbox.c.delivered_at,
            outbox.c.dead,
            outbox.c.last_error,
            alert_events,
            targets.c.name.label("target"),
        )
        .join(alert_events, alert_events.c.id == outbox.c.event_id)
        .join(targets, targets.c.id == alert_events.c.target_id)
    )


def _delivery(r: Row[Any]) -> Delivery:
    return Delivery(
        id=r.delivery_id,
        sink=r.sink,
        alert=_alert(r),
        attempts=r.attempts,
        next_attempt_at=r.next_attempt_at,
        created_at=r.created_at,
        delivered_at=r.delivered_at,
        dead=bool(r.dead),
        last_error=r.last_error,
    )
