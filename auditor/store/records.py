"""What goes into and comes out of the store, beside the shared values of :mod:`auditor.model`.

Values and pure functions: this module does no I/O and knows no table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from auditor.model import (
    JSON,
    Alert,
    AlertStatus,
    Change,
    ChangeKind,
    FieldChange,
    RunStatus,
    Severity,
    canonical_json,
    iso,
)


@dataclass(frozen=True, slots=True)
class AlertDraft:
    """An alert event to record; the store gives it its id, target name and run."""

    fingerprint: str
    kind: str
    severity: Severity
    status: AlertStatus
    collection: str | None
    key: str | None
    at: datetime
    message: str
    fields: tuple[FieldChange, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertState:
    """The lifecycle state of one alert fingerprint (one row per fingerprint)."""

    fingerprint: str
    kind: str
    collection: str | None
    key: str | None
    status: AlertStatus
    severity: Severity
    first_seen: datetime
    last_seen: datetime
    last_notified: datetime | None
    resolved_at: datetime | None
    message: str


@dataclass(frozen=True, slots=True)
class RunStart:
    """A run just recorded as ``running`` by :meth:`~auditor.store.Store.start_run`.

    ``previous_run_id`` is the target's last complete run (None before its baseline);
    ``digest`` the digest of the PBX's answers at that run when the record holds exactly
    what they said (None when it does not, or is not known; see ``RunOutcome.digest``);
    ``alerts`` the lifecycle state of every alert fingerprint of the target.
    """

    target_id: int
    run_id: int
    previous_run_id: int | None
    digest: str | None
    alerts: Mapping[str, AlertState]


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """Everything one finished run writes, committed in one transaction by ``commit_run``.

    ``changes`` are versioned and chained only when ``status`` is ``"ok"``: an incomplete
    or failed run never touches the record of contents. ``events`` and ``alert_states``
    are written whatever the status (a failed run can fire ``audit.failed``); each event
    gets one outbox row per name in ``sinks``, or, when ``routes`` is given (one tuple per
    event), one per name in its own tuple.
    """

    run_id: int
    target_id: int
    status: RunStatus
    finished_at: datetime
    # When the audit began; None keeps the time the run was recorded as running.
    started_at: datetime | None = None
    pages: int | None = None
    items: int | None = None
    reported_count: int | None = None
    error: str | None = None
    suppressed: int = 0
    # A complete run: the digest of the PBX's answers when the record, once this run is
    # written, holds exactly what they said (None when it does not: an ignored change);
    # and the last complete run it compared with (RunStart.previous_run_id). The digest is
    # stored only if no other run completed in between.
    digest: str | None = None
    previous_run_id: int | None = None
    changes: Sequence[Change] = ()
    events: Sequence[AlertDraft] = ()
    alert_states: Sequence[AlertState] = ()
    sinks: tuple[str, ...] = ()
    routes: Sequence[tuple[str, ...]] | None = None

    def sinks_of(self, index: int) -> tuple[str, ...]:
        """The sinks that event ``index`` is to be delivered to."""
        return self.sinks if self.routes is None else self.routes[index]


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One recorded change: a link of the history hash chain.

    ``baseline``: the change was written by its target's first complete run, which records
    everything it found as ``added`` (derived when read, see ``ReadStore.changes``).
    """

    id: int
    run_id: int
    target: str
    collection: str
    key: str
    kind: ChangeKind
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    fields: tuple[FieldChange, ...]
    at: datetime
    hash: str
    prev_hash: str
    baseline: bool = False

    def as_json(self) -> JSON:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "target": self.target,
            "collection": self.collection,
            "key": self.key,
            "kind": self.kind,
            "baseline": self.baseline,
            "before": self.before,
            "after": self.after,
            "fields": [f.as_json() for f in self.fields],
            "at": iso(self.at),
            "hash": self.hash,
            "prev_hash": self.prev_hash,
        }


@dataclass(frozen=True, slots=True)
class TargetRow:
    id: int
    name: str
    url: str
    next_run_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None
    last_complete_run_id: int | None
    created_at: datetime
    # False once the target left the configuration: its record stays, it is not scheduled.
    active: bool = True


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """Where one recorded target stands, for ``status``.

    ``failures_in_row``: the finished runs after its last complete run (all failed or
    incomplete); ``open_alerts``: its alert conditions firing now, oldest first;
    ``next_run_at``: the daemon's schedule (None when no daemon has scheduled it).
    """

    name: str
    active: bool
    next_run_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None
    last_complete_run_id: int | None
    last_complete_at: datetime | None
    failures_in_row: int
    open_alerts: tuple[AlertState, ...]


@dataclass(frozen=True, slots=True)
class FleetHealth:
    """How the fleet stands, for the gauges of ``/metrics``.

    ``oldest_complete_age_s``: seconds since the oldest of the targets' last complete runs
    finished (a target without any complete run counts from when it was first recorded);
    None when there is no target. ``disconnected``: targets whose last ``disconnected_after``
    finished runs all failed or were incomplete.
    """

    targets: int
    oldest_complete_age_s: float | None
    disconnected: int


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of walking the hash chain; ``first_bad`` names the first broken record."""

    ok: bool
    length: int
    head: str
    first_bad: int | None = None
    reason: str | None = None


def change_hash(
    prev_hash: str,
    *,
    id: int,
    run_id: int,
    target: str,
    collection: str,
    key: str,
    kind: str,
    before: Any,
    after: Any,
    fields: Any,
    at: datetime,
) -> str:
    """``sha256(prev_hash + canonical_json(record))``: the link of one change in the chain."""
    record = {
        "id": id,
        "run_id": run_id,
        "target": target,
        "collection": collection,
        "key": key,
        "kind": kind,
        "before": before,
        "after": after,
        "fields": fields,
        "at": iso(at),
    }
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(record)).hexdigest()


def field_changes(raw: Any) -> tuple[FieldChange, ...]:
    """The field-level diff of a change or an alert as read back from its JSON column,
    ``missing`` included: a key that appeared or disappeared stays told apart from a null."""
    return tuple(
        FieldChange(f["field"], f.get("old"), f.get("new"), _missing(f.get("missing")))
        for f in raw or ()
    )


def _missing(value: Any) -> Literal["old", "new"] | None:
    if value == "old":
        return "old"
    if value == "new":
        return "new"
    return None


@dataclass(frozen=True, slots=True)
class ClaimedTarget:
    """A due target this process now holds the lease of, until ``lease_until``.

    ``due`` is the ``next_run_at`` it was claimed for; ``interrupted_runs`` counts the runs
    of it that an earlier holder left ``running`` and the claim marked failed.
    """

    id: int
    name: str
    url: str
    due: datetime
    lease_until: datetime
    interrupted_runs: int = 0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row: the delivery of one alert event to one sink (``<type>:<name>``)."""

    id: int
    sink: str
    alert: Alert
    attempts: int
    next_attempt_at: datetime
    created_at: datetime | None
    delivered_at: datetime | None
    dead: bool
    last_error: str | None

    @property
    def status(self) -> str:
        if self.delivered_at is not None:
            return "delivered"
        return "dead" if self.dead else "pending"

    def as_json(self) -> JSON:
        return {
            "id": self.id,
            "sink": self.sink,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": iso(self.next_attempt_at) if self.status == "pending" else None,
            "created_at": iso(self.created_at) if self.created_at else None,
            "delivered_at": iso(self.delivered_at) if self.delivered_at else None,
            "last_error": self.last_error,
            "alert": self.alert.as_json(),
        }
