"""The alert lifecycle: what one run observed, plus the alerts already firing -> new events.

Pure: no I/O. The audit reads the previous :class:`AlertState` rows, calls :func:`evaluate`,
and commits the returned events and states together with the run.

Two families of alerts:

* **Change alerts** (``script.added``, ``script.removed``, ``script.changed``,
  ``settings.changed``) fire once per change, never on a baseline. A change whose only
  changed field is the state field is recorded in the history but raises no
  ``script.changed``: the state alerts below own that field, so one flip is one alert.
* **State alerts** (``script.disconnected``, ``settings.script_missing``,
  ``target.disconnected``, ``audit.failed``) fire once when their condition starts, again
  every ``repeat_every`` while it lasts, and are resolved once when it ends. A resolution
  is an event with status ``resolved`` and the *same fingerprint* as the firing alert, so a
  sink can match the two; its kind is the "good news" kind where DESIGN.md names one
  (``script.reconnected``, ``target.reconnected``), else the firing kind.

Script-level conditions are judged only on complete runs: a failed run knows nothing about
the scripts, so it neither resolves nor repeats their alerts.

A message is one line of text: a PBX's strings in it (keys, values, error texts) have what
is not printable written as an escape (:func:`~auditor.model.visible`); the alert's ``key``
and ``fields`` keep them exact.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from auditor.model import (
    SCRIPTS,
    SETTINGS,
    Change,
    FieldChange,
    RunStatus,
    Severity,
    fingerprint,
    visible,
)
from auditor.store import AlertDraft, AlertState

CHANGE_KINDS: dict[tuple[str, str], tuple[str, Severity]] = {
    (SCRIPTS, "added"): ("script.added", "info"),
    (SCRIPTS, "removed"): ("script.removed", "warning"),
    (SCRIPTS, "changed"): ("script.changed", "warning"),
    (SETTINGS, "added"): ("settings.changed", "warning"),
    (SETTINGS, "removed"): ("settings.changed", "warning"),
    (SETTINGS, "changed"): ("settings.changed", "warning"),
    ("backups", "added"): ("backup.added", "info"),
    ("backups", "removed"): ("backup.removed", "info"),
    ("backups", "changed"): ("backup.changed", "warning"),
    ("backup_settings", "added"): ("backup_settings.changed", "warning"),
    ("backup_settings", "removed"): ("backup_settings.changed", "warning"),
    ("backup_settings", "changed"): ("backup_settings.changed", "warning"),
    ("backup_repository", "added"): ("backup_repository.changed", "warning"),
    ("backup_repository", "removed"): ("backup_repository.changed", "warning"),
    ("backup_repository", "changed"): ("backup_repository.changed", "warning"),
}
_CHANGE_WHAT = {
    "backups": "backup",
    "backup_settings": "backup settings",
    "backup_repository": "backup repository",
}
STATE_SEVERITY: dict[str, Severity] = {
    "script.disconnected": "warning",
    "settings.script_missing": "critical",
    "target.disconnected": "critical",
    "audit.failed": "warning",
    "collection.unavailable": "warning",
}
RESOLVED_KIND = {
    "script.disconnected": "script.reconnected",
    "target.disconnected": "target.reconnected",
    "collection.unavailable": "collection.available",
}
# A resolution's kind -> the kind of the condition it ends (kinds without one end themselves).
FIRING_KIND = {resolved: firing for firing, resolved in RESOLVED_KIND.items()}
SCRIPT_CONDITIONS = ("script.disconnected", "settings.script_missing")
COLLECTION_CONDITIONS = ("collection.unavailable",)
TARGET_CONDITIONS = ("target.disconnected", "audit.failed")
_SHOWN_FIELDS = 3


@dataclass(frozen=True, slots=True)
class Observation:
    """What one run of one target saw.

    ``unhealthy`` (key -> state value), ``missing`` ((field, filename) pairs) and ``listed``
    (the script keys) are only meaningful for a complete run; ``failures_in_row`` counts
    this run if it failed.
    """

    target: str
    status: RunStatus
    at: datetime
    baseline: bool = False
    error: str | None = None
    changes: Sequence[Change] = ()
    unhealthy: Mapping[str, str] = field(default_factory=dict)
    missing: Sequence[tuple[str, str]] = ()
    listed: Collection[str] = frozenset()
    failures_in_row: int = 0
    state_field: str = "State"
    # Collections the PBX refused this run (403/404): name -> why.
    unavailable: Mapping[str, str] = field(default_factory=dict)
    # Whether the failover scripts and settings were both read: the script conditions are
    # judged (fired or resolved) only then.
    failover_read: bool = True


@dataclass(frozen=True, slots=True)
class Policy:
    disconnected_after: int = 3
    repeat_every: timedelta = timedelta(hours=4)


@dataclass(frozen=True, slots=True)
class _Condition:
    kind: str
    collection: str | None
    key: str | None
    message: str


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else _q(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _q(text: str | None) -> str:
    """A PBX's string quoted for a message: one line, nothing a terminal would act on."""
    return f"'{visible(str(text))}'"


