"""Which sinks receive which alert events: each sink's filter (minimum severity, kinds,
targets), applied when a run is committed, so each event is enqueued only where it goes.

A resolution is judged as the condition it ends: ``script.reconnected`` (severity ``info``)
goes wherever ``script.disconnected`` (severity ``warning``) went, so a sink never keeps an
alert open for lack of its resolution.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from auditor.alerts.lifecycle import condition_kind, condition_severity
from auditor.config import AlertsSettings, SinkSettings
from auditor.model import Severity
from auditor.store import AlertDraft

SEVERITY_RANK: dict[Severity, int] = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True, slots=True)
class SinkFilter:
    """The alerts one sink receives; an empty ``kinds`` or ``targets`` means all."""

    min_severity: Severity = "info"
    kinds: frozenset[str] = frozenset()
    targets: frozenset[str] = frozenset()

    @classmethod
    def of(cls, sink: SinkSettings) -> SinkFilter:
        return cls(sink.min_severity, frozenset(sink.kinds), frozenset(sink.targets))

    def matches(self, target: str, kind: str, severity: Severity) -> bool:
        if self.targets and target not in self.targets:
            return False
        condition = condition_kind(kind)
        if self.kinds and kind not in self.kinds and condition not in self.kinds:
            return False
        level = condition_severity(kind, severity)
        return SEVERITY_RANK[level] >= SEVERITY_RANK[self.min_severity]


@dataclass(frozen=True, slots=True)
class Router:
    """Sink names (``<type>:<name>``, as in the outbox) with their filters."""

    sinks: tuple[tuple[str, SinkFilter], ...] = ()

    @classmethod
    def of(cls, settings: AlertsSettings) -> Router:
        return cls(tuple((sink.key, SinkFilter.of(sink)) for sink in settings.sinks))

    def route(self, target: str, event: AlertDraft) -> tuple[str, ...]:
        """The sinks that ``event`` of ``target`` is to be delivered to."""
        return tuple(
            name for name, rule in self.sinks if rule.matches(target, event.kind, event.severity)
        )

    def routes(self, target: str, events: Iterable[AlertDraft]) -> list[tuple[str, ...]]:
        return [self.route(target, event) for event in events]
