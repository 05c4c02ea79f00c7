"""The tables of the audit record, shared by the repository and the migrations.

Column types are chosen so that one code path serves SQLite and PostgreSQL: timestamps go
through :class:`UTCDateTime` (SQLite has no time zones), JSON is ``JSON`` on SQLite and
``JSONB`` on PostgreSQL. ``migrations/versions`` must describe exactly these tables;
a test compares both on both databases. Declarations only: no queries, no connections.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

GENESIS_HASH = "0" * 64

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """An instant in UTC: stored as UTC, always returned timezone-aware.

    Naive values are taken to be UTC already. On SQLite the value is stored without an
    offset (its DATETIME cannot hold one), so every stored value must be UTC for ordering
    and range queries to be right; this type guarantees it.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def json_type() -> TypeEngine[Any]:
    # none_as_null: a Python None is SQL NULL, so "no before/after" is not the JSON 'null'.
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def exact_json_type() -> TypeEngine[Any]:
    # The hash chain is recomputed from what is read back, so its JSON must come back exactly
    # as written: PostgreSQL's json keeps the text, jsonb would re-normalise numbers.
    return JSON(none_as_null=True)


RUN_STATUSES = ("running", "ok", "failed", "incomplete")
CHANGE_KINDS = ("added", "removed", "changed")
ALERT_STATUSES = ("firing", "resolved")


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({listed})", name=name)


targets = Table(
    "targets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("url", Text, nullable=False),
    Column("next_run_at", UTCDateTime, nullable=True),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column(
        "last_complete_run_id",
        Integer,
        # targets and runs refer to each other: this key is added after both exist.
        ForeignKey("runs.id", use_alter=True),
        nullable=True,
    ),
    Column("created_at", UTCDateTime, nullable=False),
    # False once the target left the configuration: its record stays, it is not scheduled.
    Column("active", Boolean, nullable=False, server_default=text("true")),
    # model.record_digest of the current versions (NULL: not known yet). An audit whose
    # snapshot has this digest changed nothing, and skips reading and diffing the record.
    Column("digest", String(64), nullable=True),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("target_id", Integer, ForeignKey("targets.id"), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("status", String(16), nullable=False),
    Column("pages", Integer, nullable=True),
    Column("items", Integer, nullable=True),
    Column("reported_count", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("suppressed", Integer, nullable=False, server_default=text("0")),
    _one_of("status", RUN_STATUSES, "status"),
    Index("ix_runs_target_id_id", "target_id", "id"),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("target_id", Integer, ForeignKey("targets.id"), nullable=False),
    Column("collection", String(64), nullable=False),
    Column("key", Text, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("body", json_type(), nullable=False),
    Column("first_run_id", Integer, ForeignKey("runs.id"), nullable=False),
    # NULL while current; else the last complete run in which this content was present.
    Column("last_run_id", Integer, ForeignKey("runs.id"), nullable=True),
    Index("ix_versions_item", "target_id", "collection", "key", "last_run_id"),
)

changes = Table(
    "changes",
    metadata,
    # Assigned by the store, not the database: a change's id is its position in the chain.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("target_id", Integer, ForeignKey("targets.id"), nullable=False),
    Column("collection", String(64), nullable=False),
    Column("key", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("before", exact_json_type(), nullable=True),
    Column("after", exact_json_type(), nullable=True),
    Column("fields", exact_json_type(), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    _one_of("kind", CHANGE_KINDS, "kind"),
    Index("ix_changes_target_id_id", "target_id", "id"),
    Index("ix_changes_run_id", "run_id"),
    Index("ix_changes_at", "at"),
)

chain = Table(
    "chain",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("head", String(64), nullable=False),
    Column("length", Integer, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("fingerprint", String(64), nullable=False, unique=True),
    Column("target_id", Integer, ForeignKey("targets.id"), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("collection", String(64), nullable=True),
    Column("key", Text, nullable=True),
    Column("status", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("last_notified", UTCDateTime, nullable=True),
    Column("resolved_at", UTCDateTime, nullable=True),
    Column("message", Text, nullable=False),
    _one_of("status", ALERT_STATUSES, "status"),
    Index("ix_alerts_target_id", "target_id"),
)

alert_events = Table(
    "alert_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("target_id", Integer, ForeignKey("targets.id"), nullable=False),
    Column("collection", String(64), nullable=True),
    Column("key", Text, nullable=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=True),
    Column("at", UTCDateTime, nullable=False),
    Column("message", Text, nullable=False),
    Column("fields", json_type(), nullable=False),
    _one_of("status", ALERT_STATUSES, "status"),
    Index("ix_alert_events_at", "at"),
    Index("ix_alert_events_target_id_id", "target_id", "id"),
    Index("ix_alert_events_fingerprint", "fingerprint"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", Integer, ForeignKey("alert_events.id"), nullable=False),
    Column("sink", String(200), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("dead", Boolean, nullable=False, server_default=text("false")),
    # The deliverer working on the row, until when: one delivery at a time per row.
    Column("lease_owner", String(200), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    # NULL for rows enqueued before revision 0003.
    Column("created_at", UTCDateTime, nullable=True),
    # Deliverers only ever look for rows not delivered yet, by sink and age: a partial
    # index keeps that lookup as small as the backlog, however long the history grows.
    Index(
        "ix_outbox_undelivered",
        "sink",
        "id",
        sqlite_where=text("delivered_at IS NULL"),
        postgresql_where=text("delivered_at IS NULL"),
    ),
    Index("ix_outbox_event_id", "event_id"),
)