def _field_summary(fields: Sequence[FieldChange]) -> str:
    shown = [f"{visible(f.field)} {_show(f.old)} -> {_show(f.new)}" for f in fields[:_SHOWN_FIELDS]]
    more = len(fields) - _SHOWN_FIELDS
    return ", ".join(shown) + (f" (+{more} more)" if more > 0 else "")


def _change_message(target: str, kind: str, change: Change) -> str:
    if kind == "script.added":
        return f"failover script {_q(change.key)} added on {target}"
    if kind == "script.removed":
        return f"failover script {_q(change.key)} removed from {target}"
    if kind == "script.changed":
        return f"failover script {_q(change.key)} changed on {target}: " + _field_summary(
            change.fields
        )
    what = _CHANGE_WHAT.get(change.collection)
    if what == "backup":
        done = {"added": "added on", "removed": "removed from", "changed": "changed on"}
        message = f"backup '{change.key}' {done[change.kind]} {target}"
        return message + (": " + _field_summary(change.fields) if change.fields else "")
    if what is not None:
        if change.kind == "changed":
            return f"{what} changed on {target}: " + _field_summary(change.fields)
        return f"{what} {'appeared' if change.kind == 'added' else 'vanished'} on {target}"
    if change.kind == "changed":
        return f"failover settings changed on {target}: " + _field_summary(change.fields)
    return f"failover settings {'appeared' if change.kind == 'added' else 'vanished'} on {target}"


def _state_only(change: Change, state_field: str) -> bool:
    return bool(change.fields) and all(
        f.field == state_field or f.field.startswith(state_field + ".") for f in change.fields
    )


def change_events(obs: Observation) -> list[AlertDraft]:
    if obs.baseline or obs.status != "ok":
        return []
    events = []
    for change in obs.changes:
        kind, severity = CHANGE_KINDS[(change.collection, change.kind)]
        if kind == "script.changed" and _state_only(change, obs.state_field):
            continue
        events.append(
            AlertDraft(
                fingerprint=fingerprint(obs.target, kind, change.collection, change.key),
                kind=kind,
                severity=severity,
                status="firing",
                collection=change.collection,
                key=change.key,
                at=obs.at,
                message=_change_message(obs.target, kind, change),
                fields=change.fields,
            )
        )
    return events


def _conditions(obs: Observation, policy: Policy) -> tuple[list[_Condition], tuple[str, ...]]:
    """The conditions holding now, and the kinds this run can judge at all."""
    target = obs.target
    now: list[_Condition] = []
    if obs.status == "ok":
        judged = (SCRIPT_CONDITIONS if obs.failover_read else ()) + COLLECTION_CONDITIONS
        for key, value in sorted(obs.unhealthy.items() if obs.failover_read else ()):
            message = f"failover script {_q(key)} is {visible(value)} on {target}"
            now.append(_Condition("script.disconnected", SCRIPTS, key, message))
        for name, filename in obs.missing if obs.failover_read else ():
            message = (
                f"{name} names {_q(filename)}, which is not among the failover scripts of {target}"
            )
            now.append(_Condition("settings.script_missing", SETTINGS, name, message))
        for name, why in sorted(obs.unavailable.items()):
            message = f"{name} is unavailable on {target}: {visible(why)}"
            now.append(_Condition("collection.unavailable", name, None, message))
        return now, judged + TARGET_CONDITIONS
    error = visible(obs.error or obs.status)
    now.append(_Condition("audit.failed", None, None, f"audit of {target} failed: {error}"))
    if obs.failures_in_row >= policy.disconnected_after:
        message = f"{target} could not be audited in {obs.failures_in_row} runs in a row: {error}"
        now.append(_Condition("target.disconnected", None, None, message))
    return now, TARGET_CONDITIONS


