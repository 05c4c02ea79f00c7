"""What the daemon says about itself: the database flag of /readyz, the fleet gauges of
/metrics and systemd's ``STATUS=`` line.

The daemon reports its database's failures and answers here; the fleet gauges and the
status line are refreshed from the tick. This module only reads the store (never writes
it), claims nothing, and never starts or stops anything.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import structlog

from auditor.errors import StoreError
from auditor.metrics import Metrics
from auditor.model import iso
from auditor.service.context import Context
from auditor.service.leases import Leases
from auditor.service.systemd import Notifier
from auditor.web import ServiceState

log = structlog.get_logger("auditor.service")

# How often the fleet gauges of /metrics and the STATUS line are refreshed.
FLEET_EVERY = timedelta(seconds=15)
STATUS_EVERY = timedelta(seconds=5)
# How long the database may keep failing before the error is logged again.
DB_ERROR_REPEAT = timedelta(minutes=1)


class Status:
    """The daemon's health as /readyz, /metrics and systemd see it."""

    def __init__(
        self,
        context: Context,
        leases: Leases,
        *,
        state: ServiceState,
        metrics: Metrics,
        notify: Notifier,
    ) -> None:
        self._ctx = context
        self._leases = leases
        self._state = state
        self._metrics = metrics
        self._notify = notify
        self._last_fleet = self._last_status = datetime.min.replace(tzinfo=UTC)
        self._db_failing_since: datetime | None = None
        self._db_logged_at: datetime | None = None
        self._next_due: datetime | None = None

    async def refresh(self, now: datetime) -> None:
        """Update the fleet gauges and the STATUS line when they are due."""
        ctx = self._ctx
        if now - self._last_fleet >= FLEET_EVERY:
            self._last_fleet = now
            await self._metrics.update_fleet(
                ctx.store.reads,
                disconnected_after=ctx.settings.alerts.disconnected_after,
                names=list(ctx.targets),
            )
        if now - self._last_status >= STATUS_EVERY:
            self._last_status = now
            self._next_due = await ctx.store.schedule.next_due()
            self._notify.status(self.text(now))

    def text(self, now: datetime | None = None) -> str:
        """The STATUS line: audits in flight, and when the next is due (given ``now``)."""
        audits = self._leases.audits
        total = len(self._ctx.settings.targets)
        if self._ctx.draining:
            return f"stopping: {len(audits)} audit(s) finishing"
        text = f"auditing {len(audits)} of {total} targets"
        if self._next_due is not None and now is not None:
            wait = (self._next_due - now).total_seconds()
            text += f"; next in {max(0, math.ceil(wait))}s"
        return text

    def database_failed(self, now: datetime, exc: StoreError) -> None:
        """The database failed: unready, and logged (again after ``DB_ERROR_REPEAT``)."""
        self._state.database_ok = False
        if self._db_failing_since is None:
            self._db_failing_since = now
        if self._db_logged_at is None or now - self._db_logged_at >= DB_ERROR_REPEAT:
            self._db_logged_at = now
            log.error("service.database_error", error=str(exc), since=iso(self._db_failing_since))

    def database_answered(self) -> None:
        """The database answered: ready again, and logged once when it had failed."""
        self._state.database_ok = True
        if self._db_failing_since is not None:
            log.info("service.database_back", since=iso(self._db_failing_since))
            self._db_failing_since = self._db_logged_at = None


__all__ = ["DB_ERROR_REPEAT", "FLEET_EVERY", "STATUS_EVERY", "Status"]
