"""The targets this replica holds: claiming due ones, renewing leases, giving them back.

A tick claims due targets (as many as there are free slots of ``audit.max_concurrent``)
with a lease, and each claim gets a task of its own (started by the daemon). When an
audit ends, the lease is given back with the target's next time (:mod:`.schedule`).
Several processes on one PostgreSQL share the fleet this way: a target is claimed by one
of them (``FOR UPDATE SKIP LOCKED``), and the targets of one that dies are claimed by the
others once its leases expire.

Leases are short (``schedule.lease``, 15 s by default) and kept alive by a heartbeat
(:meth:`Leases.beat`, every sixth of a lease) while their audits run, so a replica killed
mid-audit is taken over within a lease. Their length is counted by the database's clock,
never by this host's. A replica that cannot renew stops auditing before its lease can run
out: each audit knows, by this host's monotonic clock, the latest moment its lease is sure
to be held (a lease the database extended lasts from after the renewal was sent), and is
cancelled when half a lease is left without a renewal (on PostgreSQL: on SQLite no other
process can take it over), or at once when the database says another replica holds the
target now. So a target is never audited by two replicas at once. The renewals have a
database connection of their own (:meth:`auditor.store.database.Database.heartbeat`), so
that they never wait behind the audits they keep alive.

At start, what a crashed predecessor held is cleaned up; at shutdown, what this replica
holds (leases, outbox deliveries) is given back.

This module never runs an audit itself, never touches the scheduler or the sinks, and
never decides when to tick.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from auditor.config import Settings, TargetSettings
from auditor.errors import StoreError
from auditor.model import iso
from auditor.service.context import Context
from auditor.service.schedule import next_run
from auditor.store import ClaimedTarget

log = structlog.get_logger("auditor.service")

# Starts the audit of a claimed target: the coroutine its task runs.
AuditStarter = Callable[[ClaimedTarget, TargetSettings], Coroutine[Any, Any, None]]


def owner_id() -> str:
    """This process's name on leases: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def lease_for(settings: Settings) -> timedelta:
    """How long a claim holds a target without a renewal (``schedule.lease``).

    Leases of audits in flight are renewed every sixth of this (:func:`beat_every`), so
    only a process that died (or lost the database) lets one expire.
    """
    return settings.schedule.lease


def beat_every(settings: Settings) -> timedelta:
    """How often the heartbeat renews the leases of the audits in flight."""
    return settings.schedule.lease / 6


@dataclass
class Audit:
    """A claimed target, the task auditing it, and until when (``time.monotonic()``) its
    lease is sure to be held."""

    claim: ClaimedTarget
    target: TargetSettings
    task: asyncio.Task[None]
    held_until: float
    # Cancelled by the heartbeat; or its audit is over and its claim being finished.
    stopped: bool = False


