"""targets.digest: the digest of the PBX's answers that each target's record last matched.

SHA-256 over the answers exactly as received, stored by a complete run when the record then
holds exactly what they said. A run that changes nothing, the common case, compares the
digest of its answers with this column instead of building, hashing and diffing every item.
NULL until the next complete run of the target sets it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("targets") as batch:
        batch.add_column(sa.Column("digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("targets") as batch:
        batch.drop_column("digest")
