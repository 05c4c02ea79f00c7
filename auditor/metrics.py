"""Prometheus metrics of the daemon, in a registry of its own.

A private :class:`~prometheus_client.CollectorRegistry` (not the library's global one) keeps
two daemons in one process (tests) from sharing counters, and keeps whatever else is
imported from adding series to ``/metrics``. There are no per-target labels: with thousands
of PBXs they would multiply every series by the fleet; per-target detail is in the JSON API.

::

    auditor_runs_total{status}                 finished runs: ok, failed, incomplete
    auditor_audit_duration_seconds             histogram of the time one audit took
    auditor_items_seen_total                   scripts read in complete runs
    auditor_alerts_total{kind}                 alert events recorded, by kind
    auditor_oldest_complete_run_age_seconds    age of the oldest last-complete run (NaN: no target)
    auditor_targets_disconnected               targets failing their last disconnected_after runs
    auditor_targets                            targets in the fleet
    auditor_outbox_dead / auditor_outbox_pending  alert deliveries given up / waiting

plus the standard ``process_*``, ``python_*`` series of prometheus-client.

The fleet gauges are read through the store's read side (:class:`~auditor.store.ReadStore`);
this module writes nothing to the database.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from auditor.audit import AuditResult
from auditor.model import ALERT_KINDS
from auditor.store import FleetHealth, ReadStore

RUN_STATUSES: tuple[str, ...] = ("ok", "failed", "incomplete")
# From a small PBX on a LAN (a tenth of a second) to the default audit.timeout (10 minutes).
DURATION_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """The daemon's metrics; ``render()`` gives the text exposition for ``/metrics``.

    Without a ``registry`` a new private one is made and given the process, platform and
    garbage-collector collectors (RSS, CPU seconds, open files, Python version). With one,
    only the auditor's own metrics are registered in it.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = CollectorRegistry(auto_describe=True)
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        self._runs = Counter(
            "auditor_runs",
            "Finished audit runs, by status (ok, failed, incomplete).",
            ["status"],
            registry=registry,
        )
        self._duration = Histogram(
            "auditor_audit_duration_seconds",
            "Time one audit of one target took, from start to recorded run.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._items = Counter(
            "auditor_items_seen",
            "Failover scripts read by complete runs.",
            registry=registry,
        )
        self._alerts = Counter(
            "auditor_alerts",
            "Alert events recorded, by kind.",
            ["kind"],
            registry=registry,
        )
        self._oldest = Gauge(
            "auditor_oldest_complete_run_age_seconds",
            "Seconds since the oldest of the targets' last complete runs finished (a target "
            "never audited completely counts from when it was added); NaN without targets.",
            registry=registry,
        )
        self._disconnected = Gauge(
            "auditor_targets_disconnected",
            "Targets whose last alerts.disconnected_after runs all failed or were incomplete.",
            registry=registry,
        )
        self._targets = Gauge("auditor_targets", "Targets in the fleet.", registry=registry)
        self._outbox_dead = Gauge(
            "auditor_outbox_dead",
            "Alert deliveries given up after their last attempt.",
            registry=registry,
        )
        self._outbox_pending = Gauge(
            "auditor_outbox_pending",
            "Alert deliveries waiting for their next attempt.",
            registry=registry,
        )
        # Series that exist from the first scrape: rate() and absent() need a zero to start
        # from, and a dashboard should not show "no data" for a kind that has not fired yet.
        for status in RUN_STATUSES:
            self._runs.labels(status=status)
        for kind in ALERT_KINDS:
            self._alerts.labels(kind=kind)
        self._oldest.set(math.nan)

    def observe_run(self, result: AuditResult, duration_s: float) -> None:
        """Count one finished run, its duration, the items it saw and the alerts it raised."""
        self._runs.labels(status=result.status).inc()
        self._duration.observe(max(0.0, duration_s))
        if result.status == "ok" and result.items:
            self._items.inc(result.items)
        for alert in result.alerts:
            self._alerts.labels(kind=alert.kind).inc()

    def set_fleet(
        self, *, oldest_complete_age_s: float | None, targets_disconnected: int, targets: int
    ) -> None:
        self._oldest.set(math.nan if oldest_complete_age_s is None else oldest_complete_age_s)
        self._disconnected.set(targets_disconnected)
        self._targets.set(targets)

    async def update_fleet(
        self, reads: ReadStore, *, disconnected_after: int, names: Collection[str] | None = None
    ) -> FleetHealth:
        """Read :meth:`ReadStore.fleet_health` and set the fleet gauges from it."""
        health = await reads.fleet_health(disconnected_after, names=names)
        self.set_fleet(
            oldest_complete_age_s=health.oldest_complete_age_s,
            targets_disconnected=health.disconnected,
            targets=health.targets,
        )
        return health

    def set_outbox(self, dead: int, pending: int) -> None:
        self._outbox_dead.set(dead)
        self._outbox_pending.set(pending)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
