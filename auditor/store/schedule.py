"""The daemon's schedule: which targets are due, and the leases that share them out.

The schedule lives in the targets table: ``next_run_at`` per target, and a lease
(``lease_owner``, ``lease_until``) that lets one process of several audit a target while the
others skip it. A lease is only ever taken by :meth:`ScheduleStore.claim_due`, in the same
transaction as the query that found the target due, so two processes never both hold one; it
is kept alive by :meth:`~ScheduleStore.renew_leases` and given back by
:meth:`~ScheduleStore.finish_claim` (with the next time) or
:meth:`~ScheduleStore.release_leases`.

Time is the database's: a method given no ``now`` decides what is due and how long a lease
lasts by the database server's clock (``now()`` on PostgreSQL), so replicas whose host clocks
disagree still agree on every lease. On SQLite the database's clock is this host's (one
process, see :mod:`auditor.store.lock`). An explicit ``now`` is for tests and tools.

This part writes no contents, changes nor alerts: the only runs it touches are those left
``running`` by a holder that died, which it marks failed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Interval,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    type_coerce,
    update,
)

from auditor.model import utcnow
from auditor.store.database import BATCH, Part, batched
from auditor.store.records import ClaimedTarget
from auditor.store.schema import UTCDateTime, runs, targets

# The error of a run whose process stopped before recording it (crash, kill, shutdown).
INTERRUPTED = "interrupted: the process auditing the target stopped before the run was recorded"


class ScheduleStore(Part):
    """The daemon's schedule: targets synchronised with the configuration, claims, leases."""

    def _now(self, now: datetime | None) -> ColumnElement[datetime]:
        """``now``, or the database's time now, as an SQL expression."""
        if now is None and self.dialect == "postgresql":
            # The start of the transaction: each schedule statement runs in a short one.
            return func.now(type_=UTCDateTime())
        return literal(now if now is not None else utcnow(), UTCDateTime())

    def _later(self, now: datetime | None, by: timedelta) -> ColumnElement[datetime]:
        """``by`` after :meth:`_now` (SQLite has no date arithmetic of its own)."""
        if now is None and self.dialect == "postgresql":
            return type_coerce(func.now() + literal(by, Interval()), UTCDateTime())
        return literal((now if now is not None else utcnow()) + by, UTCDateTime())

    @property
    def shared(self) -> bool:
        """Whether other processes may claim targets from this database (not on SQLite: the
        lock file keeps it to one process)."""
        return self.dialect != "sqlite"

    async def database_time(self) -> datetime:
        """The database server's clock now (this host's on SQLite)."""
        if self.dialect != "postgresql":
            return utcnow()
        stmt = select(func.clock_timestamp(type_=UTCDateTime()))
        with self._errors("cannot read the database's clock"):
            async with self._heartbeat() as conn:
                value: datetime = (await conn.execute(stmt)).scalar_one()
        return value

    async def sync_targets(
        self,
        configured: Sequence[tuple[str, str]],
        first_run_at: Callable[[str], datetime],
    ) -> None:
        """Make the scheduled targets those of the configuration: ``(name, url)`` pairs.

        A new target is created active and due at ``first_run_at(name)``; a known one gets
        its URL, and a time from ``first_run_at`` when it has none (it was only audited by
        ``once``) or was inactive. A target missing from ``configured`` becomes inactive: it
        keeps its record, and is no longer claimed.
        """
        wanted = dict(configured)
        with self._errors("cannot synchronise the targets with the configuration"):
            async with self._write() as conn:
                known = {
                    r.name: r
                    for r in await conn.execute(
                        select(targets.c.id, targets.c.name, targets.c.url, targets.c.active)
                    )
                }
                now = utcnow()
                new = [
                    {
                        "name": name,
                        "url": url,
                        "created_at": now,
                        "active": True,
                        "next_run_at": first_run_at(name),
                    }
                    for name, url in wanted.items()
                    if name not in known
                ]
                for batch in batched(new, BATCH):
                    # Another replica may be adding the same targets at this moment.
                    ins = self._insert(targets).on_conflict_do_nothing(
                        index_elements=[targets.c.name]
                    )
                    await conn.execute(ins, batch)
                # Decided on the row as it is when updated, not as read above: a replica may
                # have moved next_run_at since, and writing back the old value would make
                # the target due twice.
                placed = or_(targets.c.next_run_at.is_(None), ~targets.c.active)
                refresh = (
                    update(targets)
                    .where(targets.c.id == bindparam("b_id"))
                    .values(
                        url=bindparam("b_url"),
                        active=True,
                        next_run_at=case(
                            (placed, bindparam("b_next", type_=UTCDateTime())),
                            else_=targets.c.next_run_at,
                        ),
                    )
                )
                rows = [
                    {"b_id": row.id, "b_url": url, "b_next": first_run_at(name)}
                    for name, url in wanted.items()
                    if (row := known.get(name)) is not None
                ]
                for batch in batched(rows, BATCH):
                    await conn.execute(refresh, batch)
                gone = [row.id for name, row in known.items() if name not in wanted and row.active]
                for batch in batched(gone, BATCH):
                    await conn.execute(
                        update(targets).where(targets.c.id.in_(batch)).values(active=False)
                    )

    async def claim_due(
        self, owner: str, now: datetime | None, limit: int, lease_for: timedelta
    ) -> list[ClaimedTarget]:
        """Lease up to ``limit`` active targets due at ``now`` (None: the database's time) to
        ``owner`` for ``lease_for``, soonest first.

        A target under another live lease is skipped. On PostgreSQL the rows are taken with
        ``FOR UPDATE SKIP LOCKED``, so replicas claiming at the same moment split the due
        targets between them; on SQLite the write lock taken at BEGIN serialises claims.
        Runs of a claimed target still ``running`` were left by a holder that died (its
        lease expired): they are marked failed here, while the claim holds the target.
        """
        if limit < 1:
            return []
        at = self._now(now)
        due = (
            select(
                targets.c.id,
                targets.c.name,
                targets.c.url,
                targets.c.next_run_at,
                at.label("now"),
            )
            .where(
                targets.c.active,
                targets.c.next_run_at <= at,
                or_(targets.c.lease_until.is_(None), targets.c.lease_until < at),
            )
            .order_by(targets.c.next_run_at, targets.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self._errors("cannot claim due targets"):
            async with self._write() as conn:
                rows = (await conn.execute(due)).all()
                if not rows:
                    return []
                # The time the query ran at, as the database saw it: the lease runs from it.
                claimed_at: datetime = rows[0].now
                until = claimed_at + lease_for
                ids = [r.id for r in rows]
                await conn.execute(
                    update(targets)
                    .where(targets.c.id.in_(ids))
                    .values(lease_owner=owner, lease_until=until)
                )
                ended = await conn.execute(
                    update(runs)
                    .where(runs.c.status == "running", runs.c.target_id.in_(ids))
                    .values(status="failed", finished_at=claimed_at, error=INTERRUPTED)
                    .returning(runs.c.target_id)
                )
                interrupted = Counter(int(i) for i in ended.scalars())
        return [
            ClaimedTarget(
                id=r.id,
                name=r.name,
                url=r.url,
                due=r.next_run_at,
                lease_until=until,
                interrupted_runs=interrupted[r.id],
            )
            for r in rows
        ]

    async def finish_claim(self, target_id: int, owner: str, next_run_at: datetime) -> bool:
        """Give the lease back and set the target's next time, if the lease is still ours.

        False when it is not (it expired and another process claimed the target): then
        nothing changes, the schedule being that process's now.
        """
        stmt = (
            update(targets)
            .where(targets.c.id == target_id, targets.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None, next_run_at=next_run_at)
        )
        with self._errors(f"cannot finish the claim of target {target_id}"):
            async with self._write() as conn:
                return (await conn.execute(stmt)).rowcount == 1

    async def renew_leases(
        self,
        owner: str,
        target_ids: Collection[int],
        lease_for: timedelta,
        now: datetime | None = None,
    ) -> set[int]:
        """Extend ``owner``'s leases of ``target_ids`` to ``lease_for`` from ``now`` (None: the
        database's time); returns the ids still held.

        A lease that ran out is renewed too while nobody else has claimed the target: until
        then nobody else audits it either.
        """
        if not target_ids:
            return set()
        stmt = (
            update(targets)
            .where(targets.c.id.in_(list(target_ids)), targets.c.lease_owner == owner)
            .values(lease_until=self._later(now, lease_for))
            .returning(targets.c.id)
        )
        with self._errors("cannot renew leases"):
            # Apart from the pool: a renewal must not queue behind the audits it keeps alive.
            async with self._heartbeat() as conn:
                return {int(i) for i in (await conn.execute(stmt)).scalars()}

    async def release_leases(self, owner: str) -> int:
        """Give back every lease of ``owner``, keeping ``next_run_at`` (so those targets are
        due again at once); returns how many. Runs of those targets still ``running`` are
        marked failed: call this only when ``owner`` audits nothing any more (shut down, or
        known dead)."""
        held = select(targets.c.id).where(targets.c.lease_owner == owner).scalar_subquery()
        with self._errors("cannot release leases"):
            async with self._write() as conn:
                await conn.execute(
                    update(runs)
                    .where(runs.c.status == "running", runs.c.target_id.in_(held))
                    .values(status="failed", finished_at=self._now(None), error=INTERRUPTED)
                )
                released = await conn.execute(
                    update(targets)
                    .where(targets.c.lease_owner == owner)
                    .values(lease_owner=None, lease_until=None)
                )
                return int(released.rowcount)

    async def lease_owners(self) -> list[str]:
        """The owners holding leases now (expired ones included)."""
        stmt = select(targets.c.lease_owner).where(targets.c.lease_owner.is_not(None)).distinct()
        with self._errors("cannot read leases"):
            async with self._read() as conn:
                return sorted(str(o) for o in (await conn.execute(stmt)).scalars())

    async def interrupt_orphaned_runs(self, now: datetime | None = None) -> int:
        """Mark failed the runs left ``running`` on targets nobody holds a live lease of at
        ``now`` (None: the database's time).

        Safe with replicas: a replica auditing a target holds (and renews) its lease, so
        only runs of holders that died, or of a ``once`` that is running now, match; the
        latter records its run anyway when it finishes.
        """
        at = self._now(now)
        live = select(targets.c.id).where(targets.c.lease_until >= at).scalar_subquery()
        stmt = (
            update(runs)
            .where(runs.c.status == "running", runs.c.target_id.not_in(live))
            .values(status="failed", finished_at=at, error=INTERRUPTED)
        )
        with self._errors("cannot mark interrupted runs"):
            async with self._write() as conn:
                return int((await conn.execute(stmt)).rowcount)

    async def next_due(self) -> datetime | None:
        """The soonest ``next_run_at`` of the active targets (None without any)."""
        stmt = select(func.min(targets.c.next_run_at)).where(targets.c.active)
        with self._errors("cannot read the schedule"):
            async with self._read() as conn:
                value: datetime | None = (await conn.execute(stmt)).scalar_one()
        return value
