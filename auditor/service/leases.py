"""The targets this replica holds: claiming due ones, renewing leases, giving them back.

A tick claims due targets (as many as there are free slots of ``audit.max_concurrent``)
with a lease, and each claim gets a task of its own (started by the daemon). When an
audit ends, the lease is given back with the target's next time (:mod:`.schedule`).
Several processes on one PostgreSQL share the fleet this way: a target is claimed by one
of them (``FOR UPDATE SKIP LOCKED``), and the targets of one that dies are claimed by the
others once its leases expire. Leases of audits in flight are renewed every third of
their length. At start, what a crashed predecessor held is cleaned up; at shutdown, what
this replica holds (leases, outbox deliveries) is given back.

This module never runs an audit itself, never touches the scheduler or the sinks, and
never decides when to tick.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from auditor.config import Settings, TargetSettings
from auditor.errors import StoreError
from auditor.model import iso, utcnow
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
    """How long a claim holds a target: one audit's timeout plus a margin for recording it.

    Leases of audits in flight are renewed every third of this, so only a process that
    died (or lost the database) lets one expire.
    """
    timeout = settings.audit.timeout
    return timeout + min(timeout, timedelta(minutes=1))


@dataclass
class Audit:
    """A claimed target and the task auditing it."""

    claim: ClaimedTarget
    target: TargetSettings
    task: asyncio.Task[None]


class Leases:
    """The claims of this replica and their audits in flight (``audits``, by target id)."""

    def __init__(self, context: Context) -> None:
        self._ctx = context
        self.audits: dict[int, Audit] = {}
        # The last claim took as many targets as it had free slots: more may be due.
        self.backlog = False
        self._last_renew = datetime.min.replace(tzinfo=UTC)

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
        interrupted = await ctx.store.schedule.interrupt_orphaned_runs(utcnow())
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
        claims = await ctx.store.schedule.claim_due(ctx.owner, now, free, lease_for(ctx.settings))
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
            task = asyncio.create_task(start(claim, target), name=f"audit {claim.name}")
            self.audits[claim.id] = Audit(claim, target, task)
        for claim in unknown:
            # In the shared table but not in this process's configuration (replicas
            # configured differently): not audited here; left for later.
            log.warning("schedule.unknown_target", target=claim.name)
            await ctx.store.schedule.finish_claim(claim.id, ctx.owner, now + ctx.schedule.every)

    async def finish(self, claim: ClaimedTarget) -> None:
        """Give the lease back with the target's next time (its audit has ended)."""
        ctx = self._ctx
        now = utcnow()
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

    async def renew(self, now: datetime) -> None:
        """Extend the leases of the audits in flight, every third of a lease."""
        ctx = self._ctx
        period = lease_for(ctx.settings)
        if not self.audits or now - self._last_renew < period / 3:
            return
        ids = list(self.audits)
        held = await ctx.store.schedule.renew_leases(ctx.owner, ids, now + period)
        self._last_renew = now
        for lost in set(ids) - held:
            audit = self.audits.get(lost)
            if audit is not None:
                log.warning("lease.lost", target=audit.claim.name, why="not renewed in time")

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


__all__ = ["Audit", "AuditStarter", "Leases", "lease_for", "owner_id"]
