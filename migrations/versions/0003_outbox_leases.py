"""outbox leases and enqueue time; indexes for alert re-sends.

``lease_owner``/``lease_until`` let several deliverers (replicas) share the outbox without
sending one row twice; ``created_at`` tells when a row was enqueued, which the periodic
re-send of firing alerts to Alertmanager needs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_outbox_event_id", "outbox", ["event_id"])
    op.create_index("ix_alert_events_fingerprint", "alert_events", ["fingerprint"])


def downgrade() -> None:
    op.drop_index("ix_alert_events_fingerprint", table_name="alert_events")
    op.drop_index("ix_outbox_event_id", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("created_at")
        batch.drop_column("lease_until")
        batch.drop_column("lease_owner")
