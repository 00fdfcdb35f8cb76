"""The tables, as SQLAlchemy Core metadata: the contract that every store module builds on.

The migrations under ``migrations/versions`` create exactly these tables; a test
compares the two so that they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class Status(StrEnum):
    """Where a subscriber is: pending -> active -> unsubscribed | bounced."""

    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"


class Source(StrEnum):
    """Who made a change: kept with each status change as the consent record."""

    CLI = "cli"
    IMPORT = "import"
    WEB = "web"
    SENDER = "sender"


class Mode(StrEnum):
    DIGEST = "digest"
    INSTANT = "instant"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    SKIPPED = "skipped"


FORGOTTEN_EVENT = "forgotten"
"""The ``subscriber_events.event`` of an erasure; every other event is the status entered."""


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every database.

    SQLite has no time zones: values are stored as naive UTC text (which sorts
    and compares correctly) and get their UTC zone back when read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} given to the store; pass an aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        process = super().bind_processor(dialect)
        if process is None:
            return None
        # Bulk writes pass the same ``now`` thousands of times: convert it once.
        last: list[tuple[Any, Any]] = [(None, None)]

        def process_once(value: Any) -> Any:
            seen, converted = last[0]
            if value is not None and value is seen:
                return converted
            converted = process(value)
            last[0] = (value, converted)
            return converted

        return process_once

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _check_in(column: str, values: type[StrEnum], name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=name)


metadata = sa.MetaData()

subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("email_key", sa.String(320), nullable=False),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("status_changed_at", UTCDateTime, nullable=False),
    sa.Column("confirmed_at", UTCDateTime, nullable=True),
    sa.Column("unsubscribed_at", UTCDateTime, nullable=True),
    sa.Column("bounced_at", UTCDateTime, nullable=True),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    # Added by migration 0002; the code always sets it. Changing it voids every
    # unsubscribe and preferences link made for this subscriber.
    sa.Column("token_key", sa.String(32), nullable=True),
    sa.UniqueConstraint("email_key", name="uq_subscribers_email_key"),
    _check_in("status", Status, "ck_subscribers_status"),
    sa.Index("ix_subscribers_status", "status"),
)

subscriber_events = sa.Table(
    "subscriber_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "subscriber_id",
        sa.Integer,
        sa.ForeignKey("subscribers.id", ondelete="CASCADE", name="fk_subscriber_events_subscriber"),
        nullable=False,
    ),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_subscriber_events_subscriber_id", "subscriber_id"),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "subscriber_id",
        sa.Integer,
        sa.ForeignKey("subscribers.id", ondelete="CASCADE", name="fk_subscriptions_subscriber"),
        nullable=False,
    ),
    sa.Column("newsletter", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    # A JSON list of category names; an empty list means every category.
    sa.Column("categories", sa.Text, nullable=False, server_default="[]"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint(
        "subscriber_id", "newsletter", name="uq_subscriptions_subscriber_newsletter"
    ),
    _check_in("mode", Mode, "ck_subscriptions_mode"),
    sa.Index("ix_subscriptions_newsletter", "newsletter"),
)

editions = sa.Table(
    "editions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("newsletter", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("period_key", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("html", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("entry_ids", sa.Text, nullable=False, server_default="[]"),
    sa.Column("web_path", sa.Text, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.UniqueConstraint("newsletter", "period_key", name="uq_editions_newsletter_period"),
    _check_in("kind", Mode, "ck_editions_kind"),
)

announced_entries = sa.Table(
    "announced_entries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("newsletter", sa.String(64), nullable=False),
    sa.Column("entry_id", sa.Text, nullable=False),
    sa.Column("announced_at", UTCDateTime, nullable=False),
    sa.Column(
        "edition_id",
        sa.Integer,
        sa.ForeignKey("editions.id", ondelete="SET NULL", name="fk_announced_entries_edition"),
        nullable=True,
    ),
    sa.UniqueConstraint("newsletter", "entry_id", name="uq_announced_entries_newsletter_entry"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
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
        sa.ForeignKey("subscribers.id", ondelete="CASCADE", name="fk_deliveries_subscriber"),
        nullable=False,
    ),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("claimed_by", sa.String(200), nullable=True),
    sa.Column("claimed_at", UTCDateTime, nullable=True),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    sa.Column("last_reply", sa.Text, nullable=True),
    sa.Column("message_id", sa.String(998), nullable=True),
    sa.UniqueConstraint("edition_id", "subscriber_id", name="uq_deliveries_edition_subscriber"),
    _check_in("status", DeliveryStatus, "ck_deliveries_status"),
    sa.Index("ix_deliveries_status_next_attempt", "status", "next_attempt_at"),
    sa.Index("ix_deliveries_subscriber_id", "subscriber_id"),
)

send_rate = sa.Table(
    "send_rate",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    # Seconds since the epoch: the earliest moment the next message may leave.
    sa.Column("next_slot_at", sa.Float, nullable=False, server_default="0"),
)

suppressed_addresses = sa.Table(
    "suppressed_addresses",
    metadata,
    # A keyed SHA-256 of the address key (see subscribers.suppression_hash): the
    # address that asked to be forgotten is recognised without being kept.
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("reason", sa.String(16), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
)
