"""The audit record: SQLAlchemy tables, migrations and the :class:`Store` with its parts.

``Store.open(url)`` returns the store; its parts are ``store.record`` (:class:`RecordStore`),
``store.schedule`` (:class:`ScheduleStore`), ``store.outbox`` (:class:`OutboxStore`) and
``store.reads`` (:class:`ReadStore`). Only re-exports: nothing here runs a query.
"""

from auditor.config import display_url
from auditor.store.engine import driver_url
from auditor.store.outbox import OutboxStore
from auditor.store.reads import ReadStore
from auditor.store.record import RecordStore
from auditor.store.records import (
    AlertDraft,
    AlertState,
    ChangeRecord,
    ClaimedTarget,
    Delivery,
    FleetHealth,
    RunOutcome,
    RunStart,
    TargetRow,
    TargetStatus,
    VerifyResult,
    change_hash,
)
from auditor.store.repository import Store
from auditor.store.schedule import ScheduleStore
from auditor.store.schema import GENESIS_HASH, metadata

__all__ = [
    "GENESIS_HASH",
    "AlertDraft",
    "AlertState",
    "ChangeRecord",
    "ClaimedTarget",
    "Delivery",
    "FleetHealth",
    "OutboxStore",
    "ReadStore",
    "RecordStore",
    "RunOutcome",
    "RunStart",
    "ScheduleStore",
    "Store",
    "TargetRow",
    "TargetStatus",
    "VerifyResult",
    "change_hash",
    "display_url",
    "driver_url",
    "metadata",
]