def _resolution_message(state: AlertState, obs: Observation) -> str:
    target = obs.target
    if state.kind == "script.disconnected":
        if state.key in obs.listed:
            return f"failover script {_q(state.key)} is healthy again on {target}"
        return f"failover script {_q(state.key)} is no longer listed on {target}"
    if state.kind == "settings.script_missing":
        return f"{state.key} of {target} names an existing failover script again"
    if state.kind == "target.disconnected":
        return f"{target} can be audited again"
    if state.kind == "audit.failed":
        return f"audit of {target} succeeds again"
    if state.kind == "collection.unavailable":
        return f"{state.collection} is available again on {target}"
    return f"{state.kind} resolved on {target}"


def evaluate(
    obs: Observation, previous: Mapping[str, AlertState], policy: Policy
) -> tuple[list[AlertDraft], list[AlertState]]:
    """The events to emit and the alert states to save for one run."""
    events = change_events(obs)
    states: list[AlertState] = []
    conditions, judged = _conditions(obs, policy)
    holding: set[str] = set()

    for condition in conditions:
        fp = fingerprint(obs.target, condition.kind, condition.collection, condition.key)
        holding.add(fp)
        severity = STATE_SEVERITY[condition.kind]
        state = previous.get(fp)
        if state is None or state.status == "resolved":
            notify = True
            state = AlertState(
                fingerprint=fp,
                kind=condition.kind,
                collection=condition.collection,
                key=condition.key,
                status="firing",
                severity=severity,
                first_seen=obs.at,
                last_seen=obs.at,
                last_notified=obs.at,
                resolved_at=None,
                message=condition.message,
            )
        else:
            last = state.last_notified or state.first_seen
            notify = obs.at - last >= policy.repeat_every
            state = replace(
                state,
                last_seen=obs.at,
                message=condition.message,
                last_notified=obs.at if notify else state.last_notified,
            )
        states.append(state)
        if notify:
            events.append(
                AlertDraft(
                    fingerprint=fp,
                    kind=condition.kind,
                    severity=severity,
                    status="firing",
                    collection=condition.collection,
                    key=condition.key,
                    at=obs.at,
                    message=condition.message,
                )
            )

    for fp, state in sorted(previous.items()):
        if state.status != "firing" or fp in holding or state.kind not in judged:
            continue
        message = _resolution_message(state, obs)
        states.append(
            replace(
                state,
                status="resolved",
                resolved_at=obs.at,
                last_seen=obs.at,
                last_notified=obs.at,
                message=message,
            )
        )
        events.append(
            AlertDraft(
                fingerprint=fp,
                kind=RESOLVED_KIND.get(state.kind, state.kind),
                severity="info",
                status="resolved",
                collection=state.collection,
                key=state.key,
                at=obs.at,
                message=message,
            )
        )
    return events, states


def condition_kind(kind: str) -> str:
    """The kind of the condition an event is about: ``script.reconnected`` ->
    ``script.disconnected``; every other kind is its own."""
    return FIRING_KIND.get(kind, kind)


def is_state_kind(kind: str) -> bool:
    """True for the kinds of state alerts and their resolutions, False for change alerts."""
    return condition_kind(kind) in STATE_SEVERITY


def condition_severity(kind: str, severity: Severity) -> Severity:
    """The severity of the condition an event is about.

    A resolution is recorded with severity ``info``; a sink that filters on severity must
    still receive the resolution of every alert it received, so it filters on this.
    """
    return STATE_SEVERITY.get(condition_kind(kind), severity)


def failures_in_row(statuses_newest_first: Collection[str]) -> int:
    """How many of the newest runs in a row did not complete."""
    count = 0
    for status in statuses_newest_first:
        if status == "ok":
            break
        count += 1
    return count


__all__ = [
    "FIRING_KIND",
    "Observation",
    "Policy",
    "change_events",
    "condition_kind",
    "condition_severity",
    "evaluate",
    "failures_in_row",
    "is_state_kind",
]
