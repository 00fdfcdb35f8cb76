"""Consent log (subscriber_events), per-subscriber token keys, indexes for the queue.

Existing subscribers get a token key and a consent log rebuilt from the
timestamps the first revision kept, so nothing recorded before is lost.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

REBUILT = "rebuilt by migration 0002 from the subscriber's timestamps"


def upgrade() -> None:
    op.create_table(
        "subscriber_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "subscriber_id",
            sa.Integer,
            sa.ForeignKey(
                "subscribers.id", ondelete="CASCADE", name="fk_subscriber_events_subscriber"
            ),
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_subscriber_events_subscriber_id", "subscriber_events", ["subscriber_id"])

    op.add_column("subscribers", sa.Column("token_key", sa.String(32), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE subscribers SET token_key = replace(gen_random_uuid()::text, '-', '')")
    else:
        op.execute("UPDATE subscribers SET token_key = lower(hex(randomblob(16)))")

    for at_column, event, source, condition in (
        (
            "created_at",
            "CASE WHEN confirmed_at IS NOT NULL AND confirmed_at <= created_at "
            "THEN 'active' ELSE 'pending' END",
            "source",
            "1 = 1",
        ),
        ("confirmed_at", "'active'", "'unknown'", "confirmed_at > created_at"),
        ("unsubscribed_at", "'unsubscribed'", "'unknown'", "unsubscribed_at IS NOT NULL"),
        ("bounced_at", "'bounced'", "'unknown'", "bounced_at IS NOT NULL"),
    ):
        op.get_bind().execute(
            sa.text(
                "INSERT INTO subscriber_events (subscriber_id, at, event, source, detail) "
                f"SELECT id, {at_column}, {event}, {source}, :detail FROM subscribers "
                f"WHERE {condition}"
            ),
            {"detail": REBUILT},
        )

    op.create_index("ix_subscribers_status", "subscribers", ["status"])
    op.create_index("ix_subscriptions_newsletter", "subscriptions", ["newsletter"])
    op.create_index(
        "ix_deliveries_status_next_attempt", "deliveries", ["status", "next_attempt_at"]
    )
    op.create_index("ix_deliveries_subscriber_id", "deliveries", ["subscriber_id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_subscriber_id", "deliveries")
    op.drop_index("ix_deliveries_status_next_attempt", "deliveries")
    op.drop_index("ix_subscriptions_newsletter", "subscriptions")
    op.drop_index("ix_subscribers_status", "subscribers")
    op.drop_column("subscribers", "token_key")  # SQLite 3.35+ drops columns in place
    op.drop_table("subscriber_events")
