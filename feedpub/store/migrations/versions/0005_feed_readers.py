"""Feed readers counted per day: hashed readers, and the counts aggregators state.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_readers",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("feed", sa.String(500), primary_key=True),
        sa.Column("reader", sa.String(32), primary_key=True),
    )
    op.create_table(
        "feed_service_counts",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("feed", sa.String(500), primary_key=True),
        sa.Column("service", sa.String(64), primary_key=True),
        sa.Column("subscribers", sa.Integer, nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feed_service_counts")
    op.drop_table("feed_readers")
