"""The read side: what the CLI, the JSON API, the feed, the export and the metrics read.

Targets, runs, alert events and the history, each in id order with the same window
(``target``, ``since``/``until``, ``after_id``/``before_id``, ``limit``, ``newest_first``);
the filters of the history and the alerts (:mod:`auditor.store.filters`) and how many
records a filter matches; the snapshot at any complete run, rebuilt from the versions
(:mod:`auditor.store.history`); which changes are a target's baseline (derived from the
chain, see :data:`BASELINE`); the chain's head and its verification; where each target
stands (``status``); the fleet's health for the gauges.

This part never writes, and nothing in it takes a lock.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Select, and_, func, or_, select

from auditor.errors import StoreError
from auditor.model import Alert, AlertStatus, ChangeKind, Run, RunStatus, Severity, Snapshot, utcnow
from auditor.store.database import Part
from auditor.store.filters import alert_filters, change_filters, where, window
from auditor.store.history import read_items, walk
from auditor.store.records import (
    AlertState,
    ChangeRecord,
    FleetHealth,
    TargetRow,
    TargetStatus,
    VerifyResult,
    field_changes,
)
from auditor.store.schema import alert_events, alerts, chain, changes, runs, targets, versions

VERIFY_BATCH = 1000

# A change is part of its target's baseline when its run is the run of the target's first
# change record: a first complete run records every item it found as 'added', the failover
# settings always among them, so that run is the first to write to the chain for the target.
# Derived from the target and run_id of records and from their order, all of which the
# chain's hashes cover: verify() vouches for the mark as for the records, old records get it
# too, and nothing is stored. One index lookup (ix_changes_target_id_id) per record read.
_first = changes.alias("first_of_target")
BASELINE = (
    changes.c.run_id
    == select(_first.c.run_id)
    .where(_first.c.target_id == changes.c.target_id)
    .order_by(_first.c.id)
    .limit(1)
    .correlate(changes)
    .scalar_subquery()
).label("baseline")


class ReadStore(Part):
    """The read side of the record, for the CLI, the API and the metrics."""

    # -- targets and runs -----------------------------------------------------------------

    async def targets(self) -> list[TargetRow]:
        with self._errors("cannot read targets"):
            async with self._read() as conn:
                rows = (await conn.execute(select(targets).order_by(targets.c.name))).all()
        return [
            TargetRow(
                id=r.id,
                name=r.name,
                url=r.url,
                next_run_at=r.next_run_at,
                lease_owner=r.lease_owner,
                lease_until=r.lease_until,
                last_complete_run_id=r.last_complete_run_id,
                created_at=r.created_at,
                active=r.active,
            )
            for r in rows
        ]

    async def run(self, run_id: int) -> Run | None:
        stmt = (
            select(runs, targets.c.name.label("target"))
            .join(targets, targets.c.id == runs.c.target_id)
            .where(runs.c.id == run_id)
        )
        with self._errors(f"cannot read run {run_id}"):
            async with self._read() as conn:
                row = (await conn.execute(stmt)).one_or_none()
        return None if row is None else _run(row)

    async def runs(
        self,
        target: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 100,
        after_id: int | None = None,
        before_id: int | None = None,
        newest_first: bool = False,
    ) -> list[Run]:
        """Runs in id order (``newest_first`` reverses it); ``since`` <= started_at < ``until``."""
        stmt = select(runs, targets.c.name.label("target")).join(
            targets, targets.c.id == runs.c.target_id
        )
        stmt = window(
            stmt,
            runs.c.id,
            runs.c.started_at,
            target=target,
            since=since,
            until=until,
            limit=limit,
            after_id=after_id,
            before_id=before_id,
            newest_first=newest_first,
        )
        with self._errors("cannot read runs"):
            async with self._read() as conn:
                rows = (await conn.execute(stmt)).all()
        return [_run(r) for r in rows]

    # -- contents -------------------------------------------------------------------------

    async def snapshot_at(self, run_id: int) -> Snapshot:
        """The items present at complete run ``run_id``; StoreError for any other run."""
        with self._errors(f"cannot read the snapshot of run {run_id}"):
            async with self._read() as conn:
                row = (
                    await conn.execute(
                        select(runs.c.target_id, runs.c.status, targets.c.name)
                        .join(targets, targets.c.id == runs.c.target_id)
                        .where(runs.c.id == run_id)
                    )
                ).one_or_none()
                if row is None:
                    raise StoreError(f"database {self.url_for_display}: no run {run_id}")
                if row.status != "ok":
                    raise StoreError(
                        f"run {run_id} of {row.name} is {row.status}, not complete: "
                        "it has no snapshot"
                    )
                present = and_(
                    versions.c.first_run_id <= run_id,
                    or_(versions.c.last_run_id.is_(None), versions.c.last_run_id >= run_id),
                )
                items = await read_items(conn, present, row.target_id)
        return Snapshot.of(row.name, items)

    # -- alerts ---------------------------------------------------------------------------

    async def alert_events(
        self,
        target: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 100,
        after_id: int | None = None,
        before_id: int | None = None,
        newest_first: bool = False,
        kinds: Collection[str] | None = None,
        severities: Collection[str] | None = None,
        firing: bool = False,
    ) -> list[Alert]:
        """Alert events in id order (``newest_first`` reverses it); ``since`` <= at < ``until``.

        ``kinds``: only these kinds. ``severities``: only these severities, a resolution
        (recorded as ``info``) counting with the severity of the condition it resolves, as a
        sink's ``min_severity`` does. ``firing``: only the conditions firing now, each once
        (its latest event).
        """
        stmt = select(alert_events, targets.c.name.label("target")).join(
            targets, targets.c.id == alert_events.c.target_id
        )
        stmt = alert_filters(stmt, kinds=kinds, severities=severities, firing=firing)
        stmt = window(
            stmt,
            alert_events.c.id,
            alert_events.c.at,
            target=target,
            since=since,
            until=until,
            limit=limit,
            after_id=after_id,
            before_id=before_id,
            newest_first=newest_first,
        )
        with self._errors("cannot read alerts"):
            async with self._read() as conn:
                rows = (await conn.execute(stmt)).all()
        return [
            Alert(
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
            for r in rows
        ]

    # -- history --------------------------------------------------------------------------

    async def changes(
        self,
        target: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 100,
        after_id: int | None = None,
        before_id: int | None = None,
        newest_first: bool = False,
        run_id: int | None = None,
        key: str | None = None,
        kinds: Collection[str] | None = None,
        collections: Collection[str] | None = None,
    ) -> list[ChangeRecord]:
        """Recorded changes in chain order (``newest_first`` reverses it), each marked
        ``baseline`` when its run was its target's first complete run; ``key``: only the
        changes of that item, ``kinds`` and ``collections``: only those."""
        stmt = select(changes, targets.c.name.label("target"), BASELINE).join(
            targets, targets.c.id == changes.c.target_id
        )
        if run_id is not None:
            stmt = stmt.where(changes.c.run_id == run_id)
        stmt = change_filters(stmt, key=key, kinds=kinds, collections=collections)
        stmt = window(
            stmt,
            changes.c.id,
            changes.c.at,
            target=target,
            since=since,
            until=until,
            limit=limit,
            after_id=after_id,
            before_id=before_id,
            newest_first=newest_first,
        )
        with self._errors("cannot read the history"):
            async with self._read() as conn:
                rows = (await conn.execute(stmt)).all()
        return [
            ChangeRecord(
                id=r.id,
                run_id=r.run_id,
                target=r.target,
                collection=r.collection,
                key=r.key,
                kind=cast(ChangeKind, r.kind),
                before=r.before,
                after=r.after,
                fields=field_changes(r.fields),
                at=r.at,
                hash=r.hash,
                prev_hash=r.prev_hash,
                baseline=bool(r.baseline),
            )
            for r in rows
        ]

    async def chain_head(self) -> tuple[str, int]:
        """The hash of the newest change (64 zeros when there is none) and the chain length."""
        with self._errors("cannot read the chain head"):
            async with self._read() as conn:
                row = (
                    await conn.execute(select(chain.c.head, chain.c.length).where(chain.c.id == 1))
                ).one_or_none()
        if row is None:
            raise StoreError(f"database {self.url_for_display}: the history chain has no head row")
        return row.head, row.length

    async def verify(self, *, batch: int = VERIFY_BATCH) -> VerifyResult:
        """Walk the whole chain (``batch`` records at a time) and recompute every link."""
        with self._errors("cannot verify the history"):
            self._check_open()
            async with self._db.engine.connect() as conn:
                if self.dialect == "postgresql":
                    # One snapshot for the whole walk, so that appends made meanwhile by
                    # other writers cannot look like records missing from the head.
                    await conn.execution_options(isolation_level="REPEATABLE READ")
                return await walk(conn, batch)

    # -- counts (how much a --limit left out) ---------------------------------------------

    async def count_runs(
        self,
        target: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many runs :meth:`runs` would list without a limit."""
        stmt = select(func.count()).select_from(
            runs.join(targets, targets.c.id == runs.c.target_id)
        )
        return await self._count(
            where(stmt, runs.c.started_at, target=target, since=since, until=until), "runs"
        )

    async def count_changes(
        self,
        target: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        key: str | None = None,
        kinds: Collection[str] | None = None,
        collections: Collection[str] | None = None,
    ) -> int:
        """How many changes :meth:`changes` would list without a limit."""
        stmt = select(func.count()).select_from(
            changes.join(targets, targets.c.id == changes.c.target_id)
        )
        stmt = where(stmt, changes.c.at, target=target, since=since, until=until)
        stmt = change_filters(stmt, key=key, kinds=kinds, collections=collections)
        return await self._count(stmt, "the history")

    async def count_alert_events(
        self,
        target: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Collection[str] | None = None,
        severities: Collection[str] | None = None,
        firing: bool = False,
    ) -> int:
        """How many alert events :meth:`alert_events` would list without a limit."""
        stmt = select(func.count()).select_from(
            alert_events.join(targets, targets.c.id == alert_events.c.target_id)
        )
        stmt = where(stmt, alert_events.c.at, target=target, since=since, until=until)
        stmt = alert_filters(stmt, kinds=kinds, severities=severities, firing=firing)
        return await self._count(stmt, "alerts")

    async def _count(self, stmt: Select[Any], what: str) -> int:
        with self._errors(f"cannot count {what}"):
            async with self._read() as conn:
                return int((await conn.execute(stmt)).scalar_one())

    # -- where each target stands (for `status`) ------------------------------------------

    async def target_status(self, names: Sequence[str] | None = None) -> list[TargetStatus]:
        """Per recorded target (only ``names``, when given), by name: its schedule, its last
        complete run, the finished runs since (all failed or incomplete) and the alerts
        firing now. A name with no record is left out."""
        last = runs.alias("last_complete")
        heads = select(
            targets.c.id,
            targets.c.name,
            targets.c.active,
            targets.c.next_run_at,
            targets.c.lease_owner,
            targets.c.lease_until,
            targets.c.last_complete_run_id,
            last.c.finished_at.label("complete_at"),
        ).select_from(targets.outerjoin(last, last.c.id == targets.c.last_complete_run_id))
        # Every run after the last complete one is failed, incomplete or still running.
        failures = (
            select(runs.c.target_id, func.count().label("n"))
            .join(targets, targets.c.id == runs.c.target_id)
            .where(
                runs.c.id > func.coalesce(targets.c.last_complete_run_id, 0),
                runs.c.status != "running",
            )
            .group_by(runs.c.target_id)
        )
        firing = (
            select(alerts)
            .join(targets, targets.c.id == alerts.c.target_id)
            .where(alerts.c.status == "firing")
            .order_by(alerts.c.first_seen, alerts.c.id)
        )
        if names is not None:
            wanted = targets.c.name.in_(list(names))
            heads, failures, firing = (
                heads.where(wanted),
                failures.where(wanted),
                firing.where(wanted),
            )
        with self._errors("cannot read the targets' status"):
            async with self._read() as conn:
                rows = (await conn.execute(heads.order_by(targets.c.name))).all()
                failed = {r.target_id: int(r.n) for r in await conn.execute(failures)}
                open_alerts: dict[int, list[AlertState]] = {}
                for r in await conn.execute(firing):
                    open_alerts.setdefault(r.target_id, []).append(_alert_state(r))
        return [
            TargetStatus(
                name=r.name,
                active=r.active,
                next_run_at=r.next_run_at,
                lease_owner=r.lease_owner,
                lease_until=r.lease_until,
                last_complete_run_id=r.last_complete_run_id,
                last_complete_at=r.complete_at,
                failures_in_row=failed.get(r.id, 0),
                open_alerts=tuple(open_alerts.get(r.id, ())),
            )
            for r in rows
        ]

    # -- fleet health (for /metrics) ------------------------------------------------------
    # Kept apart at the end of the class: read-only, used by the daemon's gauges.

    async def fleet_health(
        self, disconnected_after: int, *, names: Collection[str] | None = None
    ) -> FleetHealth:
        """Targets, the age of the oldest last-complete run, and how many are disconnected.

        ``names`` limits the figures to those targets (the configured ones: targets that
        left the configuration keep their record but should not age the gauge forever).
        One query, whatever the size of the fleet: per target it reads its last complete
        run by primary key and at most ``disconnected_after`` of the runs after it.
        """
        if disconnected_after < 1:
            raise ValueError("disconnected_after must be at least 1")
        last = runs.alias("last_complete")
        tail = runs.alias("tail")
        # The runs after the last complete one can only have failed (or be running), so
        # the target is disconnected exactly when the n-th finished one of them exists.
        nth_failure = (
            select(tail.c.id)
            .where(
                tail.c.target_id == targets.c.id,
                tail.c.id > func.coalesce(targets.c.last_complete_run_id, 0),
                tail.c.status != "running",
            )
            .order_by(tail.c.id)
            .limit(1)
            .offset(disconnected_after - 1)
            .correlate(targets)
            .scalar_subquery()
        )
        per_target = select(
            func.coalesce(last.c.finished_at, targets.c.created_at).label("complete_at"),
            nth_failure.label("nth_failure"),
        ).select_from(targets.outerjoin(last, last.c.id == targets.c.last_complete_run_id))
        if names is not None:
            per_target = per_target.where(targets.c.name.in_(list(names)))
        fleet = per_target.subquery()
        stmt = select(
            func.count(),
            func.min(fleet.c.complete_at),
            func.count(fleet.c.nth_failure),
        ).select_from(fleet)
        with self._errors("cannot read the fleet's health"):
            async with self._read() as conn:
                count, oldest, disconnected = (await conn.execute(stmt)).one()
        age: float | None = None
        if count:
            age = max(0.0, (utcnow() - oldest).total_seconds())
        return FleetHealth(
            targets=int(count), oldest_complete_age_s=age, disconnected=int(disconnected)
        )


def _alert_state(r: Row[Any]) -> AlertState:
    return AlertState(
        fingerprint=r.fingerprint,
        kind=r.kind,
        collection=r.collection,
        key=r.key,
        status=cast(AlertStatus, r.status),
        severity=cast(Severity, r.severity),
        first_seen=r.first_seen,
        last_seen=r.last_seen,
        last_notified=r.last_notified,
        resolved_at=r.resolved_at,
        message=r.message,
    )


def _run(r: Row[Any]) -> Run:
    return Run(
        id=r.id,
        target=r.target,
        started_at=r.started_at,
        finished_at=r.finished_at,
        status=cast(RunStatus, r.status),
        items=r.items,
        pages=r.pages,
        error=r.error,
    )
