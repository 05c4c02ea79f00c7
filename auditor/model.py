"""The values that flow through an audit: frozen dataclasses, no I/O.

An :class:`Item` is one JSON object exactly as the PBX sent it (unknown fields kept), under a
collection and a key. A :class:`Snapshot` is everything one run saw of one target. The diff
turns two snapshots into :class:`Change` values; the alert lifecycle turns changes and states
into :class:`Alert` values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

JSON = dict[str, Any]

SCRIPTS = "failover_scripts"
SETTINGS = "failover_settings"
SETTINGS_KEY = "settings"
SCRIPT_KEY_FIELD = "Filename"

ChangeKind = Literal["added", "removed", "changed"]
RunStatus = Literal["running", "ok", "failed", "incomplete"]
AlertStatus = Literal["firing", "resolved"]
Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")  # lowest first

ALERT_KINDS: tuple[str, ...] = (
    "script.added",
    "script.removed",
    "script.changed",
    "settings.changed",
    "settings.script_missing",
    "script.disconnected",
    "script.reconnected",
    "target.disconnected",
    "target.reconnected",
    "audit.failed",
    "backup.added",
    "backup.removed",
    "backup.changed",
    "backup_settings.changed",
    "backup_repository.changed",
    "collection.unavailable",
    "collection.available",
)


# One encoder for every call: json.dumps with options builds a new JSONEncoder each time,
# which was half the cost of hashing a small item (every item is hashed on every run).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, UTF-8."""
    return _CANONICAL.encode(value).encode()


def content_hash(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def visible(text: str) -> str:
    """``text`` with each character that is not printable written as an escape.

    Control characters (newlines, ANSI escapes), line and paragraph separators,
    bidirectional overrides and zero-width characters become ``\\u001b``, ``\\u202e``, ...
    (``\\U000e0041`` beyond the first plane); printable text of any script is kept as it
    is. A string from a PBX shown in a line of text then can neither break the line, nor
    colour or retitle a terminal, nor reorder what is read. Applied to JSON text (which
    already escapes the C0 controls and the backslash) the result is still the same JSON,
    but for a character beyond the first plane (``\\U`` is not JSON).
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """UTC ISO 8601 with a ``Z``: the one timestamp format of every output."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Item:
    collection: str
    key: str
    body: Mapping[str, Any]
    hash: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", content_hash(self.body))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one run saw of one target; ``items`` maps (collection, key) to the item."""

    target: str
    items: Mapping[tuple[str, str], Item]

    @classmethod
    def of(cls, target: str, items: list[Item] | tuple[Item, ...]) -> Snapshot:
        return cls(target=target, items={(i.collection, i.key): i for i in items})

    def collection(self, name: str) -> dict[str, Item]:
        return {key: item for (coll, key), item in self.items.items() if coll == name}


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One changed field; ``field`` is a dotted path (``a.b[2].c``) into the item's JSON.

    ``missing`` names the side on which the field does not exist at all (its value there is
    reported as ``None``), so that a removed key is not mistaken for one set to ``null``.
    """

    field: str
    old: Any
    new: Any
    missing: Literal["old", "new"] | None = None

    def as_json(self) -> JSON:
        out: JSON = {"field": self.field, "old": self.old, "new": self.new}
        if self.missing is not None:
            out["missing"] = self.missing
        return out


@dataclass(frozen=True, slots=True)
class Change:
    collection: str
    key: str
    kind: ChangeKind
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    fields: tuple[FieldChange, ...] = ()


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    target: str
    started_at: datetime
    finished_at: datetime | None
    status: RunStatus
    items: int | None
    pages: int | None
    error: str | None

    def as_json(self) -> JSON:
        return {
            "id": self.id,
            "target": self.target,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at) if self.finished_at else None,
            "status": self.status,
            "items": self.items,
            "pages": self.pages,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    fingerprint: str
    kind: str
    severity: Severity
    status: AlertStatus
    target: str
    collection: str | None
    key: str | None
    run_id: int | None
    at: datetime
    message: str
    fields: tuple[FieldChange, ...] = ()

    def as_json(self) -> JSON:
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "kind": self.kind,
            "severity": self.severity,
            "status": self.status,
            "target": self.target,
            "collection": self.collection,
            "key": self.key,
            "run_id": self.run_id,
            "at": iso(self.at),
            "message": self.message,
            "fields": [f.as_json() for f in self.fields],
        }


def fingerprint(target: str, kind: str, collection: str | None, key: str | None) -> str:
    """The stable identity of an alert: the same condition always has the same fingerprint."""
    return content_hash([target, kind, collection, key])[:32]
