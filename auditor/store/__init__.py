"""The audit record: SQLAlchemy tables, migrations and the :class:`Store` repository."""

from auditor.store.engine import display_url, driver_url
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
    VerifyResult,
    change_hash,
)
from auditor.store.repository import Store
from auditor.store.schema import GENESIS_HASH, metadata

__all__ = [
    "GENESIS_HASH",
    "AlertDraft",
    "AlertState",
    "ChangeRecord",
    "ClaimedTarget",
    "Delivery",
    "FleetHealth",
    "RunOutcome",
    "RunStart",
    "Store",
    "TargetRow",
    "VerifyResult",
    "change_hash",
    "display_url",
    "driver_url",
    "metadata",
]
