"""Core tables: subscribers, subscriptions, editions, announced entries, deliveries, send rate.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "subscribers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("status_changed_at", TIME, nullable=False),
        sa.Column("confirmed_at", TIME, nullable=True),
        sa.Column("unsubscribed_at", TIME, nullable=True),
        sa.Column("bounced_at", TIME, nullable=True),
        sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
        sa.UniqueConstraint("email_key", name="uq_subscribers_email_key"),
        sa.CheckConstraint(
            "status IN ('pending', 'active', 'unsubscribed', 'bounced')",
            name="ck_subscribers_status",
        ),
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "subscriber_id",
            sa.Integer,
            sa.ForeignKey(
                "subscribers.id", ondelete="CASCADE", name="fk_subscriptions_subscriber"
            ),
            nullable=False,
        ),
        sa.Column("newsletter", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("categories", sa.Text, nullable=False, server_default="[]"),
        sa.Column("created_at", TIME, nullable=False),
        sa.UniqueConstraint(
            "subscriber_id", "newsletter", name="uq_subscriptions_subscriber_newsletter"
        ),
        sa.CheckConstraint("mode IN ('digest', 'instant')", name="ck_subscriptions_mode"),
    )
    op.create_table(
        "editions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("newsletter", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("period_key", sa.String(200), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("html", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("entry_ids", sa.Text, nullable=False, server_default="[]"),
        sa.Column("web_path", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.UniqueConstraint("newsletter", "period_key", name="uq_editions_newsletter_period"),
        sa.CheckConstraint("kind IN ('digest', 'instant')", name="ck_editions_kind"),
    )
    op.create_table(
        "announced_entries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("newsletter", sa.String(64), nullable=False),
        sa.Column("entry_id", sa.Text, nullable=False),
        sa.Column("announced_at", TIME, nullable=False),
        sa.Column(
            "edition_id",
            sa.Integer,
            sa.ForeignKey(
                "editions.id", ondelete="SET NULL", name="fk_announced_entries_edition"
            ),
            nullable=True,
        ),
        sa.UniqueConstraint(
            "newsletter", "entry_id", name="uq_announced_entries_newsletter_entry"
        ),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "edition_id",
            sa.Integer,
            sa.ForeignKey("editions.id", ondelete="CASCADE", name="fk_deliveries_edition"),
            nullable=False,
        ),
        sa.Column(
            "subscriber_id",
            sa.Integer,
            sa.ForeignKey(
                "subscribers.id", ondelete="CASCADE", name="fk_deliveries_subscriber"
            ),
            nullable=False,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TIME, nullable=True),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("claimed_at", TIME, nullable=True),
        sa.Column("sent_at", TIME, nullable=True),
        sa.Column("last_reply", sa.Text, nullable=True),
        sa.Column("message_id", sa.String(998), nullable=True),
        sa.UniqueConstraint(
            "edition_id", "subscriber_id", name="uq_deliveries_edition_subscriber"
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'sending', 'sent', 'retrying', 'failed', 'skipped')",
            name="ck_deliveries_status",
        ),
    )
    op.create_table(
        "send_rate",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("next_slot_at", sa.Float, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    for table in (
        "send_rate", "deliveries", "announced_entries", "editions", "subscriptions", "subscribers"
    ):
        op.drop_table(table)
