"""Suppressed addresses: forgotten subscribers stay out of later imports and adds.

Only a keyed hash of each address is kept. Subscribers forgotten before this
revision left nothing to hash, so the table starts empty.

Revision ID: 0003
Revises: 0002
Create Date: 2026-01-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "suppressed_addresses",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("suppressed_addresses")
