"""Bounces and complaints that come back after sending, and the reports already handled;
an index to find a delivery by the Message-ID a bounce quotes.

Both tables start empty: nothing was heard back before this revision.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "subscriber_id",
            sa.Integer,
            sa.ForeignKey(
                "subscribers.id", ondelete="CASCADE", name="fk_delivery_events_subscriber"
            ),
            nullable=False,
        ),
        sa.Column(
            "delivery_id",
            sa.Integer,
            sa.ForeignKey(
                "deliveries.id", ondelete="SET NULL", name="fk_delivery_events_delivery"
            ),
            nullable=True,
        ),
        sa.Column(
            "edition_id",
            sa.Integer,
            sa.ForeignKey("editions.id", ondelete="SET NULL", name="fk_delivery_events_edition"),
            nullable=True,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status_code", sa.String(16), nullable=False, server_default=""),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("report_key", sa.String(255), nullable=False),
        sa.CheckConstraint(
            "kind IN ('hard', 'soft', 'complaint')", name="ck_delivery_events_kind"
        ),
    )
    op.create_index("ix_delivery_events_subscriber_id", "delivery_events", ["subscriber_id"])
    op.create_index("ix_delivery_events_edition_id", "delivery_events", ["edition_id"])
    op.create_index("ix_delivery_events_at", "delivery_events", ["at"])
    op.create_table(
        "inbound_reports",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
    )
    op.create_index("ix_deliveries_message_id", "deliveries", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_message_id", table_name="deliveries")
    op.drop_table("inbound_reports")
    op.drop_index("ix_delivery_events_at", table_name="delivery_events")
    op.drop_index("ix_delivery_events_edition_id", table_name="delivery_events")
    op.drop_index("ix_delivery_events_subscriber_id", table_name="delivery_events")
    op.drop_table("delivery_events")