class Leases:
    """The claims of this replica and their audits in flight (``audits``, by target id)."""

    def __init__(self, context: Context) -> None:
        self._ctx = context
        self.audits: dict[int, Audit] = {}
        # The last claim took as many targets as it had free slots: more may be due.
        self.backlog = False

    async def recover(self, *, sqlite: bool) -> None:
        """Clean up after a predecessor that crashed: its leases and its unfinished runs."""
        ctx = self._ctx
        released = 0
        if sqlite:
            # The file lock proves no other daemon uses this database: every lease in it
            # belongs to a process that is gone.
            for owner in await ctx.store.schedule.lease_owners():
                released += await ctx.store.schedule.release_leases(owner)
        # With replicas, another process's lease may be alive: only runs on targets without
        # a live lease are known to be abandoned.
        interrupted = await ctx.store.schedule.interrupt_orphaned_runs()
        deliveries = await ctx.store.outbox.release_deliveries() if sqlite else 0
        if released or interrupted or deliveries:
            log.warning(
                "service.recovered",
                leases_released=released,
                runs_interrupted=interrupted,
                deliveries_released=deliveries,
            )

    async def claim(self, now: datetime, start: AuditStarter) -> None:
        """Claim due targets for the free slots; ``start`` gives each its audit's task."""
        ctx = self._ctx
        free = ctx.settings.audit.max_concurrent - len(self.audits)
        if free <= 0:
            self.backlog = True
            return
        lease = lease_for(ctx.settings)
        # The database starts the lease after this moment: it is held until lease after it.
        sent = time.monotonic()
        claims = await ctx.store.schedule.claim_due(ctx.owner, None, free, lease)
        self.backlog = len(claims) >= free
        targets = ctx.targets
        unknown = []
        for claim in claims:
            if claim.interrupted_runs:
                log.warning(
                    "audit.interrupted",
                    target=claim.name,
                    runs=claim.interrupted_runs,
                    why="left running by a process that stopped; recorded as failed",
                )
            target = targets.get(claim.name)
            if target is None:
                unknown.append(claim)
                continue
            if claim.id in self.audits:
                # Its lease ran out while a stopped audit of it is still recording its run:
                # given back as it was, claimed again once that audit is gone.
                await ctx.store.schedule.finish_claim(claim.id, ctx.owner, claim.due)
                continue
            task = asyncio.create_task(start(claim, target), name=f"audit {claim.name}")
            self.audits[claim.id] = Audit(claim, target, task, sent + lease.total_seconds())
        for claim in unknown:
            # In the shared table but not in this process's configuration (replicas
            # configured differently): not audited here; left for later.
            log.warning("schedule.unknown_target", target=claim.name)
            await ctx.store.schedule.finish_claim(claim.id, ctx.owner, now + ctx.schedule.every)

    async def finish(self, claim: ClaimedTarget) -> None:
        """Give the lease back with the target's next time (its audit has ended)."""
        ctx = self._ctx
        audit = self.audits.get(claim.id)
        if audit is not None:
            # Nothing left to stop: a renewal racing this one must not cancel it.
            audit.stopped = True
        now = ctx.clock.now()
        next_at, skipped = next_run(ctx.schedule, claim.due, now, ctx.rng)
        if skipped:
            log.warning(
                "schedule.missed",
                target=claim.name,
                due=iso(claim.due),
                skipped=skipped,
                next_run_at=iso(next_at),
                why="audits not run in time were coalesced into this one",
            )
        try:
            held = await ctx.store.schedule.finish_claim(claim.id, ctx.owner, next_at)
        except StoreError as exc:
            # The lease runs out and the target is claimed again then.
            log.error("schedule.not_saved", target=claim.name, error=str(exc))
            return
        if not held:
            log.warning("lease.lost", target=claim.name, why="lease expired; another took it")

    async def beat(self) -> None:
        """The heartbeat: renew the leases of the audits in flight, then stop the audits
        whose lease is lost, or may run out before the next beats can renew it.

        Raises StoreError when the database refused the renewal (after stopping what must
        stop).
        """
        ctx = self._ctx
        lease = lease_for(ctx.settings)
        try:
            if self.audits:
                ids = list(self.audits)
                sent = time.monotonic()
                held = await ctx.store.schedule.renew_leases(ctx.owner, ids, lease)
                for target_id in ids:
                    audit = self.audits.get(target_id)
                    if audit is None:
                        continue
                    if target_id in held:
                        audit.held_until = max(audit.held_until, sent + lease.total_seconds())
                    else:
                        self._stop(audit, "lease.lost", "another replica holds the target now")
        finally:
            # Half a lease left without a renewal: three beats in a row failed. What is left
            # is time for the cancelled audit to stop before another replica may claim. On
            # SQLite no other process can (and a renewal may just wait for a long write).
            margin = lease.total_seconds() / 2
            now = time.monotonic()
            for audit in list(self.audits.values()):
                if audit.held_until - now < margin and ctx.store.schedule.shared:
                    self._stop(audit, "lease.expiring", "the lease could not be renewed")

    def ended(self, claim: ClaimedTarget) -> None:
        """The task of ``claim``'s audit is over: forget it."""
        audit = self.audits.get(claim.id)
        if audit is not None and audit.claim is claim:
            del self.audits[claim.id]

    def _stop(self, audit: Audit, event: str, why: str) -> None:
        if audit.stopped or audit.task.done():
            return
        audit.stopped = True
        log.warning(event, target=audit.claim.name, why=why, audit="cancelled")
        audit.task.cancel()

    async def release(self) -> None:
        """Give back what this replica holds (on shutdown): its leases and its deliveries."""
        ctx = self._ctx
        try:
            released = await ctx.store.schedule.release_leases(ctx.owner)
            await ctx.store.outbox.release_deliveries(ctx.owner)
        except StoreError as exc:
            log.error("service.leases_not_released", error=str(exc), expire="on their own")
        else:
            if released:
                log.info("service.leases_released", count=released)


__all__ = ["Audit", "AuditStarter", "Leases", "beat_every", "lease_for", "owner_id"]
