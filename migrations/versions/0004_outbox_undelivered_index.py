"""outbox: a partial index on the rows not delivered yet, instead of one on every row.

The deliverer of every process looks for undelivered rows by sink on each tick; the outbox
keeps every delivery ever made, so an index over all rows grows with the history while
the lookup only ever needs the backlog.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNDELIVERED = sa.text("delivered_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_outbox_undelivered",
        "outbox",
        ["sink", "id"],
        sqlite_where=_UNDELIVERED,
        postgresql_where=_UNDELIVERED,
    )
    op.drop_index("ix_outbox_pending", table_name="outbox")


def downgrade() -> None:
    op.create_index("ix_outbox_pending", "outbox", ["sink", "delivered_at", "next_attempt_at"])
    op.drop_index("ix_outbox_undelivered", table_name="outbox")
