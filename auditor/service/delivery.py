"""The daemon's alert delivery: its sinks, the routing of alerts to them, the ``deliver`` job.

Each audit enqueues its alert events for the sinks whose filters match
(``[[alerts.webhook]]`` & co.) in the transaction that records the run; the daemon's second
job, ``deliver``, sends the outbox (:mod:`auditor.alerts.delivery`: due deliveries and
re-sends of firing alerts), so a slow sink never holds up the audits. One pass runs at a
time, and the sinks are replaced (on SIGHUP) only between passes.

This module never claims targets, never runs audits and never schedules itself: the
daemon calls :meth:`Delivery.deliver` from its timer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

from auditor.alerts.delivery import RetryPolicy, delivery_tick
from auditor.alerts.routing import Router
from auditor.alerts.sinks import Sink, build_sinks, close_sinks
from auditor.config import Settings
from auditor.errors import StoreError
from auditor.metrics import Metrics
from auditor.model import utcnow
from auditor.service.context import Context
from auditor.web import ServiceState

# One pass of alert delivery stops claiming after this long (deliveries in flight finish),
# so that a slow sink delays the next pass, not the shutdown.
DELIVERY_BUDGET_S = 10.0


class Delivery:
    """The sinks of ``alerts.*`` and the router that picks them; one pass at a time."""

    def __init__(
        self,
        context: Context,
        *,
        state: ServiceState,
        metrics: Metrics,
        on_database_error: Callable[[datetime, StoreError], None],
    ) -> None:
        self._ctx = context
        self._state = state
        self._metrics = metrics
        self._database_failed = on_database_error
        self.router = Router.of(context.settings.alerts)
        self._sinks: dict[str, Sink] = {}
        self._lock = asyncio.Lock()

    def open(self) -> None:
        """Build the configured sinks (before the timer starts)."""
        self._sinks = build_sinks(self._ctx.settings.alerts)

    async def deliver(self) -> None:
        """Send what the outbox holds to the configured sinks (alerts.webhook & co.)."""
        ctx = self._ctx
        if ctx.draining or not self._sinks:
            return
        async with self._lock:
            try:
                report = await delivery_tick(
                    ctx.store.outbox,
                    self._sinks,
                    owner=ctx.owner,
                    retry=RetryPolicy.of(ctx.settings.alerts),
                    time_budget=DELIVERY_BUDGET_S,
                    clock=ctx.clock.now,
                )
            except StoreError as exc:
                self._database_failed(utcnow(), exc)
                return
        if report.pending is not None and report.dead_total is not None:
            self._metrics.set_outbox(report.dead_total, report.pending)
            # Dead deliveries do not make the replica unready, but /readyz shows them.
            self._state.detail["outbox"] = {"pending": report.pending, "dead": report.dead_total}

    async def replace_sinks(self, settings: Settings) -> None:
        """Use the sinks and routes of ``settings`` from the next pass on."""
        async with self._lock:
            old, self._sinks = self._sinks, build_sinks(settings.alerts)
            self.router = Router.of(settings.alerts)
            await close_sinks(old)

    async def settle(self, within: float) -> None:
        """Wait up to ``within`` seconds for a pass in flight to end (on shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._lock.acquire()
                self._lock.release()

    async def close(self) -> None:
        """Close the sinks (on shutdown)."""
        await close_sinks(self._sinks)
        self._sinks = {}


__all__ = ["DELIVERY_BUDGET_S", "Delivery"]
